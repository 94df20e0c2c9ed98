"""Tuning an instance model's post-processing on the validation images, as StarDist's
``optimize_thresholds`` does: the seed and foreground thresholds and the minimum object size that give the
highest accuracy@0.5 (TP / (TP + FP + FN), matches pooled over all images)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biounet.infer.instances import instances_from_probabilities, seeded
from biounet.metrics.instances import accuracy_by_min_size, matching_dataset
from biounet.models.config import OutputKind
from biounet.models.instance_params import InstanceParams
from biounet.models.object_size import RANGE_PERCENTILES, image_median_sizes

SEEDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
FOREGROUNDS = (0.3, 0.4, 0.5, 0.6, 0.7)
# The coarse grid a validation during training searches (every minimum size included): the checkpoint is
# chosen by about the accuracy the end-of-run search will find, not by the defaults' (on DSB 2018 a model
# scored 0.36 at the defaults and 0.58 tuned), for a fifth of the search's cost.
VALIDATION_SEEDS = (0.3, 0.5, 0.7)
VALIDATION_FOREGROUNDS = (0.5, 0.7)
# Minimum object sizes, as fractions of the objects' size in an image of small objects: the 10th percentile,
# over the tuning images, of each image's median object size. Fractions of the median over all objects (the
# rule before) let a generalist drop the objects of whole images: the 600-image nuclei model tuned 49 px,
# 0.2x its validation objects' median, which dropped 8 of the 33 nuclei (21 to 43 px) of a test-split image.
MIN_SIZE_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3)


@dataclass(frozen=True)
class Tuned:
    """The best post-processing found and its score.

    Attributes:
        params: the chosen settings.
        accuracy: their pooled accuracy@0.5 on the tuning images.
        default_accuracy: the accuracy of the default settings, for comparison.
    """

    params: InstanceParams
    accuracy: float
    default_accuracy: float


def tune_instance_params(probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                         ignores: Sequence[np.ndarray | None] | None = None, output: OutputKind = "classes",
                         seeds: Sequence[float] = SEEDS, foregrounds: Sequence[float] = FOREGROUNDS) -> Tuned:
    """The grid of ``seeds`` x ``foregrounds`` x minimum sizes searched for the best accuracy@0.5.

    The minimum sizes are :data:`MIN_SIZE_FRACTIONS` of :func:`small_object_size`, so that the objects of an
    image whose objects are smaller than most are kept.

    Ties go to the earlier grid point; a two-class model has no seed threshold to tune. A
    foreground/distance model's seed threshold is one on its normalised distance, searched over the same
    grid.

    Args:
        probabilities: ``(C, *S)`` probabilities per image.
        truths: true object ids per image.
        ignores: per image, an optional mask of unannotated pixels.
        output: the model's ``UNetConfig.output``: what the channels mean.
        seeds: the seed thresholds searched (:data:`SEEDS`; :data:`VALIDATION_SEEDS` during training).
        foregrounds: the foreground thresholds searched.
    """
    reference = small_object_size(truths)
    min_sizes = sorted({int(f * reference) for f in MIN_SIZE_FRACTIONS})
    if not seeded(probabilities[0].shape[0], output):
        seeds = (InstanceParams().seed,)

    def accuracy(ids: Sequence[np.ndarray]) -> float:
        return matching_dataset(ids, truths, (0.5,), ignores=ignores)[0].accuracy

    default = accuracy([instances_from_probabilities(p, output=output) for p in probabilities])
    best = Tuned(InstanceParams(), default, default)
    for seed, foreground in itertools.product(seeds, foregrounds):
        grown = [instances_from_probabilities(p, InstanceParams(seed, foreground), output) for p in probabilities]
        # One IoU table per image scores every minimum size.
        scores = accuracy_by_min_size(grown, truths, min_sizes, ignores=ignores)
        for min_size, score in zip(min_sizes, scores, strict=True):
            if score > best.accuracy:
                best = Tuned(InstanceParams(seed, foreground, min_size), score, default)
    return best


def small_object_size(truths: Sequence[np.ndarray]) -> float:
    """The size in pixels of the objects of an image of small objects: the lower of
    :data:`~biounet.models.object_size.RANGE_PERCENTILES` over the images (those with objects) of each one's
    median object size; 0 without objects."""
    medians = image_median_sizes(truths)
    return float(np.percentile(medians, RANGE_PERCENTILES[0])) if medians.size else 0.0


def grid_points(seeds: Sequence[float] = SEEDS, foregrounds: Sequence[float] = FOREGROUNDS) -> int:
    """How many times a search makes and matches a validation's objects: once per grid point and once for
    the defaults (every minimum size is scored from one matching)."""
    return len(seeds) * len(foregrounds) + 1
