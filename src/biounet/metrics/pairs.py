"""The files of an evaluation: predictions paired with truths by stem, the truths' label convention, and
each pair read into a :class:`~biounet.metrics.suite.Pair`.

A prediction is a probability map (float, classes first in TIFF and on the 4th axis in NIfTI) or a label
image; a truth is a one-channel label image whose convention (binary, classes, instances) is decided from
all truths together, as training decides it from its labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from biounet.data.labels import LabelConfig, label_values, read_label, read_label_meta
from biounet.errors import BiounetError
from biounet.io.files import file_stem
from biounet.io.readers import ImageMeta, guess_spatial_dims, read_image
from biounet.metrics.suite import Pair, pair_from_arrays

# Suffixes that `biounet predict` (and common tools) append to an input's stem.
SUFFIXES = ("_instances", "_prob", "_mask", "_pred", "_seg")


def pair_by_stem(predictions: list[Path], truths: list[Path]) -> list[tuple[Path, Path]]:
    """``(prediction, truth)`` pairs matched by :func:`~biounet.io.files.file_stem`; of several predictions
    of one stem, an instance map (``_instances``) is taken first, then probabilities (``_prob``).

    Args:
        predictions: prediction files; their stems may carry one of :data:`SUFFIXES`.
        truths: truth files, in the order of the pairs.

    Raises:
        BiounetError: for a truth without prediction (naming it) or nothing matched at all.
    """
    by_stem: dict[str, Path] = {}
    ranks: dict[str, int] = {}
    for path in predictions:
        stem = full = file_stem(path)
        for suffix in SUFFIXES:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        # An instance map says most, then probabilities, then a mask.
        rank = 2 if full.endswith("_instances") else 1 if full.endswith("_prob") else 0
        if stem not in by_stem or rank > ranks[stem]:
            by_stem[stem], ranks[stem] = path, rank
    missing = [t for t in truths if file_stem(t) not in by_stem]
    if missing:
        raise BiounetError("no prediction with this stem", missing[0])
    return [(by_stem[file_stem(t)], t) for t in truths]


def load_pair(pred_path: Path, truth_path: Path, labels: LabelConfig, spacing: Sequence[float] | None,
              spatial_dims: int | None = None) -> Pair:
    """Reads a prediction and its truth into a :class:`Pair`.

    Args:
        pred_path: probabilities (float, classes first) or a label image.
        truth_path: a one-channel label image, read by :func:`~biounet.data.labels.read_label`.
        labels: the truths' convention (see :func:`resolve_truths`); an ``auto`` one is decided from this
            truth alone.
        spacing: pixel/voxel size per spatial axis; ``None`` for the truth file's own.
        spatial_dims: 2 or 3; ``None`` decides from the truth file
            (:func:`~biounet.io.readers.guess_spatial_dims`).

    Raises:
        BiounetError: naming the file, for unreadable files, mismatched shapes or unusable values.
    """
    dims = spatial_dims or guess_spatial_dims(truth_path)
    label, meta = read_label_meta(truth_path, dims)
    prediction = _prediction(read_image(pred_path, dims), pred_path)
    classes = _class_count(prediction)
    try:
        config = labels if labels.resolved else labels.resolve([label], classes, require_foreground=False)
        truth, ids = config.truth(label, classes)
    except BiounetError as exc:
        raise BiounetError(str(exc), truth_path) from exc
    try:
        return pair_from_arrays(prediction, truth, spacing=_spacing(spacing, meta), truth_labels=ids,
                                num_classes=2 if config.kind in ("binary", "instances") else None)
    except BiounetError as exc:
        raise BiounetError(f"{exc} ({truth_path})", pred_path) from exc


def resolve_truths(pairs: Sequence[tuple[Path, Path]], dims: Sequence[int], labels: LabelConfig) -> LabelConfig:
    """The truths' convention, decided from all truth files together as training decides it from its labels.

    ``auto`` is informed by the predictions: a probability map's channels are the task's classes, and label
    images with at most one nonzero value (masks) make it a two-class task.

    Args:
        pairs: ``(prediction, truth)`` files.
        dims: spatial dimensions of each pair.
        labels: the convention given (``--truth-kind``, ``--foreground``, ``--ignore`` on the command line).

    Raises:
        BiounetError: naming the truth file and its values, if one does not fit the convention.
    """
    if labels.resolved:
        return labels  # checked pair by pair, against each prediction's classes
    truths = [label_values(read_label(truth, d), truth) for (_, truth), d in zip(pairs, dims, strict=True)]
    classes: int | None = None
    if labels.kind == "auto":
        counts: set[int | None] = set()
        mask_values: set[int] = set()
        for (pred, _), d in zip(pairs, dims, strict=True):
            prediction = _prediction(read_image(pred, d), pred)
            counts.add(_class_count(prediction))
            if prediction.dtype.kind != "f":
                mask_values.update(int(v) for v in np.unique(prediction) if v != 0)
        if counts == {None} and len(mask_values) <= 1:
            classes = 2
        elif None not in counts:
            classes = max(c for c in counts if c is not None)
    return labels.resolve(truths, classes, require_foreground=False)


def _class_count(prediction: np.ndarray) -> int | None:
    """The classes of a probability map (a one-channel map is foreground of two); ``None`` for a label image."""
    return max(prediction.shape[0], 2) if prediction.dtype.kind == "f" else None


def _prediction(prediction: np.ndarray, path: Path) -> np.ndarray:
    """Probabilities ``(C, *S)`` as float, or a label image ``(*S)``.

    A one-channel float file of whole values outside [0, 1] is a label image stored as float.
    """
    if prediction.dtype.kind == "f":
        low, high = float(prediction.min(initial=0.0)), float(prediction.max(initial=0.0))
        if low >= 0.0 and high <= 1.0:
            return prediction
        if prediction.shape[0] == 1 and np.array_equal(prediction, np.round(prediction)):
            return prediction[0].astype(np.int64)
        raise BiounetError(f"a float prediction must hold probabilities in [0, 1] or whole-number labels, found "
                           f"values {low:g}..{high:g}", path)
    return prediction[0] if prediction.shape[0] == 1 else prediction


def _spacing(spacing: Sequence[float] | None, meta: ImageMeta) -> tuple[float, ...]:
    """The spacing given, else the truth file's; the messages name the command line's option, where users
    give it."""
    if spacing is not None:
        if len(spacing) != meta.spatial_dims:
            raise BiounetError(f"--spacing has {len(spacing)} value(s) for {meta.spatial_dims} spatial axes")
        values, source = tuple(spacing), "--spacing"
    else:
        values, source = meta.spacing, "the file's voxel size"
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise BiounetError(f"{source} {values} is not positive; give the spacing with --spacing",
                           None if spacing is not None else meta.path)
    return values
