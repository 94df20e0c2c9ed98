"""Segmentation metrics. ISBI convention: 1 = cell (foreground), 0 = membrane; truth pixels equal to
``IGNORE_INDEX`` are left out of every metric. Modules, from the ground up (each imports only those above it):

- ``thresholds``: the ISBI threshold list, binarisation, stacks of 2D slices, unannotated pixels.
- ``thinning``: Fiji's watershed thinning of a binarised slice (before V_rand and V_info).
- ``contingency``: per-slice contingency tables of the foreground-restricted Rand and information scores.
- ``topology``: warping one truth slice towards a prediction by simple-point flips.
- ``pixel``: pixel mismatch, pixel precision/recall/F1 and the ISBI pixel error.
- ``overlap``: Dice and IoU per class.
- ``surface``: surface distances (HD95, average surface distance, surface Dice).
- ``instances``: instance matching (AP, F1, PQ, DSB 2018 score, StarDist's pooled ``matching_dataset``).
- ``sweep``: :class:`ThresholdSweep`, the one threshold sweep shared by the ISBI metrics of a prediction.
- ``rand``: Rand error, V_rand, V_info, variation of information, scikit-image's adapted Rand error.
- ``warping``: the warping errors (classic, and splits and mergers only).
- ``isbi``: :func:`isbi_challenge_scores`, the challenge's stack protocol (one threshold per stack).
- ``suite``: metrics by name over a (prediction, truth) pair, as evaluation and validation report them.
- ``pairs``: prediction and truth files paired by stem, their label convention resolved, read into pairs.
- ``evaluate``: :func:`biounet.metrics.evaluate.evaluate`, scoring prediction files against truth files
  (``biounet evaluate``); import it as a submodule (it reads files, so this package does not load it).
"""

from biounet.metrics.contingency import RandScores
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
