"""Images read region by region instead of whole: the out-of-core path of ``biounet predict``.

zarr arrays and HDF5 datasets are read where they lie; a TIFF through tifffile's zarr view of its pages,
tiles or strips (so a 20000 x 20000 slide or a 50 GB stack is never loaded); PNG, JPEG and NIfTI, which
cannot be read in parts, are read whole. :class:`ItemView` then shows one item of a stack (a plane for a
2D model, a volume for a 3D one) as the ``(C, *spatial)`` array the predictor expects, and reads only the
region it is indexed with.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError
from biounet.io.axes import StackPlan
from biounet.io.containers import open_container
from biounet.io.layout import StoredAxes, reason
from biounet.io.readers import image_format, match_channels, probe_stored, read_stored
from biounet.optional import optional_import


@contextmanager
def open_stored(path: str | Path, spatial_dims: int, axes: str | None = None) -> Iterator[tuple[Any, StoredAxes]]:
    """The stored array, as an array-like that reads on indexing where the format allows, and its axes.

    Args:
        path: the file, or an HDF5/zarr spec (``file.h5:dataset``).
        spatial_dims: the model's (see :func:`~biounet.io.readers.probe_stored`).
        axes: the axes to use instead of the file's (``--axes``).

    Raises:
        BiounetError: naming the file, if it cannot be opened or ``axes`` does not fit it.
    """
    stored = probe_stored(path, spatial_dims, axes)
    fmt = image_format(path)
    if fmt in ("hdf5", "zarr"):
        with open_container(path) as array:
            yield _checked(array, stored, path), stored
    elif fmt == "tiff":
        yield _checked(_tiff_zarr(Path(path)), stored, path), stored
    else:
        yield read_stored(path, spatial_dims, axes)[0], stored


def _tiff_zarr(path: Path) -> Any:
    """The first series of a TIFF as a read-only zarr array over its pages, tiles or strips."""
    import tifffile

    zarr = optional_import("zarr", "reading large TIFF files region by region", path)
    try:
        return zarr.open(tifffile.imread(path, aszarr=True, series=0), mode="r")
    except Exception as exc:
        raise BiounetError(f"cannot read TIFF region by region ({reason(exc)})", path) from exc


def _checked(array: Any, stored: StoredAxes, path: str | Path) -> Any:
    if tuple(int(s) for s in array.shape) != stored.shape:
        raise BiounetError(f"array of shape {tuple(array.shape)} does not match its header's {stored.shape}", path)
    if np.dtype(array.dtype).kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {array.dtype}", path)
    return array


class ItemView:
    """One item of a stored array as ``(C, *spatial)``, read region by region.

    Args:
        array: the stored array (anything with ``shape``, ``dtype`` and basic slicing).
        plan: how the array splits into items (:func:`~biounet.io.axes.plan_stack`).
        index: the item's index into ``plan.batch_shape``.
        channels: the model's input channels; reads are adapted to them as
            :func:`~biounet.io.readers.match_channels` does (grey to RGB, RGB to grey, RGBA to RGB).
        path: the file, for messages.
    """

    def __init__(self, array: Any, plan: StackPlan, index: tuple[int, ...], channels: int | None = None,
                 path: str | Path | None = None) -> None:
        self.array, self.plan, self.index, self.path = array, plan, tuple(index), path
        self.source_channels = plan.channels
        self.channels = channels or plan.channels
        self.shape: tuple[int, ...] = (self.channels, *plan.spatial_shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32) if self.channels != self.source_channels else np.dtype(array.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        """``view[channels, *spatial]`` with basic slices (steps included); only that region is read."""
        key = key if isinstance(key, tuple) else (key,)
        channel, spatial = (key[0], key[1:]) if key else (slice(None), ())
        spatial = tuple(spatial) + (slice(None),) * (len(self.plan.spatial_axes) - len(spatial))
        plan = self.plan
        stored_key: list[int | slice] = []
        for letter in plan.axes:
            if letter == "-":
                stored_key.append(0)
            elif letter == "C":
                stored_key.append(slice(None))
            elif letter in plan.batch_axes:
                stored_key.append(self.index[plan.batch_axes.index(letter)])
            else:
                stored_key.append(spatial[plan.spatial_axes.index(letter)])
        block = np.asarray(self.array[tuple(stored_key)])
        kept = [a for a, k in zip(plan.axes, stored_key, strict=True) if not isinstance(k, int)]
        block = np.moveaxis(block, kept.index("C"), 0) if "C" in kept else block[None]
        block = match_channels(block, self.channels, self.path) if self.channels != self.source_channels else block
        result: np.ndarray = block[channel]
        return result
