"""Pixel-wise scores of a foreground probability map: mismatch fraction and the ISBI 2012 pixel error.

The ISBI pixel error is ``1 - F1`` at the best threshold, with cells as the positive class and the
true/false positive counts pooled over all slices of a stack (Fiji's ``PixelError.getPixelErrorMaximalFScore``).
Unannotated truth pixels (``IGNORE_INDEX`` or an ``ignore`` mask) are left out of every count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from biounet.metrics.thresholds import ISBI_THRESHOLDS, check_thresholds, probabilities


@dataclass(frozen=True)
class PixelScores:
    """Pixel-wise precision, recall and F1 of the foreground (cell) class.

    Attributes:
        precision: ``TP / (TP + FP)``, or 1 when there are no false positives.
        recall: ``TP / (TP + FN)``, or 1 when there are no false negatives.
        f1: ``2PR / (P + R)``, or 0 when both are 0.
    """

    precision: float
    recall: float
    f1: float


def pixel_mismatch(prob: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
                   ignore: npt.ArrayLike | None = None) -> float:
    """Fraction of annotated pixels where ``prob > threshold`` disagrees with ``truth > 0`` (any dimension).

    Args:
        prob: foreground probabilities (or a binary prediction).
        truth: ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        threshold: binarisation threshold (strict).
        ignore: optional boolean mask of further unannotated pixels.
    """
    p, fg, annotated = probabilities(prob, truth, ignore)
    wrong = ((p > threshold) != fg) & annotated
    return float(np.count_nonzero(wrong) / max(int(np.count_nonzero(annotated)), 1))


def pixel_scores(prob: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
                 ignore: npt.ArrayLike | None = None) -> PixelScores:
    """Precision, recall and F1 of ``prob > threshold`` against ``truth > 0``, counts pooled over annotated pixels.

    Args:
        prob: foreground probabilities (or a binary prediction).
        truth: ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        threshold: binarisation threshold (strict).
        ignore: optional boolean mask of further unannotated pixels.
    """
    p, fg, annotated = probabilities(prob, truth, ignore)
    return _scores(p[fg], p[annotated & ~fg], float(threshold))


def pixel_error(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
                ignore: npt.ArrayLike | None = None) -> float:
    """ISBI 2012 pixel error: ``1 - max F1`` over thresholds, cells positive, counts pooled over slices.

    Args:
        prob: foreground probabilities (or a binary prediction), 2D, 3D or a stack of slices.
        truth: ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: binarisation thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        ignore: optional boolean mask of further unannotated pixels.
    """
    return 1.0 - max(s.f1 for s in pixel_scores_sweep(prob, truth, thresholds, ignore=ignore))


def pixel_scores_sweep(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
                       ignore: npt.ArrayLike | None = None) -> list[PixelScores]:
    """:func:`pixel_scores` at each threshold, counts pooled over all annotated pixels of all slices.

    Args:
        prob: foreground probabilities (or a binary prediction), any dimension.
        truth: ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: binarisation thresholds (strict ``p > th``).
        ignore: optional boolean mask of further unannotated pixels.
    """
    p, fg, annotated = probabilities(prob, truth, ignore)
    cells, membrane = p[fg], p[annotated & ~fg]
    return [_scores(cells, membrane, float(th)) for th in check_thresholds(thresholds)]


def _scores(cells: np.ndarray, membrane: np.ndarray, threshold: float) -> PixelScores:
    """Scores from the probabilities at true-cell pixels and at true-membrane pixels."""
    tp = int(np.count_nonzero(cells > threshold))
    fn = cells.size - tp
    fp = int(np.count_nonzero(membrane > threshold))
    precision = tp / (tp + fp) if fp else 1.0
    recall = tp / (tp + fn) if fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return PixelScores(precision, recall, f1)
