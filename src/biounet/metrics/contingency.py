"""Contingency tables of the ISBI 2012 foreground-restricted Rand and information scores, per 2D slice.

As Fiji's ``trainableSegmentation.metrics.RandError.getForegroundRestrictedRandIndexStatsN2`` and
``VariationOfInformation.foregroundRestrictedVI`` define them:

- Truth segments ``A`` are the 4-connected components of the annotated ``truth > 0``; predicted segments
  ``B`` are the 4-connected components of ``prob > th`` (labelled over the whole slice, ignored pixels
  included), or the basins of Fiji's thinning. Only annotated truth-foreground pixels count, and every
  predicted boundary pixel (0) there is a segment of its own (a singleton).
- ``n_ij`` counts pixels in truth segment ``i`` and predicted segment ``j > 0``, ``n_i0`` those of ``i``
  predicted 0; ``a_i = sum_j n_ij + n_i0`` and ``b_j = sum_i n_ij``.
- ``S_AB = sum n_ij^2 + sum n_i0``, ``S_B = sum b_j^2 + sum n_i0``, ``S_A = sum a_i^2``; Rand precision
  ``S_AB / S_B`` (low when the prediction merges), recall ``S_AB / S_A`` (low when it splits),
  ``F = 2PR / (P + R)``. A slice without truth foreground has P = R = F = 1.
- The information score is ``2 I(A; B) / (H(A) + H(B))`` with the same restriction and singletons,
  natural logarithms, and 0 where either entropy is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from biounet.metrics.thinning import fiji_thinning

FOUR = ndi.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class RandScores:
    """Foreground-restricted Rand precision, recall and F-score (``rand_error = 1 - f`` at the best threshold)."""

    precision: float
    recall: float
    f: float



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
        labels, _ = ndi.label(foreground, structure=FOUR)
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
        labels, count = fiji_thinning(binary) if thin else ndi.label(binary, structure=FOUR)
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

