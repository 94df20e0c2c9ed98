"""The image formats and which one a path names: one reader per format, behind one small interface.

Formats: PNG and JPEG (2D), TIFF images and stacks, NIfTI (``.nii``, ``.nii.gz``), HDF5 datasets
(``file.h5:dataset``) and zarr arrays (``store.zarr`` or ``store.zarr:array``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from biounet.errors import BiounetError
from biounet.io.axes import StoredAxes
from biounet.io.containers import HDF5_SUFFIXES, ZARR_SUFFIX, ContainerFormat, split_spec
from biounet.io.nifti import NIFTI_SUFFIXES, NiftiFormat
from biounet.io.pillow import PillowFormat
from biounet.io.tiff import TiffFormat

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""2D formats (TIFF also holds stacks)."""
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *HDF5_SUFFIXES, ZARR_SUFFIX)
"""Formats that usually hold volumes; NIfTI needs the ``nifti`` extra, HDF5 ``hdf5``, zarr ``zarr``."""
SUPPORTED_SUFFIXES = (*IMAGE_SUFFIXES, *VOLUME_SUFFIXES)


class ImageFormat(Protocol):
    """How one file format is read: its header, its array in place, its array whole."""

    def probe(self, path: Path, spatial_dims: int | None, axes: str | None) -> StoredAxes:
        """The array's :class:`StoredAxes` from the header (``axes`` replaces the file's own names)."""

    def open(self, path: Path) -> AbstractContextManager[Any]:
        """An array-like that reads on indexing where the format allows; else the array, read whole."""

    def read(self, path: Path) -> np.ndarray:
        """The array as stored, read whole."""


FORMATS: dict[str, ImageFormat] = {
    "png": PillowFormat(), "jpeg": PillowFormat(), "tiff": TiffFormat(), "nifti": NiftiFormat(),
    "hdf5": ContainerFormat(), "zarr": ContainerFormat(),
}
"""Each format's reader, by the name :func:`image_format` gives."""


def image_format(path: str | Path) -> str | None:
    """The format a path names, from its suffix or its ``file.h5:dataset`` spec; ``None`` if unsupported.

    Args:
        path: a file, or an HDF5/zarr spec.

    Returns:
        ``"png"``, ``"jpeg"``, ``"tiff"``, ``"nifti"``, ``"hdf5"``, ``"zarr"`` or ``None``.
    """
    spec = split_spec(path)
    if spec is not None:
        return "zarr" if spec[0].suffix.lower() == ZARR_SUFFIX else "hdf5"
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    suffix = Path(name).suffix
    return {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(suffix)


def is_image_file(path: str | Path) -> bool:
    """Whether the name has a supported suffix (``file.h5:dataset`` specs and ``.zarr`` stores included).

    Args:
        path: a file, or an HDF5/zarr spec.
    """
    return image_format(path) is not None


def find_format(path: str | Path) -> tuple[Path, str, ImageFormat]:
    """The path, the name of its format and its reader, once the file is known to exist.

    Args:
        path: a file, or an HDF5/zarr spec (whose reader checks the file and the array name together).

    Raises:
        BiounetError: naming the file, if it is missing, a directory or of an unsupported type.
    """
    fmt = image_format(path)
    path = Path(path)
    if fmt in ("hdf5", "zarr"):
        return path, fmt, FORMATS[fmt]
    if not path.exists():
        raise BiounetError("file not found", path)
    if path.is_dir():
        raise BiounetError("is a directory, expected an image file", path)
    if fmt is None:
        raise BiounetError(f"unsupported file type {path.suffix!r}; use {', '.join(SUPPORTED_SUFFIXES)}", path)
    return path, fmt, FORMATS[fmt]
