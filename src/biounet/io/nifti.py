"""NIfTI volumes (``.nii``, ``.nii.gz``) through nibabel: read in nibabel's voxel order, written back alike.

The array keeps nibabel's axis order (i, j, k): the header's zooms and affine refer to those axes, so
nothing is transposed. A 4th axis (or the 5th, NIfTI's vector axis) longer than 1 holds channels.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from biounet.atomic import atomic_path
from biounet.errors import BiounetError, reason
from biounet.io.axes import StoredAxes, check_axes
from biounet.optional import optional_import

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class NiftiFormat:
    """NIfTI: nibabel's axes i, j, k are ``Y``, ``X``, ``Z``, a 4th axis is ``C`` (``T`` if a 5th, NIfTI's vector
    axis, is longer than 1). A 2D model sees the planes of the slice axis k, a 3D model the volume in stored
    order. Compressed files cannot be read in parts, so they are read whole.
    """

    def probe(self, path: Path, spatial_dims: int | None, axes: str | None) -> StoredAxes:
        """The file as :class:`StoredAxes`, from its header only.

        Args:
            path: a ``.nii`` or ``.nii.gz`` file.
            spatial_dims: unused (the file names its axes).
            axes: the axes to use instead (``--axes``), one letter per axis of the array.

        Raises:
            BiounetError: naming the file, if nibabel is missing, the file is unreadable or not an image.
        """
        image = _load(path)
        shape = tuple(int(s) for s in image.shape)
        if len(shape) < 2:
            raise BiounetError(f"cannot use a NIfTI array of shape {shape} as an image", path)
        own = ("YXZ" + ("TC" if len(shape) > 4 and shape[4] > 1 else "CT"))[:len(shape)]
        letters = check_axes(axes, shape, path) if axes is not None else own
        dtype = np.dtype(image.get_data_dtype())
        proxy = image.dataobj
        if dtype.kind in "biu" and (float(getattr(proxy, "slope", 1.0)) != 1.0
                                    or float(getattr(proxy, "inter", 0.0)) != 0.0):
            dtype = np.dtype(np.float64)  # what nibabel returns for scaled integers
        zooms = tuple(float(z) for z in image.header.get_zooms())
        spacing = tuple(zooms[i] if i < min(3, len(zooms)) else 1.0 for i in range(len(shape)))
        return StoredAxes(shape, dtype, letters, spacing, header=image.header)

    @contextmanager
    def open(self, path: Path) -> Iterator[np.ndarray]:
        """The voxels, read whole."""
        yield self.read(path)

    def read(self, path: Path) -> np.ndarray:
        """The voxels as stored, scaled by the header's slope and intercept."""
        image = _load(path)
        try:
            return np.asarray(image.dataobj)
        except Exception as exc:
            raise BiounetError(f"cannot read NIfTI data ({reason(exc)})", path) from exc


def write_nifti(path: str | Path, data: np.ndarray, header: Any, display_range: tuple[float, float]) -> None:
    """Writes ``data`` with a copy of ``header`` (affine, sform/qform codes, zooms, units), atomically.

    Args:
        path: ``.nii`` or ``.nii.gz`` (nibabel compresses by the name).
        data: ``(i, j, k)`` or ``(i, j, k, classes)``; its dtype becomes the file's.
        header: the header of the image the data came from (:attr:`biounet.io.readers.ImageMeta.header`).
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
