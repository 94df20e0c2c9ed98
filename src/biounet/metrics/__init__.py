"""Segmentation metrics: overlap (Dice, IoU), ISBI 2012 pixel error, foreground-restricted Rand and
information scores (with Fiji's thinning), the warping error, surface distances and instance matching.
ISBI convention: 1 = cell (foreground), 0 = membrane. :func:`isbi_challenge_scores` runs the challenge's
stack protocol; truth pixels equal to ``IGNORE_INDEX`` are left out of every metric."""

from biounet.metrics.instances import (
    DSB2018_THRESHOLDS,
    InstanceScores,
    dsb2018_score,
    instance_scores,
    instance_scores_sweep,
    mean_dsb2018_score,
)
from biounet.metrics.isbi import IsbiScores, isbi_challenge_scores
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
from biounet.metrics.surface import ClassSurfaceScores, SurfaceScores, surface_distances, surface_distances_per_class
from biounet.metrics.sweep import ThresholdSweep
from biounet.metrics.thinning import fiji_thinning
from biounet.metrics.thresholds import ISBI_THRESHOLDS
from biounet.metrics.warping import split_merge_warping_error, warp_truth, warping_error

__all__ = [
    "DSB2018_THRESHOLDS",
    "ISBI_THRESHOLDS",
    "AdaptedRandError",
    "ClassSurfaceScores",
    "InstanceScores",
    "IsbiScores",
    "OverlapScores",
    "PixelScores",
    "RandFamily",
    "RandScores",
    "SurfaceScores",
    "ThresholdSweep",
    "VariationOfInformation",
    "adapted_rand_error",
    "dice_iou",
    "dsb2018_score",
    "fiji_thinning",
    "instance_scores",
    "instance_scores_sweep",
    "isbi_challenge_scores",
    "mean_dsb2018_score",
    "pixel_error",
    "pixel_mismatch",
    "pixel_scores",
    "rand_error",
    "rand_family",
    "rand_scores",
    "split_merge_warping_error",
    "surface_distances",
    "surface_distances_per_class",
    "thin_boundaries",
    "v_info",
    "v_rand",
    "variation_of_information",
    "warp_truth",
    "warping_error",
]
