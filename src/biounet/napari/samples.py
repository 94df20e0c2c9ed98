"""Sample images (File > Open Sample > biounet): what the shipped models were made for."""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np


def _read(name: str) -> np.ndarray:
    import imageio.v3 as iio

    with resources.as_file(resources.files(__package__) / "samples" / name) as path:
        return np.asarray(iio.imread(path))


def isbi_em() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """A 512 x 512 serial-section TEM slice of the ISBI 2012 challenge (for ``isbi2012-membranes``)."""
    return [(_read("isbi2012-em.png"), {"name": "ISBI 2012 EM slice"}, "image")]


def nuclei() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """A 520 x 696 fluorescence image of nuclei from the Data Science Bowl 2018 (for ``dsb2018-nuclei``)."""
    return [(_read("dsb2018-nuclei.png"), {"name": "DSB 2018 nuclei", "rgb": True}, "image")]
