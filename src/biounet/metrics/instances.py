"""Instance matching: predicted objects paired one-to-one with true objects by IoU, and the scores built on it.

Label 0 is background in both images; object ids are any positive integers, not necessarily consecutive.
The IoU of every overlapping (truth, prediction) pair comes from one sparse contingency table of the id
pairs found in the images, so the cost does not grow with the product of the object counts.

At threshold t, a pair is a *candidate* when its IoU >= t. Objects are matched one-to-one by the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``), not greedily, with StarDist's objective: as many
matches as possible, and among those the largest total IoU. Matched pairs are true positives (TP),
unmatched predictions false positives (FP), unmatched true objects false negatives (FN). For t >= 0.5 the
matching is unique (an object overlaps at most one partner by more than half) and both objectives agree.

Unannotated pixels (``ignore``): an object, predicted or true, with more than half of its pixels ignored is
dropped before matching (counted neither as a match nor as an error), and the sizes and overlaps behind
every IoU are counted on annotated pixels only. The prediction inside an ignored region thus matters only
through the objects that reach out of it.

The DSB 2018 score instead counts a pair as a match when IoU > t (strictly), as the Kaggle Data Science
Bowl 2018 did; for t >= 0.5 the matches are then unique, so no assignment is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from biounet.metrics.thresholds import check_thresholds

# 0.50, 0.55, ..., 0.95; k / 100 is the double nearest to each decimal.
DSB2018_THRESHOLDS: tuple[float, ...] = tuple(k / 100 for k in range(50, 100, 5))
# 0.50, 0.55, ..., 0.90: the IoU thresholds of an accuracy curve (as StarDist reports them).
CURVE_THRESHOLDS: tuple[float, ...] = tuple(k / 100 for k in range(50, 95, 5))


@dataclass(frozen=True)
class InstanceScores:
    """Object-level scores at one IoU threshold (TP when IoU >= threshold).

    A ratio whose denominator is 0 scores 1: precision with no predicted objects (no false positives),
    recall with no true objects, and F1, accuracy and panoptic quality when both images are empty.

    Attributes:
        threshold: the IoU threshold t.
        true_objects: number of objects in the truth.
        predicted_objects: number of objects in the prediction.
        true_positives: matched pairs with IoU >= t.
        false_positives: predicted objects left unmatched.
        false_negatives: true objects left unmatched.
        precision: ``TP / (TP + FP)``.
        recall: ``TP / (TP + FN)``.
        f1: ``2 TP / (2 TP + FP + FN)``.
        accuracy: ``TP / (TP + FP + FN)``, what StarDist and Cellpose call average precision (AP).
        panoptic_quality: ``sum of IoU over TP pairs / (TP + FP / 2 + FN / 2)``.
    """

    threshold: float
    true_objects: int
    predicted_objects: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    panoptic_quality: float


def instance_scores(pred_labels: npt.ArrayLike, truth_labels: npt.ArrayLike, threshold: float = 0.5, *,
                    ignore: npt.ArrayLike | None = None) -> InstanceScores:
    """Precision, recall, F1, accuracy (AP) and panoptic quality of an instance segmentation at one threshold.

    Args:
        pred_labels: predicted object ids (0 = background), any dimension.
        truth_labels: true object ids, same shape.
        threshold: IoU threshold t in (0, 1]; a matched pair is a TP when IoU >= t.
        ignore: optional boolean mask of unannotated pixels (see the module docstring).
    """
    return instance_scores_sweep(pred_labels, truth_labels, [threshold], ignore=ignore)[0]


def instance_scores_sweep(pred_labels: npt.ArrayLike, truth_labels: npt.ArrayLike,
                          thresholds: npt.ArrayLike = DSB2018_THRESHOLDS, *,
                          ignore: npt.ArrayLike | None = None) -> tuple[InstanceScores, ...]:
    """:func:`instance_scores` at each threshold, from one IoU table.

    Args:
        pred_labels: predicted object ids (0 = background), any dimension.
        truth_labels: true object ids, same shape.
        thresholds: IoU thresholds in (0, 1]; a matched pair is a TP when IoU >= t.
        ignore: optional boolean mask of unannotated pixels (see the module docstring).
    """
    ths = _iou_thresholds(thresholds)
    table = _IouTable.of(pred_labels, truth_labels, ignore)
    return tuple(table.scores(float(t)) for t in ths)


def dsb2018_score(pred_labels: npt.ArrayLike, truth_labels: npt.ArrayLike, *,
                  ignore: npt.ArrayLike | None = None) -> float:
    """DSB 2018 score of one image: the mean over t = 0.50, 0.55, ..., 0.95 of ``TP / (TP + FP + FN)``.

    Here a pair is a TP when IoU > t (strictly, as in the challenge), unlike :func:`instance_scores` (>=).
    An image without objects in both truth and prediction scores 1.

    Args:
        pred_labels: predicted object ids (0 = background), any dimension.
        truth_labels: true object ids, same shape.
        ignore: optional boolean mask of unannotated pixels (see the module docstring).
    """
    table = _IouTable.of(pred_labels, truth_labels, ignore)
    objects = table.true_objects + table.predicted_objects
    if objects == 0:
        return 1.0
    # For t >= 0.5 an object has at most one partner with IoU > t, so these pairs are the matching.
    tp = np.count_nonzero(table.iou[:, None] > np.asarray(DSB2018_THRESHOLDS), axis=0)
    return float(np.mean(tp / (objects - tp)))


def mean_dsb2018_score(pred_images: Sequence[npt.ArrayLike], truth_images: Sequence[npt.ArrayLike]) -> float:
    """The DSB 2018 challenge score of a set of images: :func:`dsb2018_score` averaged per image.

    Args:
        pred_images: predicted label images, one per image.
        truth_images: true label images, in the same order.
    """
    if len(pred_images) != len(truth_images):
        raise ValueError(f"{len(pred_images)} predictions for {len(truth_images)} truth images")
    if not pred_images:
        raise ValueError("need at least one image")
    return float(np.mean([dsb2018_score(p, t) for p, t in zip(pred_images, truth_images, strict=True)]))


@dataclass(frozen=True)
class DatasetMatching:
    """Object-level scores of a set of images at one IoU threshold, with StarDist's ``matching_dataset``
    definitions (``by_image=False``): TP, FP and FN are summed over the images, then the ratios are taken.

    As in StarDist, precision, recall, accuracy and F1 are 0 when there is no true positive, and the mean
    scores and panoptic quality are 0 when their denominator is.

    Attributes:
        threshold: the IoU threshold t (a matched pair is a TP when IoU >= t).
        images: number of images.
        true_objects: true objects in all images.
        predicted_objects: predicted objects in all images.
        true_positives: matched pairs with IoU >= t, over all images.
        false_positives: unmatched predictions.
        false_negatives: unmatched true objects.
        precision: ``TP / (TP + FP)``.
        recall: ``TP / (TP + FN)``.
        accuracy: ``TP / (TP + FP + FN)``.
        f1: ``2 TP / (2 TP + FP + FN)``.
        mean_true_score: sum of the TP pairs' IoU / true objects.
        mean_matched_score: sum of the TP pairs' IoU / TP.
        panoptic_quality: sum of the TP pairs' IoU / (TP + FP / 2 + FN / 2).
    """

    threshold: float
    images: int
    true_objects: int
    predicted_objects: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    accuracy: float
    f1: float
    mean_true_score: float
    mean_matched_score: float
    panoptic_quality: float


def matching_dataset(pred_images: Sequence[npt.ArrayLike], truth_images: Sequence[npt.ArrayLike],
                     thresholds: npt.ArrayLike = CURVE_THRESHOLDS, *,
                     ignores: Sequence[npt.ArrayLike | None] | None = None) -> tuple[DatasetMatching, ...]:
    """The accuracy curve of a set of images: :class:`DatasetMatching` at each IoU threshold.

    Equal to ``stardist.matching.matching_dataset(truths, preds, thresholds, by_image=False)`` for images
    without unannotated pixels.

    Args:
        pred_images: predicted object ids per image (0 = background).
        truth_images: true object ids, in the same order and shapes.
        thresholds: IoU thresholds in (0, 1].
        ignores: per image, an optional mask of unannotated pixels (see the module docstring).
    """
    ths = _iou_thresholds(thresholds)
    tables = _tables(pred_images, truth_images, ignores)
    n_true = sum(t.true_objects for t in tables)
    n_pred = sum(t.predicted_objects for t in tables)
    curve = []
    for threshold in ths:
        tp, matched_iou = 0, 0.0
        for table in tables:
            matched = table._matching(table.iou >= threshold)
            tp += int(np.count_nonzero(matched))
            matched_iou += float(table.iou[matched].sum())
        fp, fn = n_pred - tp, n_true - tp
        positive = tp > 0
        curve.append(DatasetMatching(
            threshold=float(threshold), images=len(tables), true_objects=n_true, predicted_objects=n_pred,
            true_positives=tp, false_positives=fp, false_negatives=fn,
            precision=tp / (tp + fp) if positive else 0.0, recall=tp / (tp + fn) if positive else 0.0,
            accuracy=tp / (tp + fp + fn) if positive else 0.0, f1=2 * tp / (2 * tp + fp + fn) if positive else 0.0,
            mean_true_score=_safe_divide(matched_iou, n_true), mean_matched_score=_safe_divide(matched_iou, tp),
            panoptic_quality=_safe_divide(matched_iou, tp + fp / 2 + fn / 2),
        ))
    return tuple(curve)


def accuracy_by_min_size(pred_images: Sequence[npt.ArrayLike], truth_images: Sequence[npt.ArrayLike],
                         min_sizes: Sequence[int], threshold: float = 0.5, *,
                         ignores: Sequence[npt.ArrayLike | None] | None = None) -> list[float]:
    """The pooled accuracy at one IoU threshold after removing the predicted objects under each minimum size.

    Equal, for each ``m`` in ``min_sizes``, to ``matching_dataset([drop_small(p, m) for p in pred_images],
    truth_images, (threshold,), ignores=ignores)[0].accuracy``, where :func:`~biounet.infer.instances.drop_small`
    keeps objects of at least ``max(m, 1)`` pixels. Removing an object changes no other object's IoU, so one
    IoU table per image serves every size: a post-processing search scores its sizes at the cost of one.

    Args:
        pred_images: predicted object ids per image (0 = background).
        truth_images: true object ids, in the same order and shapes.
        min_sizes: minimum object sizes in pixels, counted over the whole image (ignored pixels included).
        threshold: the IoU threshold in (0, 1].
        ignores: per image, an optional mask of unannotated pixels (see the module docstring).
    """
    threshold = float(_iou_thresholds([threshold])[0])
    tables = _tables(pred_images, truth_images, ignores)
    sizes = [np.bincount(np.asarray(p).ravel())[table.pred_ids] for p, table in zip(pred_images, tables, strict=True)]
    n_true = sum(t.true_objects for t in tables)
    accuracies = []
    for min_size in min_sizes:
        tp = n_pred = 0
        for table, size in zip(tables, sizes, strict=True):
            kept = size >= max(int(min_size), 1)
            n_pred += int(np.count_nonzero(kept))
            tp += int(np.count_nonzero(table._matching((table.iou >= threshold) & kept[table.pred_index])))
        errors = n_pred - tp + n_true - tp
        accuracies.append(tp / (tp + errors) if tp > 0 else 0.0)
    return accuracies


def _tables(pred_images: Sequence[npt.ArrayLike], truth_images: Sequence[npt.ArrayLike],
            ignores: Sequence[npt.ArrayLike | None] | None) -> list[_IouTable]:
    """One IoU table per image pair, the images counted against each other first."""
    if len(pred_images) != len(truth_images):
        raise ValueError(f"{len(pred_images)} predictions for {len(truth_images)} truth images")
    masks = list(ignores) if ignores is not None else [None] * len(pred_images)
    return [_IouTable.of(p, t, m) for p, t, m in zip(pred_images, truth_images, masks, strict=True)]


def _iou_thresholds(thresholds: npt.ArrayLike) -> np.ndarray:
    """The thresholds, checked to be IoU values in (0, 1]."""
    ths = check_thresholds(thresholds)
    if not ((ths > 0) & (ths <= 1)).all():
        raise ValueError(f"IoU thresholds must lie in (0, 1], got {ths.tolist()}")
    return ths


def _safe_divide(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


@dataclass(frozen=True)
class _IouTable:
    """The overlapping (truth, prediction) object pairs: indices into the object lists, and their IoU."""

    true_objects: int
    predicted_objects: int
    truth_index: np.ndarray
    pred_index: np.ndarray
    iou: np.ndarray
    pred_ids: np.ndarray  # the id of each predicted object, in index order

    @classmethod
    def of(cls, pred_labels: npt.ArrayLike, truth_labels: npt.ArrayLike,
           ignore: npt.ArrayLike | None = None) -> _IouTable:
        pred, truth = np.asarray(pred_labels), np.asarray(truth_labels)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
        for name, labels in (("prediction", pred), ("truth", truth)):
            if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
                raise ValueError(f"{name} must hold integer object ids, got dtype {labels.dtype}")
            if labels.size and labels.min() < 0:
                raise ValueError(f"{name} object ids must be >= 0 (0 = background), found {labels.min()}")
        if ignore is not None:
            unknown = np.asarray(ignore, dtype=bool)
            if unknown.shape != truth.shape:
                raise ValueError(f"ignore mask shape {unknown.shape} differs from the labels' {truth.shape}")
            pred, truth = _drop_mostly_ignored(pred, unknown)[~unknown], _drop_mostly_ignored(truth, unknown)[~unknown]
        # Objects of each image are numbered 0..n-1 in id order; background is left out.
        t_ids, t_index = np.unique(truth.ravel(), return_inverse=True)
        p_ids, p_index = np.unique(pred.ravel(), return_inverse=True)
        t_sizes, p_sizes = np.bincount(t_index), np.bincount(p_index)
        t_first, p_first = int(t_ids.size > 0 and t_ids[0] == 0), int(p_ids.size > 0 and p_ids[0] == 0)
        both = (truth.ravel() > 0) & (pred.ravel() > 0)
        pairs, overlap = np.unique(t_index[both].astype(np.int64) * p_ids.size + p_index[both], return_counts=True)
        ti, pi = np.divmod(pairs, p_ids.size)
        iou = overlap / (t_sizes[ti] + p_sizes[pi] - overlap)
        return cls(t_ids.size - t_first, p_ids.size - p_first, ti - t_first, pi - p_first, iou, p_ids[p_first:])

    def scores(self, threshold: float) -> InstanceScores:
        matched = self._matching(self.iou >= threshold)
        tp = int(np.count_nonzero(matched))
        fp, fn = self.predicted_objects - tp, self.true_objects - tp
        matched_iou = float(self.iou[matched].sum())
        return InstanceScores(
            threshold=threshold, true_objects=self.true_objects, predicted_objects=self.predicted_objects,
            true_positives=tp, false_positives=fp, false_negatives=fn,
            precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn),
            accuracy=_ratio(tp, tp + fp + fn), panoptic_quality=_ratio(matched_iou, tp + (fp + fn) / 2),
        )

    def _matching(self, candidate: np.ndarray) -> np.ndarray:
        """Which pairs a one-to-one matching of the candidate pairs keeps (most matches, then most IoU)."""
        t, p, iou = self.truth_index[candidate], self.pred_index[candidate], self.iou[candidate]
        matched = np.zeros(self.iou.size, dtype=bool)
        if t.size == 0:
            return matched
        # The assignment splits into the connected components of the bipartite candidate graph; most are a
        # single pair, which needs no solver.
        nodes = self.true_objects + self.predicted_objects
        graph = coo_matrix((np.ones(t.size), (t, self.true_objects + p)), shape=(nodes, nodes))
        _, component = connected_components(graph, directed=False)
        pair_component = component[t]
        sizes = np.bincount(pair_component)
        keep = sizes[pair_component] == 1
        by_component, ends = np.argsort(pair_component, kind="stable"), np.cumsum(sizes)
        for c in np.flatnonzero(sizes > 1):
            members = by_component[ends[c] - sizes[c]:ends[c]]
            rows, row = np.unique(t[members], return_inverse=True)
            cols, col = np.unique(p[members], return_inverse=True)
            # Each match is worth 1 plus a tie-break below 1/2 in total, so the count comes first.
            cost = np.zeros((rows.size, cols.size))
            cost[row, col] = -1.0 - iou[members] / (2 * min(rows.size, cols.size))
            r, k = linear_sum_assignment(cost)
            chosen = np.zeros((rows.size, cols.size), dtype=bool)
            chosen[r, k] = cost[r, k] < 0
            keep[members] = chosen[row, col]
        matched[np.flatnonzero(candidate)[keep]] = True
        return matched


def _drop_mostly_ignored(labels: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """``labels`` with every object that has more than half of its pixels in ``unknown`` set to 0."""
    ids, index = np.unique(labels.ravel(), return_inverse=True)
    total = np.bincount(index, minlength=ids.size)
    ignored = np.bincount(index[unknown.ravel()], minlength=ids.size)
    drop = (2 * ignored > total) & (ids > 0)
    return np.where(drop[index], 0, labels.ravel()).reshape(labels.shape)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 1.0
