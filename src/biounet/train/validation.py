"""Validation on whole held-out images through overlap-tile prediction, as at inference time, scored with
the same named metrics as ``biounet evaluate``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from biounet.data.dataset import Example
from biounet.infer.predict import predict
from biounet.metrics.suite import pair_from_arrays, score
from biounet.metrics.sweep import pooled_rand_error
from biounet.models.unet import UNet


def predict_example(model: UNet, example: Example, tta: bool = False) -> np.ndarray:
    """Class probabilities for a (normalised) example image, on the device the model is on.

    Args:
        model: the network; it is left in its mode and on its device (prediction uses a copy).
        example: the image (already normalised) and its target.
        tta: average over the test-time transforms.
    """
    # No device: prediction then runs where the model's parameters are, i.e. on the training device.
    return predict(model, example.image, tta=tta)


def validation_metrics(num_classes: int) -> tuple[str, ...]:
    """Dice and IoU over the foreground classes, and the Rand error for two-class (membrane/cell) tasks."""
    return ("dice", "iou", "rand_error") if num_classes == 2 else ("dice", "iou")


def make_validator(examples: list[Example], num_classes: int) -> Callable[[UNet], dict[str, float]]:
    """``validate(model)``: Dice and IoU averaged over ``examples``; for two classes, the Rand error of the
    ISBI challenge protocol over all of them (one threshold, counts pooled), the figure a membrane model is
    judged by, rather than a mean of per-image best thresholds, which is more lenient."""
    names = validation_metrics(num_classes)

    def validate(model: UNet) -> dict[str, float]:
        pairs = [pair_from_arrays(predict_example(model, e), e.target, num_classes=num_classes) for e in examples]
        rows = [score(pair, ("dice", "iou")) for pair in pairs]
        scores = {key: float(np.nanmean([r[key] for r in rows])) for key in ("dice", "iou")}
        if "rand_error" in names:
            scores["rand_error"] = pooled_rand_error([pair.sweep for pair in pairs]).value
        return scores

    return validate
