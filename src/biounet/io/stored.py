"""A file's array as stored, through its format's reader: probed, opened for reading region by region, or read.

Nothing is decided for a model here: :func:`biounet.io.axes.plan_stack` (or, for one image,
:func:`biounet.io.axes.image_plan`) does that. Library errors become one line naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from biounet.errors import BiounetError, reason
from biounet.io.axes import StoredAxes
from biounet.io.formats import find_format

_T = TypeVar("_T")


def probe_stored(path: str | Path, spatial_dims: int | None, axes: str | None = None) -> StoredAxes:
    """A file's array as stored and the name of each of its axes, from the header where the format allows.

    Axes the file does not name are ``?`` (pages of a plain multi-page TIFF); HDF5/zarr arrays without axes
    metadata follow the ``(C, *spatial)`` convention of ``spatial_dims``.

    Args:
        path: the file, or an HDF5/zarr spec (``file.h5:dataset``, ``store.zarr:array``).
        spatial_dims: the model's (only HDF5/zarr arrays without axes metadata need it); ``None`` names those
            from their number of dimensions alone: ``YX``, ``ZYX``, ``CZYX``.
        axes: the axes to use instead of the file's (``--axes``), one letter of ``TZCYX`` per stored axis.

    Raises:
        BiounetError: naming the file, if it is missing, unreadable, or ``axes`` does not fit it.
    """
    path, _, fmt = find_format(path)
    return _calling(path, lambda: fmt.probe(path, spatial_dims, axes))


def read_stored(path: str | Path, spatial_dims: int | None, axes: str | None = None
                ) -> tuple[np.ndarray, StoredAxes]:
    """The array as stored (bool becomes uint8) and its :class:`StoredAxes` (see :func:`probe_stored`).

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: as for :func:`probe_stored`.
        axes: as for :func:`probe_stored`.

    Raises:
        BiounetError: naming the file, as :func:`probe_stored`, and for non-finite floating-point values.
    """
    stored = probe_stored(path, spatial_dims, axes)
    return read_probed(path, stored), stored


def read_probed(path: str | Path, stored: StoredAxes) -> np.ndarray:
    """The array of a file already probed, checked against its header (bool becomes uint8).

    Args:
        path: the file, or an HDF5/zarr spec.
        stored: what :func:`probe_stored` said of it.

    Raises:
        BiounetError: naming the file, if it cannot be read, does not match ``stored`` or holds NaN or
            infinite values.
    """
    path, _, fmt = find_format(path)
    array = _checked(_calling(path, lambda: np.asarray(fmt.read(path))), stored, path)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BiounetError("image contains NaN or infinite values", path)
    return array.astype(np.uint8) if array.dtype == bool else array


@contextmanager
def open_stored(path: str | Path, spatial_dims: int | None, axes: str | None = None
                ) -> Iterator[tuple[Any, StoredAxes]]:
    """The stored array, as an array-like that reads on indexing where the format allows, and its axes.

    zarr arrays and HDF5 datasets are read where they lie, a TIFF through tifffile's zarr view of its pages,
    tiles or strips; PNG, JPEG and NIfTI, which cannot be read in parts, are read whole.

    Args:
        path: the file, or an HDF5/zarr spec (``file.h5:dataset``).
        spatial_dims: the model's (see :func:`probe_stored`).
        axes: the axes to use instead of the file's (``--axes``).

    Raises:
        BiounetError: naming the file, if it cannot be opened or ``axes`` does not fit it.
    """
    stored = probe_stored(path, spatial_dims, axes)
    path, _, fmt = find_format(path)
    with ExitStack() as files:
        array = _calling(path, lambda: files.enter_context(fmt.open(path)))
        yield _checked(array, stored, path), stored


def _checked(array: Any, stored: StoredAxes, path: Path) -> Any:
    if tuple(int(s) for s in array.shape) != stored.shape:
        raise BiounetError(f"array of shape {tuple(array.shape)} does not match its header's {stored.shape}", path)
    if np.dtype(array.dtype).kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {array.dtype}", path)
    return array


def _calling(path: Path, function: Callable[[], _T]) -> _T:
    """Runs a format's reader; library errors become one line naming the file."""
    try:
        return function()
    except BiounetError:
        raise
    except Exception as exc:
        raise BiounetError(f"cannot read image ({reason(exc)})", path) from exc
