"""Validation on whole held-out images through overlap-tile prediction, as at inference time."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from biounet.data.dataset import Example
from biounet.data.labels import IGNORE_INDEX
from biounet.infer.predict import predict, probabilities_to_mask
from biounet.metrics.overlap import dice_iou
from biounet.metrics.rand import rand_error
from biounet.models.unet import UNet


def predict_example(model: UNet, example: Example, tta: bool = False) -> np.ndarray:
    """Class probabilities for a (normalised) example image."""
    return predict(model, example.image, tta=tta)


def score(probabilities: np.ndarray, example: Example, num_classes: int) -> dict[str, float]:
    """Dice and IoU over the foreground classes; Rand error for two-class (membrane/cell) tasks."""
    mask = probabilities_to_mask(probabilities)
    overlap = dice_iou(mask, example.target, num_classes, ignore=IGNORE_INDEX, include_background=False)
    scores = {"dice": overlap.mean_dice, "iou": overlap.mean_iou}
    if num_classes == 2:
        # Unannotated pixels count as boundary, which the foreground-restricted Rand score leaves out.
        truth = (example.target == 1).astype(np.uint8)
        foreground = probabilities[1] if probabilities.shape[0] == 2 else probabilities[0]
        scores["rand_error"] = rand_error(foreground, truth)
    return scores


def make_validator(examples: list[Example], num_classes: int) -> Callable[[UNet], dict[str, float]]:
    """``validate(model)``: mean scores over ``examples``."""

    def validate(model: UNet) -> dict[str, float]:
        rows = [score(predict_example(model, e), e, num_classes) for e in examples]
        return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}

    return validate
