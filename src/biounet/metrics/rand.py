"""Foreground-restricted Rand and information scores of the ISBI 2012 challenge (Arganda-Carreras et al. 2015).

Per 2D slice (a 3D input is a stack of slices), as Fiji's ``trainableSegmentation.metrics.RandError
.getForegroundRestrictedRandIndexStatsN2`` and ``VariationOfInformation.foregroundRestrictedVI`` compute them:

- Truth segments ``A`` are the 4-connected components of the annotated ``truth > 0``; predicted segments
  ``B`` are the 4-connected components of ``prob > th`` (labelled over the whole slice, ignored pixels
  included). Only annotated truth-foreground pixels count, and every predicted boundary pixel (0) there is a
  segment of its own (a singleton). Unannotated pixels (``IGNORE_INDEX`` or an ``ignore`` mask) are thus
  neither truth foreground nor counted; they still separate truth segments, and predicted segments still
  connect through them, so a prediction inside an ignored region can merge or split segments outside it.
- ``n_ij`` counts pixels in truth segment ``i`` and predicted segment ``j > 0``, ``n_i0`` those of ``i``
  predicted 0; ``a_i = sum_j n_ij + n_i0`` and ``b_j = sum_i n_ij``.
- ``S_AB = sum n_ij^2 + sum n_i0``, ``S_B = sum b_j^2 + sum n_i0``, ``S_A = sum a_i^2``; Rand precision
  ``S_AB / S_B`` (low when the prediction merges), recall ``S_AB / S_A`` (low when it splits),
  ``F = 2PR / (P + R)``. A slice without truth foreground has P = R = F = 1.
- The information score is ``2 I(A; B) / (H(A) + H(B))`` with the same restriction and singletons,
  natural logarithms, and 0 where either entropy is 0.

``rand_error`` pools the sums over the slices of a stack, as Fiji's ``getForegroundRestrictedRandIndexStats``
does (it adds the per-slice TP/FP/FN and takes the F-score of the totals) before
``getForegroundRestrictedRandIndexMaximalFScore`` takes the best threshold. ``v_rand`` and ``v_info`` (the
challenge's final measures) first thin the predicted boundaries with Fiji's watershed
(:mod:`biounet.metrics.thinning`) and average the per-slice scores. All three take the best threshold of a
sweep (default 0.0, 0.1, ..., 1.0, strict ``p > th``); :mod:`biounet.metrics.isbi` runs the whole
challenge protocol with one shared sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error as _skimage_adapted_rand_error

from biounet.metrics.thinning import fiji_thinning
from biounet.metrics.thresholds import ISBI_THRESHOLDS, as_slices, check_thresholds, probabilities

_FOUR = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class RandScores:
    """Foreground-restricted Rand precision, recall and F-score (``rand_error = 1 - f`` at the best threshold)."""

    precision: float
    recall: float
    f: float


@dataclass(frozen=True)
class VariationOfInformation:
    """Variation of information split into its two conditional entropies (nats).

    Attributes:
        split: ``H(B | A)``, the over-segmentation: truth segments the prediction breaks up (singletons included).
        merge: ``H(A | B)``, the under-segmentation: truth segments the prediction joins.
    """

    split: float
    merge: float

    @property
    def total(self) -> float:
        """``VI = H(A | B) + H(B | A)``."""
        return self.split + self.merge


@dataclass(frozen=True)
class AdaptedRandError:
    """scikit-image's adapted Rand error, with scikit-image's names for precision and recall."""

    error: float
    precision: float
    recall: float


@dataclass(frozen=True)
class RandFamily:
    """The ISBI 2012 segmentation scores of one prediction: lower error, higher scores are better."""

    rand_error: float
    v_rand: float
    v_info: float


def rand_scores(prob_or_binary: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
                ignore: npt.ArrayLike | None = None) -> RandScores:
    """Foreground-restricted Rand precision, recall and F at one threshold, sums pooled over slices.

    Args:
        prob_or_binary: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        threshold: binarisation threshold (strict ``p > threshold``).
        ignore: optional boolean mask of further unannotated pixels.
    """
    return pooled_rand(_sweep(prob_or_binary, truth, [threshold], thin=False, ignore=ignore)[0])


def rand_error(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
               ignore: npt.ArrayLike | None = None) -> float:
    """Foreground-restricted Rand error: ``1 - max F`` over thresholds, sums pooled over slices.

    This is the ISBI 2012 leaderboard's "Rand error" (0.0382 for the U-Net paper), pooled as Fiji pools it.

    Args:
        prob: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        ignore: optional boolean mask of further unannotated pixels.
    """
    return 1.0 - max(pooled_rand(tables).f for tables in _sweep(prob, truth, thresholds, thin=False, ignore=ignore))


def v_rand(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
           thin: bool = True, ignore: npt.ArrayLike | None = None) -> float:
    """V_rand: the foreground-restricted Rand F after boundary thinning, averaged per slice, best threshold.

    Args:
        prob: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        thin: thin predicted boundaries with Fiji's watershed first (see :func:`thin_boundaries`).
        ignore: optional boolean mask of further unannotated pixels.
    """
    return max(mean_rand_f(tables) for tables in _sweep(prob, truth, thresholds, thin=thin, ignore=ignore))


def v_info(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
           thin: bool = True, ignore: npt.ArrayLike | None = None) -> float:
    """V_info: ``2 I / (H(A) + H(B))`` after boundary thinning, averaged per slice, best threshold.

    Args:
        prob: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        thin: thin predicted boundaries with Fiji's watershed first (see :func:`thin_boundaries`).
        ignore: optional boolean mask of further unannotated pixels.
    """
    return max(mean_info_f(tables) for tables in _sweep(prob, truth, thresholds, thin=thin, ignore=ignore))


def rand_family(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
                ignore: npt.ArrayLike | None = None) -> RandFamily:
    """``rand_error``, ``v_rand`` and ``v_info`` together, thinning each binarisation once.

    Args:
        prob: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        ignore: optional boolean mask of further unannotated pixels.
    """
    plain = _sweep(prob, truth, thresholds, thin=False, ignore=ignore)
    thinned = _sweep(prob, truth, thresholds, thin=True, ignore=ignore)
    return RandFamily(
        rand_error=1.0 - max(pooled_rand(tables).f for tables in plain),
        v_rand=max(mean_rand_f(tables) for tables in thinned),
        v_info=max(mean_info_f(tables) for tables in thinned),
    )


def variation_of_information(prob_or_binary: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
                             ignore: npt.ArrayLike | None = None) -> VariationOfInformation:
    """Split and merge parts of the variation of information, foreground-restricted with singletons.

    The slices of a stack are pooled (their segments are distinct). Natural logarithms; note that
    ``skimage.metrics.variation_of_information`` uses base 2 and treats label 0 as an ordinary segment.

    Args:
        prob_or_binary: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        threshold: binarisation threshold (strict ``p > threshold``).
        ignore: optional boolean mask of further unannotated pixels.
    """
    table = ContingencyTable.concat(_sweep(prob_or_binary, truth, [threshold], thin=False, ignore=ignore)[0])
    h_a, h_b, h_ab = table.entropies()
    return VariationOfInformation(split=max(float(h_ab - h_a), 0.0), merge=max(float(h_ab - h_b), 0.0))


def adapted_rand_error(prob_or_binary: npt.ArrayLike, truth: npt.ArrayLike, threshold: float = 0.5, *,
                       ignore: npt.ArrayLike | None = None) -> AdaptedRandError:
    """scikit-image's adapted Rand error (SNEMI3D) of the 4-connected components; NOT :func:`rand_error`.

    It differs from the ISBI measure in three ways: predicted boundary pixels (label 0) inside the truth
    foreground form one segment instead of singletons; it counts pixel pairs (``n^2 - n``) rather than
    ``n^2``; and what it calls precision is normalised by the truth (``S_AB / S_A``, our recall) and its
    recall by the prediction. Slices of a stack are labelled separately and pooled.

    Args:
        prob_or_binary: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0; truth 0 and ``IGNORE_INDEX`` are ignored.
        threshold: binarisation threshold (strict ``p > threshold``).
        ignore: optional boolean mask of further unannotated pixels.
    """
    p, fg, _ = probabilities(prob_or_binary, truth, ignore)
    if not fg.any():
        raise ValueError("adapted Rand error is undefined without truth foreground")
    error, precision, recall = _skimage_adapted_rand_error(  # type: ignore[no-untyped-call]
        _label_slices(as_slices(fg)), _label_slices(as_slices(p > threshold)))
    return AdaptedRandError(float(error), float(precision), float(recall))


def thin_boundaries(binary: np.ndarray) -> np.ndarray:
    """Thins the boundaries (False) of a 2D binary prediction with Fiji's watershed (see :mod:`.thinning`).

    Args:
        binary: 2D boolean image, True = cell.

    Returns:
        The thinned image: True on the basins, False on the dams.
    """
    return np.asarray(fiji_thinning(binary)[0] > 0)


@dataclass(frozen=True)
class SliceTruth:
    """One truth slice: the flat indices of its annotated foreground and the segment id there."""

    where: np.ndarray
    ids: np.ndarray

    @classmethod
    def of(cls, foreground: np.ndarray) -> SliceTruth:
        """The truth segments of one slice.

        Args:
            foreground: 2D boolean image of annotated truth foreground (cells).
        """
        labels, _ = ndi.label(foreground, structure=_FOUR)
        where = np.flatnonzero(foreground)
        return cls(where, labels.ravel()[where].astype(np.int64))


@dataclass(frozen=True)
class ContingencyTable:
    """A sparse contingency table restricted to truth foreground.

    Attributes:
        a: truth segment sizes ``a_i``.
        b: nonzero predicted segment sizes ``b_j`` (j > 0).
        n: nonzero ``n_ij`` (j > 0).
        singletons: ``sum_i n_i0``.
    """

    a: np.ndarray
    b: np.ndarray
    n: np.ndarray
    singletons: int

    @classmethod
    def of(cls, truth: SliceTruth, labels: np.ndarray, count: int) -> ContingencyTable:
        """The table of one slice.

        Args:
            truth: the slice's truth segments.
            labels: predicted segment ids of the slice (0 = boundary), ids in ``1..count``.
            count: the largest predicted id.
        """
        pred = labels.ravel()[truth.where].astype(np.int64)
        inside = pred > 0
        ids, pred = truth.ids[inside], pred[inside]
        _, n = np.unique(ids * (count + 1) + pred, return_counts=True)
        b = np.bincount(pred, minlength=count + 1)
        return cls(np.bincount(truth.ids)[1:], b[b > 0], n, int(truth.ids.size - pred.size))

    @classmethod
    def concat(cls, tables: Sequence[ContingencyTable]) -> ContingencyTable:
        """One table of several slices (their segments are distinct).

        Args:
            tables: the slices' tables.
        """
        return cls(np.concatenate([t.a for t in tables]), np.concatenate([t.b for t in tables]),
                   np.concatenate([t.n for t in tables]), sum(t.singletons for t in tables))

    def rand_sums(self) -> tuple[int, int, int]:
        """``(S_AB, S_A, S_B)``."""
        return (int(self.n @ self.n) + self.singletons, int(self.a @ self.a), int(self.b @ self.b) + self.singletons)

    def entropies(self) -> tuple[float, float, float]:
        """``(H(A), H(B), H(A, B))`` in nats; each singleton is a segment of one pixel."""
        total = int(self.a.sum())
        if total == 0:
            return 0.0, 0.0, 0.0
        singles = float(self.singletons * np.log(total) / total)
        return _entropy(self.a, total), _entropy(self.b, total) + singles, _entropy(self.n, total) + singles

    def rand(self) -> RandScores:
        """The Rand precision, recall and F of this table."""
        return _rand(*self.rand_sums())

    def info_score(self) -> float:
        """``2 I(A; B) / (H(A) + H(B))``, 0 where either entropy is 0."""
        h_a, h_b, h_ab = self.entropies()
        return 0.0 if h_a == 0.0 or h_b == 0.0 else 2 * (h_a + h_b - h_ab) / (h_a + h_b)


def slice_tables(binaries: Sequence[np.ndarray], truths: Sequence[SliceTruth], *,
                 thin: bool) -> list[ContingencyTable]:
    """The contingency table of each slice of one binarisation.

    Args:
        binaries: 2D boolean predictions (True = cell), one per slice.
        truths: the slices' truth segments.
        thin: segment with Fiji's thinning (basins of :func:`.fiji_thinning`) instead of 4-connected components.
    """
    tables = []
    for binary, truth in zip(binaries, truths, strict=True):
        labels, count = fiji_thinning(binary) if thin else ndi.label(binary, structure=_FOUR)
        tables.append(ContingencyTable.of(truth, np.asarray(labels), int(count)))
    return tables


def _entropy(counts: np.ndarray, total: int) -> float:
    # p = 1 gives exactly 0, so a single segment has entropy exactly 0 (the V_info convention needs that);
    # sorting makes equal multisets of sizes give bit-equal entropies, so a perfect prediction scores exactly 1.
    p = np.sort(counts) / total
    return float(-(p * np.log(p)).sum())


def _rand(s_ab: int, s_a: int, s_b: int) -> RandScores:
    precision = s_ab / s_b if s_b else 1.0
    recall = s_ab / s_a if s_a else 1.0
    return RandScores(precision, recall, 2 * precision * recall / (precision + recall))


def pooled_rand(tables: Sequence[ContingencyTable]) -> RandScores:
    """Rand scores of the sums pooled over slices (Fiji adds the per-slice TP/FP/FN).

    Args:
        tables: one table per slice.
    """
    sums = [t.rand_sums() for t in tables]
    return _rand(*(sum(column) for column in zip(*sums, strict=True)))


def mean_rand_f(tables: Sequence[ContingencyTable]) -> float:
    """The per-slice Rand F averaged over slices.

    Args:
        tables: one table per slice.
    """
    return float(np.mean([t.rand().f for t in tables]))


def mean_info_f(tables: Sequence[ContingencyTable]) -> float:
    """The per-slice information score averaged over slices.

    Args:
        tables: one table per slice.
    """
    return float(np.mean([t.info_score() for t in tables]))


def _sweep(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike, thin: bool,
           ignore: npt.ArrayLike | None) -> list[list[ContingencyTable]]:
    """Contingency tables per threshold, per slice."""
    p, fg, _ = probabilities(prob, truth, ignore)
    slices = as_slices(p)
    truths = [SliceTruth.of(f) for f in as_slices(fg)]
    tables: list[list[ContingencyTable]] = []
    previous: list[np.ndarray] = []
    for th in check_thresholds(thresholds):
        binaries = [s > th for s in slices]
        if tables and all(np.array_equal(b, c) for b, c in zip(binaries, previous, strict=True)):
            # Binary predictions give the same image at most thresholds; reuse its tables.
            tables.append(tables[-1])
            continue
        previous = binaries
        tables.append(slice_tables(binaries, truths, thin=thin))
    return tables


def _label_slices(binary: np.ndarray) -> np.ndarray:
    """4-connected components of each slice of a ``(slices, H, W)`` stack, with ids distinct across slices."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = _FOUR
    labels, _ = ndi.label(binary, structure=in_plane)
    return np.asarray(labels)
