"""Reading a file as one ``(C, *spatial)`` image, with one-line errors that name the file.

Whether a file is read as a 2D image or a 3D volume is the caller's choice (the model's ``spatial_dims``); a
file that does not fit it is an error, never reinterpreted. Every format is read as stored
(:mod:`biounet.io.stored`) and its axes resolved by :func:`biounet.io.axes.image_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biounet.io.axes import StackPlan, StoredAxes, image_plan
from biounet.io.formats import find_format
from biounet.io.stored import probe_stored, read_probed


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, read from its header: shape ``(C, *spatial)``, dtype and pixel/voxel size."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    spacing: tuple[float, ...] = ()

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class ImageMeta:
    """What a file says about its pixels besides their values, to measure in its units and write back alike.

    Attributes:
        path: the file (or ``file.h5:dataset`` spec) it was read from.
        format: ``"png"``, ``"jpeg"``, ``"tiff"``, ``"nifti"``, ``"hdf5"`` or ``"zarr"``.
        spacing: pixel/voxel size per spatial axis, in the order of the array's spatial axes: NIfTI zooms,
            ImageJ calibration for TIFF, an ``element_size_um``/``spacing``/``resolution`` attribute for
            HDF5/zarr; 1.0 where the file does not say.
        header: the format's header, opaque; for NIfTI nibabel's header (affine, sform/qform, units), which
            :func:`biounet.io.writers.write_prediction` copies into its outputs. ``None`` otherwise.
    """

    path: Path
    format: str
    spacing: tuple[float, ...]
    header: Any = field(default=None, compare=False, repr=False)

    @property
    def spatial_dims(self) -> int:
        return len(self.spacing)


def image_meta(path: str | Path, stored: StoredAxes, plan: StackPlan) -> ImageMeta:
    """The :class:`ImageMeta` of a file read by ``plan``: the spacing of its spatial axes, in stored order.

    Args:
        path: the file, or an HDF5/zarr spec.
        stored: the file's :class:`StoredAxes`.
        plan: how its axes were resolved (:func:`~biounet.io.axes.plan_stack` or :func:`image_plan`).
    """
    path, fmt, _ = find_format(path)
    spacing = tuple(size for size, a in zip(stored.spacing, plan.axes, strict=True) if a in "ZYX")
    return ImageMeta(path, fmt, spacing, stored.header)


def probe_image(path: str | Path, spatial_dims: int = 2) -> ImageInfo:
    """Reads only the header of an image file (where the format allows) and checks that it is usable.

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: 2 for images, 3 for volumes.

    Raises:
        BiounetError: if the file is missing, not an image, corrupt, or has an unusable shape or dtype.
    """
    stored = probe_stored(path, spatial_dims)
    plan = image_plan(stored, spatial_dims, path)
    meta = image_meta(path, stored, plan)
    return ImageInfo(meta.path, (plan.channels, *plan.spatial_shape), stored.dtype, meta.spacing)


def read_image(path: str | Path, spatial_dims: int = 2) -> np.ndarray:
    """Reads an image as a ``(C, *spatial)`` array in its own dtype (bool becomes uint8).

    2D: grayscale gives one channel, RGB(A) three (four); TIFF channel axes are found from the file's axes
    metadata. 3D: TIFF stacks by their axes (``ZYX``, ``ZCYX``, ``CZYX``, ImageJ hyperstacks; a plain
    multi-page TIFF is a ``ZYX`` stack), NIfTI in nibabel's axis order with a 4th axis as channels,
    HDF5/zarr arrays by their axes metadata, else as ``(Z, Y, X)`` or ``(C, Z, Y, X)``. Floating-point images
    must be finite. See :func:`biounet.io.axes.image_plan` for the rules.

    Args:
        path: the file, or an HDF5/zarr spec (``file.h5:dataset``, ``store.zarr:array``).
        spatial_dims: 2 for images, 3 for volumes (the model's ``spatial_dims``).

    Raises:
        BiounetError: naming the file, for anything that makes it unusable, including a 2D file for a 3D
            model and a volume for a 2D model.
    """
    return read_image_meta(path, spatial_dims)[0]


def read_image_meta(path: str | Path, spatial_dims: int = 2) -> tuple[np.ndarray, ImageMeta]:
    """:func:`read_image`, plus the file's spacing and header.

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: 2 for images, 3 for volumes.

    Returns:
        The ``(C, *spatial)`` array and its :class:`ImageMeta`.

    Raises:
        BiounetError: naming the file, as :func:`read_image`.
    """
    stored = probe_stored(path, spatial_dims)
    plan = image_plan(stored, spatial_dims, path)  # checked before the pixels are read
    (_, image), = plan.items(read_probed(path, stored))
    return image, image_meta(path, stored, plan)


def guess_spatial_dims(path: str | Path) -> int:
    """2 or 3, from the file, for a one-channel label image or a prediction of it (as ``evaluate`` needs).

    3 if the file has a ``Z`` axis, else 2: NIfTI with three or more axes; TIFF with ImageJ ``slices`` or
    axes metadata (a plain multi-page TIFF reads as 2D channels, so stacks need ``Z`` in their metadata or an
    explicit choice); HDF5/zarr by their axes metadata, else 2 for a 2-dimensional array and 3 for 3 or 4
    dimensions; PNG/JPEG 2.

    Args:
        path: the file, or an HDF5/zarr spec.

    Raises:
        BiounetError: naming the file, if it cannot be read.
    """
    return 3 if "Z" in probe_stored(path, None).axes else 2
