"""PNG and JPEG images through imageio's pillow plugin: always read whole, a palette image as its indices."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from biounet.errors import BiounetError
from biounet.io.axes import StoredAxes, check_axes


class PillowFormat:
    """PNG and JPEG: ``YX`` (grey), ``YXC`` (RGB, RGBA); a 3D array with more than 4 samples is ``CYX``."""

    def probe(self, path: Path, spatial_dims: int | None, axes: str | None) -> StoredAxes:
        """The image's :class:`StoredAxes`, from its header.

        Args:
            path: the file.
            spatial_dims: unused (the file names its axes).
            axes: the axes to use instead of the file's (``--axes``).
        """
        import imageio.v3 as iio

        props = iio.improps(path, plugin="pillow")
        shape = tuple(int(s) for s in props.shape)
        # imageio reports a palette image as RGB, but it is read as its indices (see read).
        if _is_palette(path):
            shape = shape[:2]
        own = {2: "YX", 3: "YXC" if shape[-1] <= 4 else "CYX"}.get(len(shape))
        if own is None:
            raise BiounetError(f"cannot use an array of shape {shape} as an image", path)
        letters = check_axes(axes, shape, path) if axes is not None else own
        colour = True if axes is None and own == "YXC" else None
        return StoredAxes(shape, np.dtype(props.dtype), letters, (1.0,) * len(shape), colour=colour)

    @contextmanager
    def open(self, path: Path) -> Iterator[np.ndarray]:
        """The pixels, read whole (neither format can be read in parts)."""
        yield self.read(path)

    def read(self, path: Path) -> np.ndarray:
        """The pixels as stored; a palette image's are its indices."""
        import imageio.v3 as iio

        # Class labels saved with a colour map (as many annotation tools do) must be read as those indices,
        # not as the colours that imageio applies by default.
        if _is_palette(path):
            return np.asarray(iio.imread(path, plugin="pillow", mode="P"))
        return np.asarray(iio.imread(path, plugin="pillow"))


def _is_palette(path: Path) -> bool:
    import imageio.v3 as iio

    return iio.immeta(path, plugin="pillow", exclude_applied=False).get("mode") == "P"
