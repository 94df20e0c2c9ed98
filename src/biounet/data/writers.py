"""Writing probability maps and masks, atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biounet.atomic import atomic_path


def write_probabilities(path: str | Path, probabilities: np.ndarray) -> None:
    """Writes ``(C, *spatial)`` probabilities as a float32 TIFF with axes metadata ``CYX``."""
    import tifffile

    data = np.ascontiguousarray(probabilities, dtype=np.float32)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, photometric="minisblack", metadata={"axes": "CYX"[-data.ndim:]})


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Writes a class-index mask as PNG (uint8), or as TIFF (uint16) when a class index exceeds 255.

    Returns:
        The path written: ``path`` itself, or ``path`` with suffix ``.tif`` if the mask needed 16 bits.
    """
    target = Path(path)
    if int(mask.max(initial=0)) > 255:
        import tifffile

        target = target.with_suffix(".tif")
        with atomic_path(target) as tmp:
            tifffile.imwrite(tmp, mask.astype(np.uint16))
        return target
    import imageio.v3 as iio

    with atomic_path(target) as tmp:
        iio.imwrite(tmp, mask.astype(np.uint8))
    return target
