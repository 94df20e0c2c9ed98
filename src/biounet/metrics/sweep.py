"""One threshold sweep shared by every ISBI 2012 metric of a prediction: binarise, label, thin and warp once.

Each metric of the ISBI suite (pixel error, Rand error, V_rand, V_info, warping errors) binarises the same
probabilities at the same thresholds. :class:`ThresholdSweep` does each step at most once per threshold
and caches it: the per-slice contingency tables of the plain and of the thinned segmentation, and the warped
truth of each slice. A threshold whose binarisation equals the previous one's (every threshold for a binary
prediction) reuses its results. It is the one sweep of the metrics: the module-level functions of :mod:`.rand`
and :mod:`.warping` compute through it, and :mod:`.isbi` and :mod:`.suite` share one per prediction. It
stands on the per-slice pieces below it: contingency tables (:mod:`.contingency`), pixel counts
(:mod:`.pixel`) and the warped truth (:mod:`.topology`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from biounet.metrics.contingency import (
    ContingencyTable,
    SliceTruth,
    mean_info_f,
    mean_rand_f,
    pooled_rand,
    slice_tables,
)
from biounet.metrics.pixel import pixel_scores_sweep
from biounet.metrics.thresholds import ISBI_THRESHOLDS, as_slices, check_thresholds, probabilities
from biounet.metrics.topology import remaining_mismatches, split_merge_fraction, warp_slice


@dataclass(frozen=True)
class Best:
    """The best value of a sweep and where it was reached.

    Attributes:
        value: the score (an error: the lowest; a score: the highest).
        threshold: the first threshold that reaches it.
        index: that threshold's position in the sweep.
    """

    value: float
    threshold: float
    index: int


class ThresholdSweep:
    """Cached per-threshold work for the ISBI metrics of one prediction (a 2D slice or a stack of slices).

    Args:
        prob: foreground probabilities or a binary prediction (1 = cell), 2D or ``(slices, H, W)``.
        truth: truth labels, foreground where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: the sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        ignore: optional boolean mask of further unannotated pixels.
    """

    def __init__(self, prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS,
                 ignore: npt.ArrayLike | None = None) -> None:
        p, fg, annotated = probabilities(prob, truth, ignore)
        self.prob, self.foreground, self.annotated = p, fg, annotated
        self.slices = as_slices(p)
        self.truth_slices = as_slices(fg)
        self.annotated_slices = as_slices(annotated)
        self.thresholds = check_thresholds(thresholds)
        self._tables: dict[tuple[int, bool], list[ContingencyTable]] = {}
        self._warped: dict[float, list[np.ndarray]] = {}

    @cached_property
    def _truths(self) -> list[SliceTruth]:
        return [SliceTruth.of(f) for f in self.truth_slices]

    @cached_property
    def _representative(self) -> list[int]:
        """For each threshold, the first threshold with the same binarisation of every slice."""
        same: list[int] = []
        for k, th in enumerate(self.thresholds):
            if k and all(np.array_equal(s > th, s > self.thresholds[k - 1]) for s in self.slices):
                same.append(same[-1])
            else:
                same.append(k)
        return same

    def binaries(self, k: int) -> list[np.ndarray]:
        """The binarised slices at threshold ``k``.

        Args:
            k: index into the sweep's thresholds.
        """
        return [s > self.thresholds[k] for s in self.slices]

    def tables(self, k: int, thin: bool) -> list[ContingencyTable]:
        """Per-slice contingency tables of the 4-connected components at threshold ``k``, computed once.

        Args:
            k: index into the sweep's thresholds.
            thin: after Fiji's thinning (V_rand, V_info) or as binarised (Rand error).
        """
        key = (self._representative[k], thin)
        if key not in self._tables:
            self._tables[key] = slice_tables(self.binaries(key[0]), self._truths, thin=thin)
        return self._tables[key]

    def warped(self, threshold: float) -> list[np.ndarray]:
        """The padded warped truth of each slice towards ``prob > threshold``.

        Args:
            threshold: binarisation threshold (strict).
        """
        if threshold not in self._warped:
            self._warped[threshold] = [warp_slice(s, t, a, threshold) for s, t, a in
                                       zip(self.slices, self.truth_slices, self.annotated_slices, strict=True)]
        return self._warped[threshold]

    def pixel_error(self) -> Best:
        """ISBI pixel error: ``1 - max F1``, counts pooled over annotated pixels of all slices."""
        errors = [1.0 - s.f1 for s in pixel_scores_sweep(self.prob, self.foreground.astype(np.int8),
                                                          self.thresholds, ignore=~self.annotated)]
        return self._lowest(errors)

    def rand_error(self) -> Best:
        """Foreground-restricted Rand error: ``1 - max F``, sums pooled over slices (Fiji's pooling)."""
        return pooled_rand_error([self])

    def v_rand(self, thin: bool = True) -> Best:
        """V_rand: the per-slice Rand F after thinning, averaged over slices, best threshold.

        Args:
            thin: thin the predicted boundaries with Fiji's watershed first, as the challenge does.
        """
        return self._highest([mean_rand_f(self.tables(k, thin=thin)) for k in range(len(self.thresholds))])

    def v_info(self, thin: bool = True) -> Best:
        """V_info: the per-slice information score after thinning, averaged over slices, best threshold.

        Args:
            thin: thin the predicted boundaries with Fiji's watershed first, as the challenge does.
        """
        return self._highest([mean_info_f(self.tables(k, thin=thin)) for k in range(len(self.thresholds))])

    def warping_error(self, threshold: float = 0.5) -> float:
        """Classic warping error at one threshold, per annotated pixel, averaged over slices.

        Args:
            threshold: binarisation threshold (strict).
        """
        warped = self.warped(float(threshold))
        return float(np.mean([remaining_mismatches(w, s, a, float(threshold)) for w, s, a in
                              zip(warped, self.slices, self.annotated_slices, strict=True)]))

    def split_merge_warping_error(self, thresholds: npt.ArrayLike = ISBI_THRESHOLDS[:10]) -> Best:
        """ISBI leaderboard warping error (splits and mergers only), averaged over slices, lowest over thresholds.

        Args:
            thresholds: its own sweep; default 0.0, 0.1, ..., 0.9 as on the leaderboard.
        """
        ths = check_thresholds(thresholds)
        errors = []
        for th in ths.tolist():
            warped = self.warped(th)
            errors.append(float(np.mean([split_merge_fraction(w, s, a, th) for w, s, a in
                                         zip(warped, self.slices, self.annotated_slices, strict=True)])))
        k = int(np.argmin(errors))
        return Best(errors[k], float(ths[k]), k)

    def _lowest(self, values: list[float]) -> Best:
        k = int(np.argmin(values))
        return Best(values[k], float(self.thresholds[k]), k)

    def _highest(self, values: list[float]) -> Best:
        k = int(np.argmax(values))
        return Best(values[k], float(self.thresholds[k]), k)


def pooled_rand_error(sweeps: Sequence[ThresholdSweep]) -> Best:
    """The challenge's Rand error over several sweeps (images or stacks of any shapes): ONE threshold for
    all of them, the per-slice Rand sums pooled over every slice of every sweep, as Fiji pools a stack.

    Args:
        sweeps: sweeps over the same thresholds.

    Raises:
        ValueError: if there are no sweeps or their thresholds differ.
    """
    if not sweeps:
        raise ValueError("no predictions to pool")
    thresholds = sweeps[0].thresholds
    if any(not np.array_equal(s.thresholds, thresholds) for s in sweeps):
        raise ValueError("the sweeps use different thresholds")
    errors = [1.0 - pooled_rand([t for s in sweeps for t in s.tables(k, thin=False)]).f
              for k in range(len(thresholds))]
    k = int(np.argmin(errors))
    return Best(errors[k], float(thresholds[k]), k)
