"""TIFF images and stacks: axes from tifffile's series metadata, spacing from ImageJ calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError
from biounet.io.axes import UNKNOWN, check_axes
from biounet.io.layout import Layout, StoredAxes, check_spatial_dims, checked_layout

# tifffile's axis names for channels/samples (C, S) and for axes it cannot name (Q: unknown, I: pages).
_CHANNEL_AXES = "CSQI"
_UNNAMED_AXES = "QI"


def probe_tiff(path: Path, spatial_dims: int) -> Layout:
    """The layout of a TIFF's first series, from its header and metadata.

    Args:
        path: the file.
        spatial_dims: 2 (``YX``) or 3 (``ZYX``).

    Raises:
        BiounetError: naming the file, if its axes do not make an image of that dimension.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _layout(tif, spatial_dims, path)


def read_tiff(path: Path, spatial_dims: int) -> tuple[np.ndarray, Layout]:
    """A TIFF's first series as stored, and its layout (see :func:`probe_tiff`)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        layout = _layout(tif, spatial_dims, path)
        return tif.series[0].asarray(), layout


def probe_tiff_axes(path: Path, axes: str | None = None) -> StoredAxes:
    """A TIFF's first series as :class:`StoredAxes`: tifffile's axes, named in ``TZCYX`` where they can be.

    Samples stored with each pixel (RGB, ``YXS``) and named channels are ``C``; pages that no metadata names
    (tifffile's ``Q``/``I``), other axis kinds, and samples stored as separate planes are ``?``: tifffile
    writes a ``(3, Y, X)`` array without ``photometric`` as planar RGB, which is as likely to be a stack.

    Args:
        path: the file.
        axes: the axes to use instead of the file's (``--axes``), one letter per axis of the series.

    Raises:
        BiounetError: naming the file, if ``axes`` does not fit the series.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return _stored_axes(tif, axes, path)


def read_tiff_axes(path: Path, axes: str | None = None) -> tuple[np.ndarray, StoredAxes]:
    """A TIFF's first series as stored, and its :class:`StoredAxes` (see :func:`probe_tiff_axes`)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        stored = _stored_axes(tif, axes, path)
        return tif.series[0].asarray(), stored


def tiff_spatial_dims(path: Path) -> int:
    """3 if the first series has a ``Z`` axis (ImageJ ``slices`` or axes metadata), else 2."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        return 3 if "Z" in tif.series[0].axes else 2


def _layout(tif: Any, spatial_dims: int, path: Path) -> Layout:
    check_spatial_dims(spatial_dims, path)
    series = tif.series[0]
    shape, axes = tuple(int(s) for s in series.shape), str(series.axes)
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        raise BiounetError(f"cannot use a TIFF with axes {axes} and shape {shape} as a {spatial_dims}D image",
                           path)
    yx = [axes.index("Y"), axes.index("X")]
    spatial = yx if spatial_dims == 2 else [_z_axis(shape, axes, path), *yx]
    rest = [i for i in range(len(shape)) if i not in spatial]
    # Singleton axes of any name are dropped (tifffile reports e.g. a 1-long 'Q'); longer ones must be
    # channels, and only one of them, so that nothing else (time, a second stack axis) is silently merged.
    extra = [axes[i] for i in rest if shape[i] > 1 and axes[i] not in _CHANNEL_AXES]
    if extra or len([i for i in rest if shape[i] > 1]) > 1:
        raise BiounetError(f"cannot use a TIFF with axes {axes} and shape {shape} as a {spatial_dims}D image",
                           path)
    return checked_layout(path, shape, np.dtype(series.dtype), tuple(spatial),
                          _spacing(tif, spatial_dims))


def _z_axis(shape: tuple[int, ...], axes: str, path: Path) -> int:
    if "Z" in axes:
        return axes.index("Z")
    # Without a named Z, a stack is the one unnamed axis longer than 1 (a plain multi-page TIFF).
    unnamed = [i for i, a in enumerate(axes) if a in _UNNAMED_AXES and shape[i] > 1]
    if not unnamed:
        raise BiounetError(f"a 2D image (TIFF axes {axes}, shape {shape}) cannot be used with a 3D model", path)
    if len(unnamed) > 1:
        raise BiounetError(f"cannot tell the Z axis from channels in a TIFF with axes {axes} and shape {shape}; "
                           "write it with axes metadata (e.g. ImageJ's ZCYX)", path)
    return unnamed[0]


def _stored_axes(tif: Any, axes: str | None, path: Path) -> StoredAxes:
    series = tif.series[0]
    shape, own = tuple(int(s) for s in series.shape), str(series.axes)
    if len(own) != len(shape):
        raise BiounetError(f"cannot use a TIFF with axes {own} and shape {shape}", path)
    planar = "S" in own and "X" in own and own.index("S") < own.index("X")
    named = "".join(a if a in "TZCYX" else "C" if a == "S" and not planar else UNKNOWN for a in own)
    letters = check_axes(axes, shape, path) if axes is not None else named
    if "Y" not in letters or "X" not in letters:
        raise BiounetError(f"cannot use a TIFF with axes {own} and shape {shape} as an image", path)
    z, y, x = _spacing(tif, 3)
    # Resolution tags describe the pages' plane; ImageJ's slice spacing describes Z (or the unnamed pages).
    sizes = {"Y": y, "X": x, "Z": z}
    spacing = tuple(sizes.get(a, z if a == UNKNOWN else 1.0) for a in letters)
    return StoredAxes(shape, np.dtype(series.dtype), letters, spacing)


def _spacing(tif: Any, spatial_dims: int) -> tuple[float, ...]:
    """Pixel size from ImageJ calibration (resolution tags in pixels per unit, ``spacing`` for Z).

    Resolution tags in inches or centimetres are left out: outside ImageJ they usually hold a print DPI
    (72, 300), not the pixel size.
    """
    import tifffile

    page = tif.pages.first
    y, x = 1.0, 1.0
    if tif.is_imagej or page.resolutionunit == tifffile.RESUNIT.NONE:
        x_res, y_res = (float(r) for r in page.resolution)
        x = 1.0 / x_res if x_res > 0 else 1.0
        y = 1.0 / y_res if y_res > 0 else 1.0
    if spatial_dims == 2:
        return (y, x)
    z = float((tif.imagej_metadata or {}).get("spacing", 1.0))
    return (z, y, x)
