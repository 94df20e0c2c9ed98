"""Dice and IoU (Jaccard) per class and their means, from one confusion matrix over all pixels/voxels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class OverlapScores:
    """Dice and IoU per class.

    Attributes:
        classes: the classes scored, in order (class 0 is left out when background is excluded).
        dice: ``2|P & T| / (|P| + |T|)`` per class, aligned with ``classes``.
        iou: ``|P & T| / |P | T|`` per class.
        mean_dice: mean over ``classes``, skipping NaN entries; NaN if all are NaN.
        mean_iou: the same for IoU.
    """

    classes: tuple[int, ...]
    dice: tuple[float, ...]
    iou: tuple[float, ...]
    mean_dice: float
    mean_iou: float


def dice_iou(pred_labels: npt.ArrayLike, truth_labels: npt.ArrayLike, num_classes: int, *,
             ignore: int | None = None, include_background: bool = True, empty: float = 1.0) -> OverlapScores:
    """Dice and IoU of each class of a label image of any dimension (2D, 3D, stacks: all pixels pooled).

    A class absent from both the prediction and the truth scores ``empty``; absent from the truth only, it
    scores 0 (and absent from the prediction only, 0 as well).

    Args:
        pred_labels: predicted class per pixel, integers in ``[0, num_classes)``.
        truth_labels: true class per pixel, same shape; values equal to ``ignore`` are left out.
        num_classes: number of classes.
        ignore: truth value whose pixels are left out of every count (e.g. 255 for unlabelled).
        include_background: score class 0 too; when False it is left out of the per-class scores and means.
        empty: score of a class absent from both; 1.0 (perfectly predicted absence) or ``float("nan")``
            to leave such classes out of the means.
    """
    pred, truth = np.asarray(pred_labels), np.asarray(truth_labels)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, labels in (("prediction", pred), ("truth", truth)):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise ValueError(f"{name} must hold integer class labels, got dtype {labels.dtype}")
    if ignore is not None:
        keep = truth != ignore
        pred, truth = pred[keep], truth[keep]
    pred, truth = pred.ravel().astype(np.int64), truth.ravel().astype(np.int64)
    for name, labels in (("prediction", pred), ("truth", truth)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")

    confusion = np.bincount(truth * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    # A zero denominator means the class is absent from both images; anything else follows the formulas.
    dice_den, iou_den = 2 * tp + fp + fn, tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(dice_den > 0, 2 * tp / dice_den, empty)
        iou = np.where(iou_den > 0, tp / iou_den, empty)

    first = 0 if include_background else 1
    classes = tuple(range(first, num_classes))
    dice, iou = dice[first:], iou[first:]
    return OverlapScores(classes, tuple(dice.tolist()), tuple(iou.tolist()), _nanmean(dice), _nanmean(iou))


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan
