"""Segmentation metrics: overlap (Dice, IoU), ISBI 2012 pixel error, foreground-restricted Rand and
information scores, and the warping error. ISBI convention: 1 = cell (foreground), 0 = membrane."""

from biounet.metrics.overlap import OverlapScores, dice_iou
from biounet.metrics.pixel import PixelScores, pixel_error, pixel_mismatch, pixel_scores
from biounet.metrics.rand import (
    AdaptedRandError,
    RandFamily,
    RandScores,
    VariationOfInformation,
    adapted_rand_error,
    rand_error,
    rand_family,
    rand_scores,
    thin_boundaries,
    v_info,
    v_rand,
    variation_of_information,
)
from biounet.metrics.thresholds import ISBI_THRESHOLDS
from biounet.metrics.warping import split_merge_warping_error, warp_truth, warping_error

__all__ = [
    "ISBI_THRESHOLDS",
    "AdaptedRandError",
    "OverlapScores",
    "PixelScores",
    "RandFamily",
    "RandScores",
    "VariationOfInformation",
    "adapted_rand_error",
    "dice_iou",
    "pixel_error",
    "pixel_mismatch",
    "pixel_scores",
    "rand_error",
    "rand_family",
    "rand_scores",
    "split_merge_warping_error",
    "thin_boundaries",
    "v_info",
    "v_rand",
    "variation_of_information",
    "warp_truth",
    "warping_error",
]
