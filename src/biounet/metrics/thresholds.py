"""Conventions shared by the metrics: the ISBI threshold sweep, binarisation and stacks of 2D slices.

ISBI 2012 convention: 1 = cell (foreground), 0 = membrane (boundary). A prediction is foreground where
``p > threshold`` (strict), compared in float64; truth label images are foreground where ``truth > 0``.
Truth pixels equal to ``IGNORE_INDEX`` (-1), or marked in an explicit ``ignore`` mask, are unannotated: each
metric leaves them out in its own documented way.

Fiji's sweeps run ``for (th = 0.0; th <= 1.0; th += 0.1)``, so its thresholds are the accumulated doubles
0.30000000000000004, 0.7999999999999999, ..., 0.9999999999999999. For float32 probabilities they binarise
exactly as ``k / 10`` except the last: a pixel of exactly 1.0 is foreground at Fiji's last threshold and
background at ours (1.0). That threshold is never the best one for a useful map, so the scores agree.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from biounet.data.labels import IGNORE_INDEX

# 0.0, 0.1, ..., 1.0; k / 10 is the double nearest to each decimal (0.1 * 3 is not).
ISBI_THRESHOLDS: tuple[float, ...] = tuple(k / 10 for k in range(11))


def probabilities(prob: npt.ArrayLike, truth: npt.ArrayLike,
                  ignore: npt.ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prob as float64, annotated foreground, annotated)``, checked to have one shape and no NaNs.

    Float64 matters: ``float32(0.3) > 0.3`` holds in float64 but not after rounding 0.3 to float32.

    Args:
        prob: probabilities of the foreground class, or a binary/label prediction.
        truth: ground-truth label image (foreground where > 0, unannotated where ``IGNORE_INDEX``).
        ignore: optional boolean mask of further unannotated pixels.
    """
    p = np.asarray(prob).astype(np.float64, copy=False)
    t = np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from truth shape {t.shape}")
    if np.isnan(p).any():
        raise ValueError("prediction contains NaN")
    # Unsigned and boolean truths cannot hold IGNORE_INDEX (-1).
    annotated = t != IGNORE_INDEX if t.dtype.kind in "if" else np.ones(t.shape, dtype=bool)
    if ignore is not None:
        mask = np.asarray(ignore, dtype=bool)
        if mask.shape != t.shape:
            raise ValueError(f"ignore mask shape {mask.shape} differs from truth shape {t.shape}")
        annotated = annotated & ~mask
    return p, (t > 0) & annotated, annotated


def as_slices(image: np.ndarray) -> np.ndarray:
    """A 2D image as a stack of one slice, a 3D array as a stack ``(slices, H, W)``."""
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3:
        return image
    raise ValueError(f"expected a 2D image or a 3D stack of slices, got shape {image.shape}")


def check_thresholds(thresholds: npt.ArrayLike) -> np.ndarray:
    """The thresholds as a non-empty 1D float64 array."""
    ths = np.asarray(thresholds, dtype=np.float64).ravel()
    if ths.size == 0:
        raise ValueError("need at least one threshold")
    return ths
