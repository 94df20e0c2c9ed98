"""The ISBI 2012 challenge protocol on a stack: one threshold for all slices, as Fiji scores a submission.

Fiji's Trainable Segmentation (``trainableSegmentation.metrics``) scores a whole stack at each threshold
of ``for (th = 0.0; th <= 1.0; th += 0.1)`` and keeps the best threshold for the stack, never one per
slice:

- *V_rand* (``RandError.getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true)``) and *V_info*
  (``VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0, 0.1)``), the challenge's final measures:
  per slice, the foreground-restricted Rand F-score (information score) of the thinned binarisation; the
  stack's value at a threshold is the mean over slices; the best threshold maximises that mean.
- *Rand error* (``RandError.getForegroundRestrictedRandIndexMaximalFScore``): the per-slice TP/FP/FN of the
  foreground-restricted Rand index are added over the slices and the F-score of the totals is taken (pooled,
  not averaged; see the note on ``getRandIndexStats``); the error is ``1 - `` the best F.
- *Pixel error* (``PixelError.getPixelErrorMaximalFScore``): ``1 -`` the best F1 of the pixel counts
  pooled over the stack.
- *Warping error* (``WarpingError.getMinimumSplitsAndMergersErrorValue``, thresholds 0.0, ..., 0.9): the
  split and merge mismatches per pixel, averaged over slices, lowest over thresholds.

Unannotated pixels (``IGNORE_INDEX`` in the truth, or an ``ignore`` mask) are left out as each metric
module documents; Fiji has no such notion, and without them the scores are Fiji's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from biounet.errors import BiounetError
from biounet.metrics.sweep import ThresholdSweep
from biounet.metrics.thresholds import ISBI_THRESHOLDS


@dataclass(frozen=True)
class IsbiScores:
    """The ISBI 2012 challenge scores of one stack, each at its own best threshold for the whole stack.

    Attributes:
        v_rand: foreground-restricted Rand F after thinning, mean over slices (higher is better).
        v_rand_threshold: the threshold that maximises it.
        v_rand_per_slice: each slice's value at that threshold.
        v_info: foreground-restricted information score after thinning, mean over slices (higher is better).
        v_info_threshold: the threshold that maximises it.
        v_info_per_slice: each slice's value at that threshold.
        rand_error: ``1 - F`` of the foreground-restricted Rand index, sums pooled over slices.
        rand_error_threshold: the threshold that minimises it.
        rand_error_per_slice: each slice's own ``1 - F`` at that threshold (their mean is not ``rand_error``).
        pixel_error: ``1 - F1`` of the pixels, counts pooled over slices.
        pixel_error_threshold: the threshold that minimises it.
        warping_error: split and merge mismatches per pixel, mean over slices (None when not computed).
        warping_error_threshold: the threshold (0.0, ..., 0.9) that minimises it (None when not computed).
    """

    v_rand: float
    v_rand_threshold: float
    v_rand_per_slice: tuple[float, ...]
    v_info: float
    v_info_threshold: float
    v_info_per_slice: tuple[float, ...]
    rand_error: float
    rand_error_threshold: float
    rand_error_per_slice: tuple[float, ...]
    pixel_error: float
    pixel_error_threshold: float
    warping_error: float | None
    warping_error_threshold: float | None


def isbi_challenge_scores(probabilities: Sequence[np.ndarray] | np.ndarray,
                          truths: Sequence[np.ndarray] | np.ndarray, *,
                          thresholds: npt.ArrayLike = ISBI_THRESHOLDS,
                          ignore: Sequence[np.ndarray] | np.ndarray | None = None,
                          warping: bool = True) -> IsbiScores:
    """Scores a stack as the ISBI 2012 challenge does: one threshold for all slices, per measure.

    Args:
        probabilities: cell (foreground) probabilities, one 2D slice per element or a ``(slices, H, W)`` array
            (a single 2D array is one slice); a binary prediction (1 = cell) works too.
        truths: truth label slices of the same shapes, cell where > 0, unannotated where ``IGNORE_INDEX``
            (e.g. 0/255 ISBI labels or biounet class maps).
        thresholds: the sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0. The warping error sweeps
            the thresholds below 1.0 of it, as the leaderboard did.
        ignore: optional boolean masks of further unannotated pixels, shaped like ``truths``.
        warping: also compute the splits-and-mergers warping error (the slowest measure).

    Raises:
        BiounetError: if the slices are not 2D, differ in number or shape, or a prediction holds NaN.
    """
    prob = _stack(probabilities, "probabilities")
    truth = _stack(truths, "truths")
    mask = None if ignore is None else _stack(ignore, "ignore masks").astype(bool)
    if prob.shape != truth.shape or (mask is not None and mask.shape != truth.shape):
        shapes = ", ".join(str(a.shape) for a in (prob, truth, mask) if a is not None)
        raise BiounetError(f"the prediction, truth (and ignore) stacks differ in shape: {shapes}")
    try:
        sweep = ThresholdSweep(prob, truth, thresholds, ignore=mask)
    except ValueError as exc:
        raise BiounetError(f"cannot score: {exc}") from exc

    v_rand, v_info, rand, pixel = sweep.v_rand(), sweep.v_info(), sweep.rand_error(), sweep.pixel_error()
    warp = None
    if warping:
        below_one = sweep.thresholds[sweep.thresholds < 1.0]
        warp = sweep.split_merge_warping_error(below_one if below_one.size else sweep.thresholds)
    return IsbiScores(
        v_rand=v_rand.value, v_rand_threshold=v_rand.threshold,
        v_rand_per_slice=tuple(t.rand().f for t in sweep.tables(v_rand.index, thin=True)),
        v_info=v_info.value, v_info_threshold=v_info.threshold,
        v_info_per_slice=tuple(t.info_score() for t in sweep.tables(v_info.index, thin=True)),
        rand_error=rand.value, rand_error_threshold=rand.threshold,
        rand_error_per_slice=tuple(1.0 - t.rand().f for t in sweep.tables(rand.index, thin=False)),
        pixel_error=pixel.value, pixel_error_threshold=pixel.threshold,
        warping_error=None if warp is None else warp.value,
        warping_error_threshold=None if warp is None else warp.threshold,
    )


def _stack(slices: Sequence[np.ndarray] | np.ndarray, what: str) -> np.ndarray:
    """A ``(slices, H, W)`` array from a list of 2D slices, a 3D array or one 2D slice."""
    if isinstance(slices, np.ndarray):
        array = slices[None] if slices.ndim == 2 else slices
    else:
        if len(slices) == 0:
            raise BiounetError(f"no {what} to score")
        shapes = {np.shape(s) for s in slices}
        if len(shapes) != 1:
            raise BiounetError(f"the {what} differ in shape: {sorted(shapes)}")
        array = np.stack([np.asarray(s) for s in slices])
    if array.ndim != 3 or array.shape[0] == 0:
        raise BiounetError(f"{what} must be 2D slices, got shape {array.shape}")
    return array
