"""Foreground-restricted Rand and information scores of the ISBI 2012 challenge (Arganda-Carreras et al. 2015).

Per 2D slice (a 3D input is a stack of slices), from the contingency tables of :mod:`.contingency` (which
defines the segments, the singletons and the sums). Unannotated pixels (``IGNORE_INDEX`` or an ``ignore``
mask) are neither truth foreground nor counted; they still separate truth segments, and predicted segments
still connect through them, so a prediction inside an ignored region can merge or split segments outside it.

``rand_error`` pools the sums over the slices of a stack, as Fiji's ``getForegroundRestrictedRandIndexStats``
does (it adds the per-slice TP/FP/FN and takes the F-score of the totals) before
``getForegroundRestrictedRandIndexMaximalFScore`` takes the best threshold. ``v_rand`` and ``v_info`` (the
challenge's final measures) first thin the predicted boundaries with Fiji's watershed
(:mod:`biounet.metrics.thinning`) and average the per-slice scores. All three take the best threshold of a
:class:`~biounet.metrics.sweep.ThresholdSweep` (default 0.0, 0.1, ..., 1.0, strict ``p > th``);
:mod:`biounet.metrics.isbi` runs the whole challenge protocol with one shared sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error as _skimage_adapted_rand_error

from biounet.metrics.contingency import FOUR, ContingencyTable, RandScores, pooled_rand
from biounet.metrics.sweep import ThresholdSweep
from biounet.metrics.thinning import fiji_thinning
from biounet.metrics.thresholds import ISBI_THRESHOLDS, as_slices, probabilities


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
    return pooled_rand(ThresholdSweep(prob_or_binary, truth, [threshold], ignore=ignore).tables(0, thin=False))


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
    return ThresholdSweep(prob, truth, thresholds, ignore=ignore).rand_error().value


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
    return ThresholdSweep(prob, truth, thresholds, ignore=ignore).v_rand(thin=thin).value


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
    return ThresholdSweep(prob, truth, thresholds, ignore=ignore).v_info(thin=thin).value


def rand_family(prob: npt.ArrayLike, truth: npt.ArrayLike, thresholds: npt.ArrayLike = ISBI_THRESHOLDS, *,
                ignore: npt.ArrayLike | None = None) -> RandFamily:
    """``rand_error``, ``v_rand`` and ``v_info`` together, thinning each binarisation once.

    Args:
        prob: foreground probabilities or a binary prediction (1 = cell), 2D or a stack of slices.
        truth: ground-truth labels, foreground (cell) where > 0, unannotated where ``IGNORE_INDEX``.
        thresholds: thresholds to sweep (strict ``p > th``); default 0.0, 0.1, ..., 1.0.
        ignore: optional boolean mask of further unannotated pixels.
    """
    sweep = ThresholdSweep(prob, truth, thresholds, ignore=ignore)
    return RandFamily(rand_error=sweep.rand_error().value, v_rand=sweep.v_rand().value, v_info=sweep.v_info().value)


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
    tables = ThresholdSweep(prob_or_binary, truth, [threshold], ignore=ignore).tables(0, thin=False)
    table = ContingencyTable.concat(tables)
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



def _label_slices(binary: np.ndarray) -> np.ndarray:
    """4-connected components of each slice of a ``(slices, H, W)`` stack, with ids distinct across slices."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = FOUR
    labels, _ = ndi.label(binary, structure=in_plane)
    return np.asarray(labels)
