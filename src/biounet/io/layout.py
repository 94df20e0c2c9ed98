"""Where a stored array's axes go in biounet's ``(C, *spatial)`` layout, decided from the header alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError


@dataclass(frozen=True)
class Layout:
    """A file's array as stored, and how it maps to ``(C, *spatial)``.

    Attributes:
        shape: the array's shape as stored.
        dtype: the dtype that reading gives.
        spatial: the stored axes that are spatial, in the order they take after the channel axis; every
            other axis is a channel axis (at most one of them longer than 1).
        spacing: pixel/voxel size along each spatial axis, in the same order; 1.0 where the file does not say.
        header: the format's header, kept to write results back alike (NIfTI); ``None`` for other formats.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    spatial: tuple[int, ...]
    spacing: tuple[float, ...]
    header: Any = field(default=None, compare=False, repr=False)

    @property
    def channel_axes(self) -> tuple[int, ...]:
        return tuple(i for i in range(len(self.shape)) if i not in self.spatial)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """``(C, *spatial)``."""
        channels = int(np.prod([self.shape[i] for i in self.channel_axes], dtype=np.int64))
        return (channels, *(self.shape[i] for i in self.spatial))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The stored ``array`` rearranged to ``(C, *spatial)`` (a view where NumPy can)."""
        moved = np.transpose(array, (*self.channel_axes, *self.spatial))
        return moved.reshape(self.output_shape)


def checked_layout(path: str | Path, shape: tuple[int, ...], dtype: np.dtype, spatial: tuple[int, ...],
                   spacing: tuple[float, ...], header: Any = None) -> Layout:
    """A :class:`Layout` after the checks every format shares: pixel type, emptiness, channel axes.

    Args:
        path: the file, for messages.
        shape: stored shape.
        dtype: stored (or scaled) dtype.
        spatial: stored spatial axes, in output order.
        spacing: one value per spatial axis.
        header: see :class:`Layout`.

    Raises:
        BiounetError: naming the file, for a non-numeric dtype, an empty array or two channel axes.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {dtype}", path)
    if min(shape[i] for i in spatial) < 1:
        raise BiounetError(f"image of shape {shape} is empty", path)
    if len([i for i in range(len(shape)) if i not in spatial and shape[i] > 1]) > 1:
        raise BiounetError(f"array of shape {shape} has more than one channel axis", path)
    if len(spacing) != len(spatial):
        raise BiounetError(f"{len(spacing)} spacing value(s) for {len(spatial)} spatial axes", path)
    return Layout(tuple(int(s) for s in shape), dtype, tuple(spatial), tuple(float(s) for s in spacing), header)


def check_spatial_dims(spatial_dims: int, path: str | Path) -> None:
    """Raises a :class:`BiounetError` unless ``spatial_dims`` is 2 or 3."""
    if spatial_dims not in (2, 3):
        raise BiounetError(f"{spatial_dims}D images are not supported (2 or 3)", path)


def reason(exc: BaseException) -> str:
    """The first line of an exception from a library, with its type, for a one-line message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass(frozen=True)
class StoredAxes:
    """A file's array as stored, with a name for each axis (see :mod:`biounet.io.axes`).

    Attributes:
        shape: the array's shape as stored.
        dtype: the dtype that reading gives.
        axes: one letter per stored axis, from ``TZCYX``, or ``?`` where the file does not say.
        spacing: pixel/voxel size per stored axis; 1.0 where the file does not say or the axis is not spatial.
        header: the format's header, kept to write results back alike (NIfTI); ``None`` for other formats.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    spacing: tuple[float, ...]
    header: Any = field(default=None, compare=False, repr=False)
