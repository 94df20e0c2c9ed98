"""TIFF images and stacks: axes from tifffile's series metadata, spacing from ImageJ calibration."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError, reason
from biounet.io.axes import UNKNOWN, StoredAxes, check_axes
from biounet.optional import optional_import


class TiffFormat:
    """A TIFF's first series, opened through tifffile's zarr view of its pages, tiles or strips."""

    def probe(self, path: Path, spatial_dims: int | None, axes: str | None) -> StoredAxes:
        """The first series as :class:`StoredAxes`: tifffile's axes, named in ``TZCYX`` where they can be.

        Samples stored with each pixel (RGB, ``YXS``) and named channels are ``C``; pages that no metadata
        names (tifffile's ``Q``/``I``), other axis kinds, and samples stored as separate planes are ``?``:
        tifffile writes a ``(3, Y, X)`` array without ``photometric`` as planar RGB, which is as likely to be a
        stack.

        Args:
            path: the file.
            spatial_dims: unused (the file names its axes, or leaves them to the model).
            axes: the axes to use instead of the file's (``--axes``), one letter per axis of the series.

        Raises:
            BiounetError: naming the file, if ``axes`` does not fit the series.
        """
        with _tiff_file(path) as tif:
            return _stored_axes(tif, axes, path)

    @contextmanager
    def open(self, path: Path) -> Iterator[Any]:
        """The first series as a read-only zarr array, so that a 20000 x 20000 slide is never loaded whole."""
        import tifffile

        zarr = optional_import("zarr", "reading large TIFF files region by region", path)
        try:
            with _series_warnings(path):
                array = zarr.open(tifffile.imread(path, aszarr=True, series=0), mode="r")
        except BiounetError:
            raise
        except Exception as exc:
            raise BiounetError(f"cannot read TIFF region by region ({reason(exc)})", path) from exc
        yield array

    def read(self, path: Path) -> np.ndarray:
        """The first series, read whole."""
        return read_tiff(path)


def read_tiff(path: Path) -> np.ndarray:
    """A TIFF's first series, read whole.

    Raises:
        BiounetError: naming the file, if its axis metadata does not match its pages (see :func:`_tiff_file`).
    """
    with _tiff_file(path) as tif:
        return np.asarray(tif.series[0].asarray())


@contextmanager
def _tiff_file(path: Path) -> Iterator[Any]:
    """The open ``tifffile.TiffFile``, its series already read (see :func:`_series_warnings`)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        with _series_warnings(path):
            tif.series  # noqa: B018  (tifffile checks the metadata as it builds the series)
        yield tif


@contextmanager
def _series_warnings(path: Path) -> Iterator[None]:
    """Turns tifffile's warnings that a file's metadata does not match its pages into a :class:`BiounetError`.

    When an OME-XML, ImageJ or shaped description names more (or other) planes than the file holds, tifffile
    logs a warning and falls back on the pages as stored, or fills the missing planes with zeros: a file read
    so is not what its metadata says it is, and the warning would be a second line on stderr. Other warnings
    of tifffile are logged as usual.

    Raises:
        BiounetError: naming the file, with tifffile's words.
    """
    logger = logging.getLogger("tifffile")
    catch = _SeriesWarnings()
    logger.addFilter(catch)
    try:
        yield
    finally:
        logger.removeFilter(catch)
    if catch.messages:
        # tifffile starts its messages with the file's repr, which the error names already.
        said = catch.messages[0].split("> ", 1)[-1]
        raise BiounetError(f"the file's metadata does not match its pages (tifffile: {said})", path)


class _SeriesWarnings(logging.Filter):
    """Keeps back, and notes, the warnings about a series that this thread's reading logs."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or record.levelno < logging.WARNING or "series" not in record.getMessage():
            return True
        self.messages.append(record.getMessage())
        return False


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
    z, y, x = _spacing(tif)
    # Resolution tags describe the pages' plane; ImageJ's slice spacing describes Z (or the unnamed pages).
    sizes = {"Y": y, "X": x, "Z": z}
    spacing = tuple(sizes.get(a, z if a == UNKNOWN else 1.0) for a in letters)
    return StoredAxes(shape, np.dtype(series.dtype), letters, spacing, colour=None if axes is not None else
                      _colour(own, shape, planar))


def _colour(own: str, shape: tuple[int, ...], planar: bool) -> bool | None:
    """Whether the channels of a TIFF with tifffile's axes ``own`` are a colour picture's samples (``S``, stored
    pixel by pixel: photometric RGB) or separate channels (ImageJ's ``C``); ``None`` where it has neither."""
    channels = shape[own.index("C")] if "C" in own else 1
    samples = shape[own.index("S")] if "S" in own and not planar else 1
    if channels > 1:
        return False
    return True if samples > 1 else None


def _spacing(tif: Any) -> tuple[float, float, float]:
    """``(z, y, x)`` pixel size from ImageJ calibration (resolution tags in pixels per unit, ``spacing``).

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
    z = float((tif.imagej_metadata or {}).get("spacing", 1.0))
    return (z, y, x)
