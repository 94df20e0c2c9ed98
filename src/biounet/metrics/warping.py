"""Warping error (Jain et al., CVPR 2010): pixel mismatches that remain after warping the truth topologically.

The truth of each 2D slice is warped towards the binarised prediction by simple-point flips
(:mod:`.topology`), so boundary shifts cost nothing and only topological disagreements (splits, merges,
added or deleted objects and holes) remain. The errors over thresholds come from a
:class:`~biounet.metrics.sweep.ThresholdSweep`, which warps each slice once per threshold.

Unannotated truth pixels (``IGNORE_INDEX`` or an ``ignore`` mask) are fixed background of the truth: they
are never mismatches, so they are never flipped and never counted, and the error is per annotated pixel.
Flipping them would let the unknown region join or split truth objects (and make the score depend on the
prediction there); holding them fixed keeps the annotated topology, at the price that a truth object cannot
grow into an ignored region. The prediction inside an ignored region does not affect the score.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from biounet.metrics.sweep import ThresholdSweep
from biounet.metrics.thresholds import ISBI_THRESHOLDS, probabilities
from biounet.metrics.topology import warp_slice


def warp_truth(prob: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
               ignore: npt.ArrayLike | None = None) -> np.ndarray:
    """The truth of one 2D slice warped towards ``prob > threshold`` by simple-point flips.

    Args:
        prob: 2D foreground probabilities (or a binary prediction).
        truth: 2D ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        threshold: binarisation threshold (strict).
        ignore: optional boolean mask of further unannotated pixels.

    Returns:
        The warped truth, a boolean image of the slice's shape, topologically equivalent to the annotated
        ``truth > 0``.
    """
    p, fg, annotated = probabilities(prob, truth, ignore)
    if p.ndim != 2:
        raise ValueError(f"warp_truth takes one 2D slice, got shape {p.shape}")
    return warp_slice(p, fg, annotated, float(threshold))[1:-1, 1:-1]


def warping_error(prob: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
                  ignore: npt.ArrayLike | None = None) -> float:
    """Classic warping error: mismatches left after warping, per annotated pixel, averaged over slices.

    Args:
        prob: foreground probabilities (or a binary prediction), 2D or a stack of slices.
        truth: ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        threshold: binarisation threshold (strict ``p > threshold``).
        ignore: optional boolean mask of further unannotated pixels.
    """
    return ThresholdSweep(prob, truth, ignore=ignore).warping_error(threshold)


def split_merge_warping_error(prob: npt.ArrayLike, truth: npt.ArrayLike,
                              thresholds: npt.ArrayLike = ISBI_THRESHOLDS[:10], *,
                              ignore: npt.ArrayLike | None = None) -> float:
    """ISBI 2012 leaderboard warping error: only mismatches that split or merge objects count.

    After warping, a remaining mismatch merges when it is background in the warped truth and its
    8-neighbourhood holds two or more 4-connected objects of the warped truth; it splits when it is
    foreground and, without it, its 8-neighbourhood holds two or more objects. Added or deleted objects and
    holes are not counted. Per pixel, averaged over slices, minimised over thresholds.

    Args:
        prob: foreground probabilities (or a binary prediction), 2D or a stack of slices.
        truth: ground-truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 0.9.
        ignore: optional boolean mask of further unannotated pixels.
    """
    return ThresholdSweep(prob, truth, ignore=ignore).split_merge_warping_error(thresholds).value
