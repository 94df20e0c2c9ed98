"""Reading images and volumes into ``(C, *spatial)`` arrays, with one-line errors that name the file.

Formats: PNG and JPEG (2D), TIFF images and stacks, NIfTI (``.nii``, ``.nii.gz``), HDF5 datasets
(``file.h5:dataset``) and zarr arrays (``store.zarr`` or ``store.zarr:array``). Whether a file is read as a 2D
image or a 3D volume is the caller's choice (the model's ``spatial_dims``); a file that does not fit it is an
error, never reinterpreted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError
from biounet.io.axes import check_axes
from biounet.io.containers import (
    HDF5_SUFFIXES,
    ZARR_SUFFIX,
    container_spatial_dims,
    probe_container,
    probe_container_axes,
    read_container,
    read_container_axes,
    split_spec,
)
from biounet.io.layout import Layout, StoredAxes, check_spatial_dims, checked_layout, reason
from biounet.io.nifti import (
    NIFTI_SUFFIXES,
    nifti_spatial_dims,
    probe_nifti,
    probe_nifti_axes,
    read_nifti,
    read_nifti_axes,
)
from biounet.io.tiff import probe_tiff, probe_tiff_axes, read_tiff, read_tiff_axes, tiff_spatial_dims

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""2D formats (TIFF also holds stacks)."""
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *HDF5_SUFFIXES, ZARR_SUFFIX)
"""Formats that usually hold volumes; NIfTI needs the ``nifti`` extra, HDF5 ``hdf5``, zarr ``zarr``."""
SUPPORTED_SUFFIXES = (*IMAGE_SUFFIXES, *VOLUME_SUFFIXES)


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


def image_format(path: str | Path) -> str | None:
    """The format a path names, from its suffix: see :attr:`ImageMeta.format`; ``None`` if unsupported."""
    spec = split_spec(path)
    if spec is not None:
        return "zarr" if spec[0].suffix.lower() == ZARR_SUFFIX else "hdf5"
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    suffix = Path(name).suffix
    return {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}.get(suffix)


def is_image_file(path: str | Path) -> bool:
    """Whether the name has a supported suffix (``file.h5:dataset`` specs and ``.zarr`` stores included)."""
    return image_format(path) is not None


def file_stem(path: str | Path) -> str:
    """The name outputs and pairings use: ``case_001.nii.gz`` -> ``case_001``, ``a.h5:raw`` -> ``a``.

    Args:
        path: a file, or an HDF5/zarr spec with ``:array`` after the file name.
    """
    spec = split_spec(path)
    name = spec[0].name if spec is not None else Path(path).name
    for compound in NIFTI_SUFFIXES[1:]:
        if name.lower().endswith(compound):
            return name[: -len(compound)]
    return Path(name).stem


def is_hidden(path: str | Path) -> bool:
    """Whether a file's name starts with ``.``: hidden, like the temporary files of an interrupted write."""
    return Path(path).name.startswith(".")


def list_image_files(folder: Path) -> list[Path]:
    """A folder's image files, sorted; ``.zarr`` stores (directories) count as files.

    Hidden files are left out: ``.00_prob.1234.tmp.tif`` is what a killed ``predict`` leaves behind.
    HDF5 files are listed too: each must then hold exactly one dataset, since a listing names none.
    """
    return sorted(p for p in folder.iterdir()
                  if is_image_file(p) and not is_hidden(p)
                  and (p.is_file() or (p.is_dir() and p.suffix.lower() == ZARR_SUFFIX)))


def probe_image(path: str | Path, spatial_dims: int = 2) -> ImageInfo:
    """Reads only the header of an image file (where the format allows) and checks that it is usable.

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: 2 for images, 3 for volumes.

    Raises:
        BiounetError: if the file is missing, not an image, corrupt, or has an unusable shape or dtype.
    """
    path, fmt = _existing(path)
    layout = _call(_PROBES[fmt], path, spatial_dims)
    return ImageInfo(path, layout.output_shape, layout.dtype, layout.spacing)


