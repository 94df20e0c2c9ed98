"""Reading images into ``(C, *spatial)`` arrays, with one-line errors that name the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biounet.errors import BiounetError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
_CHANNEL_AXES = "CSQI"  # tifffile's names for channel/sample axes and for unnamed leading axes


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, read from its header: shape ``(C, *spatial)`` and dtype."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def channels(self) -> int:
        return self.shape[0]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def probe_image(path: str | Path, spatial_dims: int = 2) -> ImageInfo:
    """Reads only the header of an image file and checks that it is usable.

    Raises:
        BiounetError: if the file is missing, not an image, corrupt, or has an unusable shape or dtype.
    """
    path = _existing(path)
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, axes, dtype = tuple(series.shape), series.axes, np.dtype(series.dtype)
        else:
            import imageio.v3 as iio

            props = iio.improps(path, plugin="pillow")
            shape, axes, dtype = tuple(props.shape), "", np.dtype(props.dtype)
    except BiounetError:
        raise
    except Exception as exc:
        raise BiounetError(f"cannot read image ({_reason(exc)})", path) from exc
    _check_dtype(dtype, path)
    return ImageInfo(path, _channels_first_shape(shape, axes, spatial_dims, path), dtype)


def read_image(path: str | Path, spatial_dims: int = 2) -> np.ndarray:
    """Reads a PNG, JPEG or TIFF image as a ``(C, *spatial)`` array in its own dtype.

    Grayscale gives one channel, RGB(A) three (four); TIFF channel axes are found from the file's axes
    metadata. Floating-point images must be finite.

    Args:
        path: the file.
        spatial_dims: 2 for images (3D readers come with volumes).

    Raises:
        BiounetError: naming the file, for anything that makes it unusable.
    """
    path = _existing(path)
    try:
        if _is_tiff(path):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                array, axes = series.asarray(), series.axes
        else:
            import imageio.v3 as iio

            array, axes = np.asarray(iio.imread(path, plugin="pillow")), ""
    except Exception as exc:
        raise BiounetError(f"cannot read image ({_reason(exc)})", path) from exc
    _check_dtype(array.dtype, path)
    array = _to_channels_first(array, axes, spatial_dims, path)
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise BiounetError("image contains NaN or infinite values", path)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def match_channels(image: np.ndarray, channels: int, path: str | Path | None = None) -> np.ndarray:
    """Adapts an image's channels to a model's: RGB(A) to gray by luminance, RGBA to RGB by dropping alpha.

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
    raise BiounetError(f"image has {have} channel(s) but the model expects {channels}", path)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise BiounetError("file not found", path)
    if path.is_dir():
        raise BiounetError("is a directory, expected an image file", path)
    if not is_image_file(path):
        raise BiounetError(f"unsupported file type {path.suffix!r}; use {', '.join(IMAGE_SUFFIXES)}", path)
    return path


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


def _check_dtype(dtype: np.dtype, path: Path) -> None:
    if dtype.kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {dtype}", path)


def _channels_first_shape(shape: tuple[int, ...], axes: str, spatial_dims: int,
                          path: Path) -> tuple[int, ...]:
    order, size = _layout(shape, axes, spatial_dims, path)
    return (size, *(shape[i] for i in order))


def _to_channels_first(array: np.ndarray, axes: str, spatial_dims: int, path: Path) -> np.ndarray:
    order, channels = _layout(array.shape, axes, spatial_dims, path)
    channel_axes = [i for i in range(array.ndim) if i not in order]
    moved = np.transpose(array, (*channel_axes, *order))
    return moved.reshape(channels, *moved.shape[len(channel_axes):])


def _layout(shape: tuple[int, ...], axes: str, spatial_dims: int, path: Path) -> tuple[list[int], int]:
    """Which axes are spatial (in order) and how many channels the rest make."""
    shape = tuple(shape)
    if spatial_dims != 2:
        raise BiounetError(f"{spatial_dims}D images are not supported by this reader", path)
    if axes and len(axes) == len(shape):
        # Drop singleton axes that are neither Y nor X (tifffile reports e.g. a 1-long 'Q').
        spatial = [axes.index("Y"), axes.index("X")] if "Y" in axes and "X" in axes else []
        rest = [i for i in range(len(shape)) if i not in spatial]
        extra = [axes[i] for i in rest if shape[i] > 1 and axes[i] not in _CHANNEL_AXES]
        if len(spatial) != 2 or extra or len([i for i in rest if shape[i] > 1]) > 1:
            raise BiounetError(f"cannot use a TIFF with axes {axes} and shape {shape} as a 2D image", path)
    elif len(shape) == 2:
        spatial, rest = [0, 1], []
    elif len(shape) == 3 and shape[-1] <= 4:
        spatial, rest = [0, 1], [2]
    elif len(shape) == 3:
        spatial, rest = [1, 2], [0]
    else:
        raise BiounetError(f"cannot use an array of shape {shape} as a 2D image", path)
    channels = int(np.prod([shape[i] for i in rest])) if rest else 1
    if min(shape[i] for i in spatial) < 1:
        raise BiounetError(f"image of shape {shape} is empty", path)
    return spatial, channels


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
