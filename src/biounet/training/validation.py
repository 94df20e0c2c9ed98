"""Validation on whole held-out images through overlap-tile prediction, as at inference time, scored with
the same named metrics as ``biounet evaluate``."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from biounet.data.examples import Example
from biounet.data.labels import IGNORE_INDEX
from biounet.infer.instances import instances_from_probabilities
from biounet.infer.predict import predict
from biounet.metrics.instances import matching_dataset
from biounet.metrics.suite import pair_from_arrays, score
from biounet.metrics.sweep import pooled_rand_error
from biounet.models.checkpoint import Checkpoint
from biounet.models.config import OutputKind
from biounet.models.instance_params import InstanceParams
from biounet.models.normalization import Normalization
from biounet.models.unet import UNet
from biounet.training.tuning import VALIDATION_FOREGROUNDS, VALIDATION_SEEDS, grid_points, tune_instance_params

# The key of score_predictions' result that holds the seconds one post-processing of its objects took (making
# and matching them once; not a metric).
OBJECTS_SECONDS = "objects_seconds"


def predict_example(model: UNet | Checkpoint, example: Example, tta: bool = False) -> np.ndarray:
    """Class probabilities for a (normalised) example image, on the device the model is on.

    Args:
        model: the network, or a checkpoint (whose test-time symmetry ``tta`` then averages over); it is
            left in its mode and on its device (prediction uses a copy).
        example: the image (already normalised) and its target.
        tta: average over the test-time transforms.
    """
    # No device: prediction then runs where the model's parameters are, i.e. on the training device. The
    # example is normalised already: a checkpoint's normalisation must not apply again.
    return predict(model, example.image, tta=tta, normalization=Normalization("none"))


def validation_metrics(num_classes: int, objects: bool = False) -> tuple[str, ...]:
    """Dice and IoU over the foreground classes; the Rand error for two-class (membrane/cell) tasks without
    instance labels; accuracy@0.5 of the objects with instance labels."""
    if objects:
        return ("dice", "iou", "accuracy")
    return ("dice", "iou", "rand_error") if num_classes == 2 else ("dice", "iou")


def make_validator(examples: list[Example], num_classes: int,
                   output: OutputKind = "classes") -> Callable[[UNet], dict[str, float]]:
    """``validate(model)``: :func:`score_predictions` of the model's predictions of ``examples``.

    Args:
        examples: the validation images.
        num_classes: the task's classes (2 for a foreground/distance model: background and object).
        output: the model's ``UNetConfig.output``.
    """

    def validate(model: UNet) -> dict[str, float]:
        return score_predictions([predict_example(model, e) for e in examples], examples, num_classes, output)

    return validate


def score_predictions(probabilities: list[np.ndarray], examples: list[Example], num_classes: int,
                      output: OutputKind = "classes", instances: InstanceParams | None = None) -> dict[str, float]:
    """Dice and IoU averaged over ``examples``; for two classes, the Rand error of the ISBI challenge
    protocol over all of them (one threshold, counts pooled), the figure a membrane model is judged by,
    rather than a mean of per-image best thresholds, which is more lenient. Examples with true objects
    (instance labels) are scored by accuracy@0.5 instead, with matches pooled over all images: at
    ``instances``, or without them the best of a coarse post-processing search
    (:data:`~biounet.training.tuning.VALIDATION_SEEDS` x :data:`~biounet.training.tuning.VALIDATION_FOREGROUNDS`
    x minimum sizes), so that checkpoints are compared at about the settings the run will end with. The
    seconds one post-processing took are under :data:`OBJECTS_SECONDS` (the trainer budgets the end-of-run
    search by them).

    Args:
        probabilities: the model's ``(C, *S)`` probabilities per example.
        examples: the validation images and their targets.
        num_classes: the task's classes (2 for a foreground/distance model: background and object).
        output: the model's ``UNetConfig.output``; a ``distance`` model's Dice and IoU are its foreground's.
        instances: the post-processing that makes objects (default: the best of the coarse search).
    """
    objects = bool(examples) and all(e.objects is not None for e in examples)
    names = validation_metrics(num_classes, objects)
    # A distance model's classes are its foreground channel's, a one-channel sigmoid map.
    classes = probabilities if output == "classes" else [p[:1] for p in probabilities]
    pairs = [pair_from_arrays(p, e.target, num_classes=num_classes) for p, e in zip(classes, examples, strict=True)]
    rows = [score(pair, ("dice", "iou")) for pair in pairs]
    scores = {key: float(np.nanmean([r[key] for r in rows])) for key in ("dice", "iou")}
    if "rand_error" in names:
        scores["rand_error"] = pooled_rand_error([pair.sweep for pair in pairs]).value
    if "accuracy" in names:
        started = time.monotonic()
        truths = [e.objects for e in examples]
        ignores = [e.target == IGNORE_INDEX for e in examples]
        if instances is None:
            tuned = tune_instance_params(probabilities, truths, ignores, output,  # type: ignore[arg-type]
                                         VALIDATION_SEEDS, VALIDATION_FOREGROUNDS)
            scores["accuracy"], points = tuned.accuracy, grid_points(VALIDATION_SEEDS, VALIDATION_FOREGROUNDS)
        else:
            found = [instances_from_probabilities(p, instances, output) for p in probabilities]
            scores["accuracy"] = matching_dataset(found, truths, (0.5,), ignores=ignores)[0].accuracy  # type: ignore[arg-type]
            points = 1
        scores[OBJECTS_SECONDS] = (time.monotonic() - started) / points
    return scores