def read_image(path: str | Path, spatial_dims: int = 2) -> np.ndarray:
    """Reads an image as a ``(C, *spatial)`` array in its own dtype (bool becomes uint8).

    2D: grayscale gives one channel, RGB(A) three (four); TIFF channel axes are found from the file's axes
    metadata. 3D: TIFF stacks by their axes (``ZYX``, ``ZCYX``, ``CZYX``, ImageJ hyperstacks; a plain
    multi-page TIFF is a ``ZYX`` stack), NIfTI in nibabel's axis order with a 4th axis as channels,
    HDF5/zarr arrays as ``(Z, Y, X)`` or ``(C, Z, Y, X)``. Floating-point images must be finite.

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
    path, fmt = _existing(path)
    array, layout = _call(_READERS[fmt], path, spatial_dims)
    if array.dtype.kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {array.dtype}", path)
    array = layout.apply(array)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BiounetError("image contains NaN or infinite values", path)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array, ImageMeta(path, fmt, layout.spacing, layout.header)


def probe_stored(path: str | Path, spatial_dims: int, axes: str | None = None) -> StoredAxes:
    """A file's array as stored and the name of each of its axes, from the header where the format allows.

    Unlike :func:`probe_image`, nothing is decided for a model yet: :func:`biounet.io.axes.plan_stack`
    does that. Axes the file does not name are ``?`` (pages of a plain multi-page TIFF); HDF5/zarr arrays
    without axes metadata follow the ``(C, *spatial)`` convention of ``spatial_dims``.

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: the model's (only HDF5/zarr arrays without axes metadata need it).
        axes: the axes to use instead of the file's (``--axes``), one letter of ``TZCYX`` per stored axis.

    Raises:
        BiounetError: naming the file, if it is missing, unreadable, or ``axes`` does not fit it.
    """
    path, fmt = _existing(path)
    return _call_stored(_STORED_PROBES[fmt], path, spatial_dims, axes)


def read_stored(path: str | Path, spatial_dims: int, axes: str | None = None) -> tuple[np.ndarray, StoredAxes]:
    """The array as stored (bool becomes uint8) and its :class:`StoredAxes` (see :func:`probe_stored`).

    Raises:
        BiounetError: naming the file, as :func:`probe_stored`, and for non-finite floating-point values.
    """
    path, fmt = _existing(path)
    array, stored = _call_stored(_STORED_READERS[fmt], path, spatial_dims, axes)
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {array.dtype}", path)
    if array.shape != stored.shape:
        raise BiounetError(f"array of shape {array.shape} does not match its header's {stored.shape}", path)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BiounetError("image contains NaN or infinite values", path)
    return (array.astype(np.uint8) if array.dtype == bool else array), stored


def guess_spatial_dims(path: str | Path) -> int:
    """2 or 3, from the file, for a one-channel label image or a prediction of it (as ``evaluate`` needs).

    NIfTI: 3 (2 if it has only two axes). TIFF: 3 if its axes include Z (ImageJ ``slices`` or axes
    metadata), else 2; a plain multi-page TIFF reads as 2D channels, so stacks need ``Z`` in their metadata
    (or an explicit choice). HDF5/zarr: 2 for a 2-dimensional array, else 3. PNG/JPEG: 2.

    Raises:
        BiounetError: naming the file, if it cannot be read.
    """
    path, fmt = _existing(path)
    guess: Callable[[Path], int] | None = {"nifti": nifti_spatial_dims, "tiff": tiff_spatial_dims,
                                           "hdf5": container_spatial_dims, "zarr": container_spatial_dims
                                           }.get(fmt)
    if guess is None:
        return 2
    try:
        return guess(path)
    except BiounetError:
        raise
    except Exception as exc:
        raise BiounetError(f"cannot read image ({reason(exc)})", path) from exc


def match_channels(image: np.ndarray, channels: int, path: str | Path | None = None) -> np.ndarray:
    """Adapts an image's channels to a model's: RGB(A) to gray by luminance, RGBA to RGB by dropping alpha,
    gray to RGB by repeating it (a colour model trained on grey-as-RGB images, as fluorescence in DSB 2018).

    Raises:
        BiounetError: if the channels cannot be adapted without guessing.
    """
    have = image.shape[0]
    if have == channels:
        return image
    if channels == 1 and have in (3, 4):
        weights = np.array([0.299, 0.587, 0.114], np.float32).reshape(3, *([1] * (image.ndim - 1)))
        return (image[:3].astype(np.float32) * weights).sum(axis=0, keepdims=True)
    if channels == 3 and have == 4:
        return image[:3]
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=0)
    raise BiounetError(f"image has {have} channel(s) but the model expects {channels}", path)


def _existing(path: str | Path) -> tuple[Path, str]:
    fmt = image_format(path)
    path = Path(path)
    if fmt in ("hdf5", "zarr"):
        return path, fmt  # the container module checks the file and the array name together
    if not path.exists():
        raise BiounetError("file not found", path)
    if path.is_dir():
        raise BiounetError("is a directory, expected an image file", path)
    if fmt is None:
        raise BiounetError(f"unsupported file type {path.suffix!r}; use {', '.join(SUPPORTED_SUFFIXES)}", path)
    return path, fmt


def _call(function: Callable[[Path, int], Any], path: Path, spatial_dims: int) -> Any:
    """Runs a format's probe or reader; library errors become one line naming the file."""
    try:
        return function(path, spatial_dims)
    except BiounetError:
        raise
    except Exception as exc:
        raise BiounetError(f"cannot read image ({reason(exc)})", path) from exc


