"""Metrics by name over a (prediction, truth) pair: what ``biounet evaluate``, validation and the demo report.

A prediction is either class probabilities ``(C, *S)`` (float) or a label image ``(*S)`` (integer); the
truth is a class map (``IGNORE_INDEX`` where unannotated). Threshold-sweeping ISBI metrics use the
foreground probability when there is one, else the binary prediction, and share one
:class:`~biounet.metrics.sweep.ThresholdSweep` per pair (binarised, labelled, thinned and warped once per
threshold). Every metric leaves the unannotated pixels out, as its module documents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import ndimage as ndi

from biounet.data.labels import IGNORE_INDEX
from biounet.errors import BiounetError
from biounet.metrics.instances import InstanceScores, dsb2018_score, instance_scores
from biounet.metrics.overlap import OverlapScores, dice_iou
from biounet.metrics.surface import ClassSurfaceScores, surface_distances_per_class
from biounet.metrics.sweep import ThresholdSweep


@dataclass
class Pair:
    """A prediction and its truth, in the forms the metrics need (computed once, on demand).

    Attributes:
        classes: predicted class map ``(*S)``.
        foreground: predicted foreground probability ``(*S)`` for two-class tasks (the binary prediction
            as 0/1 when only labels were given), else ``None``.
        truth: truth class map ``(*S)``, ``IGNORE_INDEX`` where unannotated.
        num_classes: classes of the task (>= 2).
        spacing: pixel/voxel size per axis, for surface distances.
        pred_labels: the predicted label image as given (instance ids), if it was one.
        truth_labels: the truth label image as given (instance ids), if any.
    """

    classes: np.ndarray
    foreground: np.ndarray | None
    truth: np.ndarray
    num_classes: int
    spacing: tuple[float, ...] = ()
    pred_labels: np.ndarray | None = None
    truth_labels: np.ndarray | None = None

    @cached_property
    def overlap(self) -> OverlapScores:
        return dice_iou(self.classes, self.truth, self.num_classes, ignore=IGNORE_INDEX, include_background=False)

    @cached_property
    def ignored(self) -> np.ndarray:
        """The unannotated pixels: where the truth is ``IGNORE_INDEX``."""
        return np.asarray(self.truth == IGNORE_INDEX)

    @cached_property
    def surface(self) -> ClassSurfaceScores:
        """Surface distances per foreground class; unannotated pixels are unknown (no edges there)."""
        truth = np.where(self.ignored, 0, self.truth)
        return surface_distances_per_class(self.classes, truth, self.num_classes, spacing=self.spacing,
                                           ignore=self.ignored)

    @cached_property
    def matched(self) -> InstanceScores:
        """One-to-one instance matching at IoU >= 0.5, objects mostly unannotated left out."""
        return instance_scores(self.instances("pred"), self.instances("truth"), 0.5, ignore=self.ignored)

    @cached_property
    def sweep(self) -> ThresholdSweep:
        """The shared ISBI threshold sweep of the foreground probability against the annotated truth."""
        return ThresholdSweep(self.probability("ISBI"), self.binary_truth, ignore=self.ignored)

    @property
    def binary_truth(self) -> np.ndarray:
        """Cells = 1, boundary = 0, unannotated = ``IGNORE_INDEX`` (the ISBI metrics' truth)."""
        return np.where(self.ignored, IGNORE_INDEX, self.truth > 0).astype(np.int8)

    def probability(self, metric: str) -> np.ndarray:
        if self.foreground is None:
            raise BiounetError(f"metric {metric} needs a two-class (foreground/background) task")
        return self.foreground

    def isbi(self, metric: str) -> ThresholdSweep:
        """The shared ISBI sweep, once ``metric`` is known to apply (a two-class task).

        Raises:
            BiounetError: for a task without a foreground probability.
        """
        self.probability(metric)
        return self.sweep

    def instances(self, which: str) -> np.ndarray:
        """Instance ids: the label image if it had several objects, else 4-connected components."""
        given = self.pred_labels if which == "pred" else self.truth_labels
        if given is not None and given.max(initial=0) > 1:
            return given
        mask = (self.classes if which == "pred" else self.truth) > 0
        return ndi.label(mask)[0]


def pair_from_arrays(prediction: np.ndarray, truth_classes: np.ndarray, *, num_classes: int | None = None,
                     spacing: Sequence[float] | None = None, truth_labels: np.ndarray | None = None) -> Pair:
    """Builds a :class:`Pair` from a probability map ``(C, *S)`` or a label image ``(*S)``.

    Raises:
        BiounetError: if the shapes do not match.
    """
    spatial = truth_classes.shape
    pred_labels = None
    if prediction.dtype.kind == "f" and prediction.ndim == len(spatial) + 1:
        channels = prediction.shape[0]
        if channels == 1:
            foreground = prediction[0]
            classes = (foreground > 0.5).astype(np.int64)
        else:
            classes = np.argmax(prediction, axis=0)
            foreground = prediction[1] if channels == 2 else None
        classes_count = max(channels, 2)
    elif prediction.shape == spatial:
        pred_labels = prediction.astype(np.int64)
        classes_count = num_classes or max(int(truth_classes.max(initial=0)) + 1, 2)
        # A label image with more values than classes is an instance map: its objects are foreground.
        classes = pred_labels if pred_labels.max(initial=0) < classes_count else (pred_labels > 0).astype(np.int64)
        foreground = (classes > 0).astype(np.float64) if classes_count == 2 else None
    else:
        raise BiounetError(f"prediction of shape {prediction.shape} does not match the truth's {spatial}")
    if classes.shape != spatial:
        raise BiounetError(f"prediction of shape {prediction.shape} does not match the truth's {spatial}")
    return Pair(classes, foreground, truth_classes, num_classes or classes_count,
                tuple(spacing) if spacing else (1.0,) * len(spatial), pred_labels, truth_labels)


Metric = Callable[[Pair], float]

METRICS: dict[str, Metric] = {
    "dice": lambda p: p.overlap.mean_dice,
    "iou": lambda p: p.overlap.mean_iou,
    "pixel_error": lambda p: p.isbi("pixel_error").pixel_error().value,
    "rand_error": lambda p: p.isbi("rand_error").rand_error().value,
    "v_rand": lambda p: p.isbi("v_rand").v_rand().value,
    "v_info": lambda p: p.isbi("v_info").v_info().value,
    "warping_error": lambda p: p.isbi("warping_error").warping_error(0.5),
    "warping_splits_merges": lambda p: p.isbi("warping_splits_merges").split_merge_warping_error().value,
    "hd95": lambda p: p.surface.mean.hd95,
    "asd": lambda p: p.surface.mean.average_surface_distance,
    "surface_dice": lambda p: p.surface.mean.surface_dice,
    "ap50": lambda p: p.matched.accuracy,
    "f1_50": lambda p: p.matched.f1,
    "pq": lambda p: p.matched.panoptic_quality,
    "dsb2018": lambda p: dsb2018_score(p.instances("pred"), p.instances("truth"), ignore=p.ignored),
}
"""Every named metric; lower is better for the ``*_error`` ones and for distances (``hd95``, ``asd``, in
units of ``spacing``). ``surface_dice`` is at a tolerance of 1 unit. ``ap50`` is TP / (TP + FP + FN) of
instances matched one-to-one at IoU >= 0.5 (what StarDist and Cellpose call AP), ``f1_50`` and ``pq``
(panoptic quality) come from the same matching, ``dsb2018`` averages TP / (TP + FP + FN) over IoU > 0.50,
0.55, ..., 0.95. Instances are the label image's ids when it has several objects, else 4-connected
components of the foreground."""

DEFAULT_METRICS = ("dice", "iou", "pixel_error", "rand_error")


def score(pair: Pair, names: Sequence[str]) -> dict[str, float]:
    """The named metrics of one pair.

    Raises:
        BiounetError: for an unknown name or a metric that does not apply to the task.
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise BiounetError(f"unknown metrics {', '.join(unknown)}; available: {', '.join(METRICS)}")
    try:
        return {name: float(METRICS[name](pair)) for name in names}
    except ValueError as exc:
        raise BiounetError(f"cannot score: {exc}") from exc
