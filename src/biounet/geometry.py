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
