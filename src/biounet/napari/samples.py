"""Sample images (File > Open Sample > biounet): what the shipped models were made for."""

from __future__ import annotations

from typing import Any

import numpy as np

from biounet.pretrained import sample_image


def _read(model: str) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(sample_image(model)))


def isbi_em() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """A 512 x 512 serial-section TEM slice of the ISBI 2012 challenge (for ``isbi2012-membranes``)."""
    return [(_read("isbi2012-membranes"), {"name": "ISBI 2012 EM slice"}, "image")]


def nuclei() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """A 520 x 696 fluorescence image of nuclei from the Data Science Bowl 2018 (for ``nuclei``)."""
    return [(_read("nuclei"), {"name": "DSB 2018 nuclei", "rgb": True}, "image")]
