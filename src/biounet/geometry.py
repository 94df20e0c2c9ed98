"""Mirrored reads: array regions that may extend beyond an image, filled with the image mirrored at its border.

Shared by training (patches around output windows) and prediction (overlap tiles), so that a network sees
the same context at both; pure NumPy, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices into an axis of length ``size`` for positions ``start..stop-1``, mirrored at both ends.

    The mirror does not repeat the edge pixel (NumPy's ``reflect`` mode) and folds as often as needed, so
    context wider than the image is still defined.
    """
    positions = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    folded = np.mod(positions, period)
    return np.where(folded >= size, period - folded, folded)


def read_mirrored(image: object, channels_first_region: Sequence[tuple[int, int]]) -> np.ndarray:
    """Reads ``image[:, region]`` where the region may extend beyond the image, mirroring outside it.

    Args:
        image: any array-like of shape ``(C, *spatial)`` that supports basic slicing (NumPy, zarr, h5py,
            memory maps). Only the bounding box of the needed pixels is read.
        channels_first_region: ``(start, stop)`` per spatial axis, in image coordinates.
    """
    shape = image.shape[1:]  # type: ignore[attr-defined]
    indices = [reflect_indices(lo, hi, n) for (lo, hi), n in zip(channels_first_region, shape, strict=True)]
    boxes = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in indices)
    block = np.asarray(image[(slice(None),) + boxes])  # type: ignore[index]
    for axis, (ix, box) in enumerate(zip(indices, boxes, strict=True)):
        local = ix - box.start
        if len(local) != block.shape[axis + 1] or np.any(local != np.arange(len(local))):
            block = np.take(block, local, axis=axis + 1)
    return block


class BoxCache:
    """An array-like that reads one box of an image once and serves reads inside it from memory.

    Prediction of a block reads many overlapping tile regions; from a compressed store each read would
    decode every chunk it touches again (a 3D tile of 132^3 touches up to 8 chunks of 128^3). The box is
    the bounding box of the mirrored indices of all the regions that will be read (:meth:`for_regions`).

    Args:
        image: ``(C, *spatial)`` array-like.
        box: ``(start, stop)`` per spatial axis, inside the image.
    """

    def __init__(self, image: object, box: Sequence[tuple[int, int]]) -> None:
        self.image = image
        self.box = [(int(a), int(b)) for a, b in box]
        self.shape: tuple[int, ...] = tuple(int(s) for s in image.shape)  # type: ignore[attr-defined]
        self.ndim = len(self.shape)
        self.dtype = image.dtype  # type: ignore[attr-defined]
        self.data = np.asarray(image[(slice(None),) + tuple(slice(a, b) for a, b in self.box)])  # type: ignore[index]

    @classmethod
    def for_regions(cls, image: object, regions: Sequence[Sequence[tuple[int, int]]]) -> BoxCache:
        """A cache holding every pixel that :func:`read_mirrored` reads for ``regions``."""
        shape = image.shape[1:]  # type: ignore[attr-defined]
        box = []
        for axis, n in enumerate(shape):
            lows, highs = zip(*((int(ix.min()), int(ix.max()) + 1) for ix in
                                (reflect_indices(r[axis][0], r[axis][1], n) for r in regions)), strict=True)
            box.append((min(lows), max(highs)))
        return cls(image, box)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        """``cache[channels, *spatial]`` with unit-step slices inside the box (others go to the image)."""
        channel, spatial = key[0], key[1:]
        local = []
        for s, (lo, hi) in zip(spatial, self.box, strict=True):
            if not isinstance(s, slice) or s.step not in (None, 1) or s.start is None or s.start < lo or s.stop > hi:
                return np.asarray(self.image[key])  # type: ignore[index]
            local.append(slice(s.start - lo, s.stop - lo))
        result: np.ndarray = self.data[(channel,) + tuple(local)]
        return result