def _call_stored(function: Callable[[Path, int, str | None], Any], path: Path, spatial_dims: int,
                 axes: str | None) -> Any:
    """Runs a format's stored-axes probe or reader; library errors become one line naming the file."""
    try:
        return function(path, spatial_dims, axes)
    except BiounetError:
        raise
    except Exception as exc:
        raise BiounetError(f"cannot read image ({reason(exc)})", path) from exc


def _probe_pillow(path: Path, spatial_dims: int) -> Layout:
    shape, dtype = _pillow_header(path)
    return _pillow_layout(shape, dtype, spatial_dims, path)


def _read_pillow(path: Path, spatial_dims: int) -> tuple[np.ndarray, Layout]:
    array = _pillow_pixels(path)
    return array, _pillow_layout(array.shape, array.dtype, spatial_dims, path)


def _pillow_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    import imageio.v3 as iio

    props = iio.improps(path, plugin="pillow")
    shape = tuple(int(s) for s in props.shape)
    # imageio reports a palette image as RGB, but it is read as its indices (see _pillow_pixels).
    return (shape[:2] if _is_palette(path) else shape), np.dtype(props.dtype)


def _pillow_pixels(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    # A palette image's pixels are indices: class labels saved with a colour map (as many annotation tools
    # do) must be read as those indices, not as the colours that imageio applies by default.
    if _is_palette(path):
        return np.asarray(iio.imread(path, plugin="pillow", mode="P"))
    return np.asarray(iio.imread(path, plugin="pillow"))


def _is_palette(path: Path) -> bool:
    import imageio.v3 as iio

    return iio.immeta(path, plugin="pillow", exclude_applied=False).get("mode") == "P"


def _probe_pillow_axes(path: Path, axes: str | None = None) -> StoredAxes:
    shape, dtype = _pillow_header(path)
    return _pillow_axes(shape, dtype, axes, path)


def _read_pillow_axes(path: Path, axes: str | None = None) -> tuple[np.ndarray, StoredAxes]:
    array = _pillow_pixels(path)
    return array, _pillow_axes(array.shape, array.dtype, axes, path)


def _pillow_axes(shape: tuple[int, ...], dtype: np.dtype, axes: str | None, path: Path) -> StoredAxes:
    own = {2: "YX", 3: "YXC" if shape[-1] <= 4 else "CYX"}.get(len(shape))
    if own is None:
        raise BiounetError(f"cannot use an array of shape {shape} as an image", path)
    letters = check_axes(axes, shape, path) if axes is not None else own
    return StoredAxes(tuple(shape), np.dtype(dtype), letters, (1.0,) * len(shape))


def _pillow_layout(shape: tuple[int, ...], dtype: np.dtype, spatial_dims: int, path: Path) -> Layout:
    check_spatial_dims(spatial_dims, path)
    if spatial_dims == 3:
        raise BiounetError(f"a 2D image (shape {shape}) cannot be used with a 3D model", path)
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] <= 4):
        spatial = (0, 1)
    elif len(shape) == 3:
        spatial = (1, 2)
    else:
        raise BiounetError(f"cannot use an array of shape {shape} as a 2D image", path)
    return checked_layout(path, shape, dtype, spatial, (1.0, 1.0))


_PROBES: dict[str, Callable[[Path, int], Layout]] = {
    "png": _probe_pillow, "jpeg": _probe_pillow, "tiff": probe_tiff, "nifti": probe_nifti,
    "hdf5": probe_container, "zarr": probe_container,
}
_READERS: dict[str, Callable[[Path, int], tuple[np.ndarray, Layout]]] = {
    "png": _read_pillow, "jpeg": _read_pillow, "tiff": read_tiff, "nifti": read_nifti,
    "hdf5": read_container, "zarr": read_container,
}
# Only HDF5/zarr arrays without axes metadata need the model's dimension to name their axes.
_STORED_PROBES: dict[str, Callable[[Path, int, str | None], StoredAxes]] = {
    "png": lambda p, _, a: _probe_pillow_axes(p, a), "jpeg": lambda p, _, a: _probe_pillow_axes(p, a),
    "tiff": lambda p, _, a: probe_tiff_axes(p, a), "nifti": lambda p, _, a: probe_nifti_axes(p, a),
    "hdf5": probe_container_axes, "zarr": probe_container_axes,
}
_STORED_READERS: dict[str, Callable[[Path, int, str | None], tuple[np.ndarray, StoredAxes]]] = {
    "png": lambda p, _, a: _read_pillow_axes(p, a), "jpeg": lambda p, _, a: _read_pillow_axes(p, a),
    "tiff": lambda p, _, a: read_tiff_axes(p, a), "nifti": lambda p, _, a: read_nifti_axes(p, a),
    "hdf5": read_container_axes, "zarr": read_container_axes,
}
