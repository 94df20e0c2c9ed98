"""NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel: read in nibabel's voxel order, written back alike.

The array keeps nibabel's axis order (i, j, k): the header's zooms and affine refer to those axes, so
nothing is transposed. A 4th axis (or the 5th, NIfTI's vector axis) longer than 1 holds channels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from biounet.atomic import atomic_path
from biounet.errors import BiounetError
from biounet.io.axes import check_axes
from biounet.io.layout import Layout, StoredAxes, check_spatial_dims, checked_layout, reason
from biounet.optional import optional_import

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def probe_nifti(path: Path, spatial_dims: int) -> Layout:
    """The layout of a NIfTI file, from its header only.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        spatial_dims: 3 for volumes; 2 accepts only files whose third axis is absent or 1 long.

    Raises:
        BiounetError: naming the file, if nibabel is missing, the file is unreadable or its shape does not fit.
    """
    return _layout(_load(path), spatial_dims, path)


def read_nifti(path: Path, spatial_dims: int) -> tuple[np.ndarray, Layout]:
    """A NIfTI file's voxels as stored (scaled by the header's slope/intercept) and their layout."""
    image = _load(path)
    layout = _layout(image, spatial_dims, path)  # checked before the voxels are read
    return _voxels(image, path), layout


def probe_nifti_axes(path: Path, axes: str | None = None) -> StoredAxes:
    """A NIfTI file as :class:`StoredAxes`, from its header only.

    nibabel's axes i, j, k are ``Y``, ``X``, ``Z``: a 2D model sees the planes of the slice axis k, a 3D model
    the volume in stored order, as :func:`read_nifti` gives it. A 4th axis is channels (as :func:`read_nifti`
    reads it); with a 5th (NIfTI's vector axis) longer than 1, the 4th is time.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        axes: the axes to use instead (``--axes``), one letter per axis of the array.
    """
    return _stored_axes(_load(path), axes, path)


def read_nifti_axes(path: Path, axes: str | None = None) -> tuple[np.ndarray, StoredAxes]:
    """A NIfTI file's voxels as stored (scaled) and its :class:`StoredAxes` (see :func:`probe_nifti_axes`)."""
    image = _load(path)
    stored = _stored_axes(image, axes, path)  # checked before the voxels are read
    return _voxels(image, path), stored


def _voxels(image: Any, path: Path) -> np.ndarray:
    try:
        return np.asarray(image.dataobj)
    except Exception as exc:
        raise BiounetError(f"cannot read NIfTI data ({reason(exc)})", path) from exc


def _stored_axes(image: Any, axes: str | None, path: Path) -> StoredAxes:
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 2:
        raise BiounetError(f"cannot use a NIfTI array of shape {shape} as an image", path)
    own = ("YXZ" + ("TC" if len(shape) > 4 and shape[4] > 1 else "CT"))[:len(shape)]
    letters = check_axes(axes, shape, path) if axes is not None else own
    dtype = np.dtype(image.get_data_dtype())
    proxy = image.dataobj
    if dtype.kind in "biu" and (float(getattr(proxy, "slope", 1.0)) != 1.0 or float(getattr(proxy, "inter", 0.0))
                                != 0.0):
        dtype = np.dtype(np.float64)  # what nibabel returns for scaled integers
    zooms = tuple(float(z) for z in image.header.get_zooms())
    spacing = tuple(zooms[i] if i < min(3, len(zooms)) else 1.0 for i in range(len(shape)))
    return StoredAxes(shape, dtype, letters, spacing, header=image.header)


def nifti_spatial_dims(path: Path) -> int:
    """2 for a NIfTI file with only two axes, else 3."""
    return 2 if len(_load(path).shape) == 2 else 3


def write_nifti(path: str | Path, data: np.ndarray, header: Any, display_range: tuple[float, float]) -> None:
    """Writes ``data`` with a copy of ``header`` (affine, sform/qform codes, zooms, units), atomically.

    Args:
        path: ``.nii`` or ``.nii.gz`` (nibabel compresses by the name).
        data: ``(i, j, k)`` or ``(i, j, k, classes)``; its dtype becomes the file's.
        header: the header of the image the data came from (:attr:`ImageMeta.header`).
        display_range: ``cal_min``/``cal_max`` for viewers (the input's range does not fit a prediction).
    """
    nib = optional_import("nibabel", "writing NIfTI", path)
    header = header.copy()
    header.set_data_dtype(data.dtype)
    zooms = (*header.get_zooms(), 1.0, 1.0, 1.0)[:3]  # a 2D input's header has two
    header.set_data_shape(data.shape)
    # Axes past the third (classes) have no physical size; the input's 4th zoom (e.g. a repetition time) would
    # be wrong for them.
    header.set_zooms((*zooms, *([1.0] * (data.ndim - 3))))
    # The input's intensity scaling must not be applied to probabilities or class indices.
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = display_range
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    # The header's own best affine leaves its sform and qform (and their codes) exactly as they were.
    image = image_class(data, header.get_best_affine(), header=header)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def _load(path: Path) -> Any:
    nib = optional_import("nibabel", f"reading {'.nii.gz' if str(path).lower().endswith('.gz') else '.nii'}",
                          path)
    try:
        # No memory map: the file is read once and may be replaced afterwards (predict writes beside it).
        try:
            image = nib.load(str(path), mmap=False)
        except nib.filebasedimages.ImageFileError:
            # nibabel's format sniffing only says "cannot work out file type"; reading it as NIfTI-1 says why
            # (truncated, not gzip, bad header).
            image = nib.Nifti1Image.from_filename(str(path), mmap=False)
        if not isinstance(image, nib.Nifti1Image):  # Nifti2Image is a subclass
            raise BiounetError(f"not a NIfTI image ({type(image).__name__})", path)
    except BiounetError:
        raise
    except Exception as exc:
        raise BiounetError(f"cannot read NIfTI file ({reason(exc)})", path) from exc
    return image


def _layout(image: Any, spatial_dims: int, path: Path) -> Layout:
    check_spatial_dims(spatial_dims, path)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 2:
        raise BiounetError(f"cannot use a NIfTI array of shape {shape} as an image", path)
    if spatial_dims == 3 and len(shape) == 2:
        raise BiounetError(f"a 2D image (NIfTI shape {shape}) cannot be used with a 3D model", path)
    if spatial_dims == 2 and len(shape) > 2 and shape[2] > 1:
        raise BiounetError(f"a 3D volume (NIfTI shape {shape}) cannot be used with a 2D model", path)
    spatial = tuple(range(spatial_dims))
    extra = [shape[i] for i in range(len(shape)) if i not in spatial and shape[i] > 1]
    if len(extra) > 1:
        raise BiounetError(f"cannot use a NIfTI array of shape {shape} as a {spatial_dims}D image "
                           "(more than one non-spatial axis)", path)
    dtype = np.dtype(image.get_data_dtype())
    proxy = image.dataobj
    slope, inter = float(getattr(proxy, "slope", 1.0)), float(getattr(proxy, "inter", 0.0))
    if dtype.kind in "biu" and (slope != 1.0 or inter != 0.0):
        dtype = np.dtype(np.float64)  # what nibabel returns for scaled integers
    zooms = tuple(float(z) for z in image.header.get_zooms())
    spacing = tuple(zooms[i] if i < len(zooms) else 1.0 for i in spatial)
    return checked_layout(path, shape, dtype, spatial, spacing, header=image.header)
