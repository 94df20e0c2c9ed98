"""Scoring prediction files against truth files, per image and on average: what ``biounet evaluate`` runs.

:func:`evaluate` pairs predictions with truths by stem (:mod:`.pairs`), decides the truths' label
convention from all of them together, scores each pair with the named metrics of :mod:`.suite` (per class
too, for more than two classes), averages them, and optionally scores all 2D slices together as the ISBI
2012 challenge does (one threshold for the stack) and, for instance truths, the objects of all images
together (StarDist's ``matching_dataset``). The :class:`Evaluation` it returns renders the command's
report: the printed text, the JSON and the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np

from biounet.data.labels import Kind, LabelConfig
from biounet.errors import BiounetError
from biounet.io.files import expand_inputs, file_stem
from biounet.io.readers import guess_spatial_dims
from biounet.metrics.instances import DatasetMatching, matching_dataset
from biounet.metrics.isbi import isbi_challenge_scores
from biounet.metrics.pairs import load_pair, pair_by_stem, resolve_truths
from biounet.metrics.suite import DEFAULT_METRICS, METRICS, Pair, score

# What is scored by default when the truths are instance maps: overlap, and the objects matched.
INSTANCE_METRICS = ("dice", "iou", "ap50", "f1_50", "pq")
# ISBI's pixel and Rand errors are for 2D membrane maps; volumes are usually scored by overlap and distance.
VOLUME_METRICS = ("dice", "iou", "hd95")
# Per-class surface scores: metric name -> field of SurfaceScores.
_SURFACE_FIELDS = {"hd95": "hd95", "asd": "average_surface_distance", "surface_dice": "surface_dice"}
# The challenge's measures of the stack score (the warping error, its slowest, is left out).
_STACK_SCORES = ("rand_error", "v_rand", "v_info", "pixel_error")

Paths: TypeAlias = str | Path | Sequence[str | Path]


@dataclass(frozen=True)
class Evaluation:
    """The scores of an evaluation, and the report ``biounet evaluate`` prints and writes.

    Attributes:
        metrics: the metric names scored.
        truth: the truths' label convention, resolved.
        images: one row per pair: ``image`` (the truth's stem), ``prediction`` and ``truth`` (the paths)
            and a value per column (NaN where the image's task lacks a class).
        columns: the score columns: each metric, followed by its per-class columns if any image has them.
        mean: each column's mean over the images, NaNs left out.
        stack: the ISBI 2012 scores of all slices together (see :func:`isbi_stack_scores`), if asked for.
        objects: for instance truths, the object matching of all images together at IoU 0.50, ..., 0.90.
    """

    metrics: tuple[str, ...]
    truth: LabelConfig
    images: tuple[dict[str, object], ...]
    columns: tuple[str, ...]
    mean: dict[str, float]
    stack: dict[str, float] | None = None
    objects: tuple[DatasetMatching, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """The JSON report: ``metrics``, ``truth``, ``images``, ``mean``, and ``stack`` and ``objects`` when
        there are such scores."""
        report: dict[str, object] = {"metrics": list(self.metrics), "truth": self.truth.to_dict(),
                                     "images": [dict(row) for row in self.images], "mean": dict(self.mean)}
        if self.stack is not None:
            report["stack"] = dict(self.stack)
        if self.objects:
            report["objects"] = {"curve": [dataclasses.asdict(c) for c in self.objects],
                                 "mean_accuracy": mean_accuracy(self.objects)}
        return report

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, default=_json_number)

    def to_text(self) -> str:
        """The printed report: a table per image and the mean, the object curve, the stack scores, the truths'
        convention."""
        lines = [_table(self.images, self.mean, self.columns)]
        if self.objects:
            lines.append(_curve_table(self.objects))
        if self.stack is not None:
            lines.append(f"stack of {self.stack['slices']} slices, one threshold for all (ISBI 2012): "
                         + ", ".join(f"{name} {self.stack[name]:.6g} (threshold {self.stack[name + '_threshold']:g})"
                                     for name in _STACK_SCORES))
        lines.append(f"truth: {self.truth.describe()}")
        return "\n".join(lines)

    def to_csv(self) -> str:
        """One row per image, then the mean and (if scored) the stack; the stack's own columns come last."""
        buffer = io.StringIO()
        extra = [k for k in self.stack or {} if k not in self.columns]
        writer = csv.DictWriter(buffer, fieldnames=["image", "prediction", "truth", *self.columns, *extra])
        writer.writeheader()
        writer.writerows(self.images)
        writer.writerow({"image": "mean", **self.mean})
        if self.stack is not None:
            writer.writerow({"image": "stack", **self.stack})
        return buffer.getvalue()


def evaluate(pred: Paths, truth: Paths, *, metrics: Sequence[str] | None = None, truth_kind: Kind = "auto",
             foreground: int | None = None, ignore: int | None = None, spacing: Sequence[float] | None = None,
             spatial_dims: int | None = None, isbi_stack: bool = False) -> Evaluation:
    """Scores predictions against ground truth, per image and on average.

    Args:
        pred: prediction files, folders, globs or ``FILE.h5:DATASET`` / ``STORE.zarr:ARRAY`` specs (see
            :func:`~biounet.io.files.expand_inputs`), one or a list: probability maps (float, classes first)
            or label images. Of several predictions of one stem, an instance map is taken, then probabilities.
        truth: ground-truth label images or volumes, given as ``pred``; each pairs with the prediction of
            its stem (see :func:`~biounet.metrics.pairs.pair_by_stem`).
        metrics: names from :data:`~biounet.metrics.suite.METRICS`; default: :data:`INSTANCE_METRICS` for
            instance truths, else :data:`~biounet.metrics.suite.DEFAULT_METRICS` for 2D images and
            :data:`VOLUME_METRICS` for volumes.
        truth_kind: the truths' label convention (``binary``, ``classes``, ``instances``); ``auto`` decides
            from all truths together, as training does.
        foreground: the foreground value of binary truths (default: their one nonzero value).
        ignore: a truth value meaning "not annotated": those pixels are left out of every metric.
        spacing: pixel/voxel size per spatial axis for distances (default: each truth file's).
        spatial_dims: read the files as 2D images or 3D volumes (default: decided from each truth file).
        isbi_stack: also score all 2D slices together as the ISBI 2012 challenge does.

    Raises:
        BiounetError: in one line naming the file, for missing, unreadable or unpaired files, truths that do
            not fit the convention, mismatched shapes, unknown metrics or metrics that do not apply.
    """
    pairs = pair_by_stem(expand_inputs(_arguments(pred), unique_stems=False), expand_inputs(_arguments(truth)))
    dims = [spatial_dims or guess_spatial_dims(t) for _, t in pairs]
    labels = resolve_truths(pairs, dims, LabelConfig(truth_kind, foreground, ignore))
    names = list(_default_metrics(labels, dims) if metrics is None else metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise BiounetError(f"unknown metrics {', '.join(unknown)}; available: {', '.join(METRICS)}")
    return _score_pairs(pairs, dims, labels, names, spacing, isbi_stack)


def per_class_scores(pair: Pair, names: Sequence[str]) -> dict[str, float]:
    """``<metric>_<class>`` scores of each foreground class, for tasks with more than two classes.

    Only the metrics that are means over classes (Dice, IoU, surface distances) have per-class values.

    Args:
        pair: a prediction and its truth.
        names: metric names; those without per-class values are passed over.

    Raises:
        BiounetError: if a metric does not apply to the pair.
    """
    if pair.num_classes <= 2:
        return {}
    scores: dict[str, float] = {}
    try:
        for name in names:
            if name in ("dice", "iou"):
                overlap = pair.overlap
                values = overlap.dice if name == "dice" else overlap.iou
                scores.update({f"{name}_{c}": float(v) for c, v in zip(overlap.classes, values, strict=True)})
            elif name in _SURFACE_FIELDS:
                surface = pair.surface
                scores.update({f"{name}_{c}": float(getattr(s, _SURFACE_FIELDS[name]))
                               for c, s in zip(surface.classes, surface.scores, strict=True)})
    except ValueError as exc:
        raise BiounetError(f"cannot score: {exc}") from exc
    return scores


def isbi_stack_scores(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The ISBI 2012 challenge scores of all slices together, each at one best threshold for the stack.

    Args:
        pairs: ``(foreground probability, truth class map)`` per image; a volume contributes each of its
            slices along the first axis.

    Returns:
        ``slices`` and, for Rand error, V_rand, V_info and pixel error, the value and ``<name>_threshold``.

    Raises:
        BiounetError: if the slices differ in shape.
    """
    probabilities = [s for prob, _ in pairs for s in (prob[None] if prob.ndim == 2 else prob)]
    truths = [s for _, truth in pairs for s in (truth[None] if truth.ndim == 2 else truth)]
    scores = isbi_challenge_scores(probabilities, truths, warping=False)
    result: dict[str, float] = {"slices": len(probabilities)}
    for name in _STACK_SCORES:
        result[name] = float(getattr(scores, name))
        result[f"{name}_threshold"] = float(getattr(scores, f"{name}_threshold"))
    return result


def mean_accuracy(curve: Sequence[DatasetMatching]) -> float:
    """The mean of a curve's accuracies over its IoU thresholds.

    Args:
        curve: the object scores at each IoU threshold.
    """
    return float(np.mean([c.accuracy for c in curve]))


def _arguments(paths: Paths) -> list[str]:
    """One path or several, as :func:`~biounet.io.files.expand_inputs` takes them."""
    return [str(paths)] if isinstance(paths, str | Path) else [str(p) for p in paths]


def _default_metrics(labels: LabelConfig, dims: Sequence[int]) -> tuple[str, ...]:
    """Object matching for instance truths; ISBI's errors for 2D images; overlap and distance for volumes."""
    if labels.kind == "instances":
        return INSTANCE_METRICS
    return DEFAULT_METRICS if all(d == 2 for d in dims) else VOLUME_METRICS


def _score_pairs(pairs: Sequence[tuple[Path, Path]], dims: Sequence[int], labels: LabelConfig, names: list[str],
                 spacing: Sequence[float] | None, isbi_stack: bool) -> Evaluation:
    """Reads and scores each pair in turn, collecting what the stack and the object scores pool."""
    rows: list[dict[str, object]] = []
    stack: list[tuple[np.ndarray, np.ndarray]] = []
    objects: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for (pred_path, truth_path), pair_dims in zip(pairs, dims, strict=True):
        pair = load_pair(pred_path, truth_path, labels, spacing, pair_dims)
        try:
            scores = {**score(pair, names), **per_class_scores(pair, names)}
            if isbi_stack:
                # The command's option: what a user of `biounet evaluate` asked for.
                stack.append((pair.probability("--isbi-stack"), pair.truth))
            if labels.kind == "instances":
                objects.append((pair.instances("pred"), pair.instances("truth"), pair.ignored))
        except BiounetError as exc:
            raise BiounetError(str(exc), pred_path) from exc
        rows.append({"image": file_stem(truth_path), "prediction": str(pred_path), "truth": str(truth_path),
                     **scores})
    curve = matching_dataset([p for p, _, _ in objects], [t for _, t, _ in objects],
                             ignores=[i for _, _, i in objects]) if objects else ()
    return _summary(names, labels, rows, isbi_stack_scores(stack) if isbi_stack else None, tuple(curve))


def _summary(names: list[str], labels: LabelConfig, rows: list[dict[str, object]], stack: dict[str, float] | None,
             curve: tuple[DatasetMatching, ...]) -> Evaluation:
    """The evaluation of the scored rows: per-class columns completed with NaN, and the means."""
    columns = _columns(names, rows)
    for row in rows:
        for column in columns:
            row.setdefault(column, math.nan)  # a class that one image's task lacks
    mean = {n: float(np.nanmean([float(r[n]) for r in rows])) for n in columns}  # type: ignore[arg-type]
    return Evaluation(tuple(names), labels, tuple(rows), tuple(columns), mean, stack, curve)


def _curve_table(curve: Sequence[DatasetMatching]) -> str:
    """The object scores at each IoU threshold, matches pooled over all images."""
    first = curve[0]
    lines = [f"objects: {first.true_objects} true, {first.predicted_objects} predicted in {first.images} images; "
             "matched one-to-one, counts pooled over the images (StarDist's matching_dataset)",
             f"{'IoU':>5} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>9} {'accuracy':>9} "
             f"{'f1':>9} {'pq':>9}"]
    for c in curve:
        lines.append(f"{c.threshold:>5.2f} {c.true_positives:>6} {c.false_positives:>6} {c.false_negatives:>6} "
                     f"{c.precision:>9.4f} {c.recall:>9.4f} {c.accuracy:>9.4f} {c.f1:>9.4f} "
                     f"{c.panoptic_quality:>9.4f}")
    lines.append(f"mean accuracy over IoU {curve[0].threshold:.2f}..{curve[-1].threshold:.2f}: "
                 f"{mean_accuracy(curve):.4f}")
    return "\n".join(lines)


def _columns(names: list[str], rows: list[dict[str, object]]) -> list[str]:
    """The requested metrics, each followed by its per-class columns (in class order) if any row has them."""
    columns: list[str] = []
    for name in names:
        columns.append(name)
        per_class = {k for r in rows for k in r if k.startswith(f"{name}_") and k[len(name) + 1:].isdigit()}
        columns += sorted(per_class, key=lambda k: int(k[len(name) + 1:]))
    return columns


def _table(rows: Sequence[dict[str, object]], mean: dict[str, float], names: Sequence[str]) -> str:
    width = max(8, *(len(str(r["image"])) for r in rows))
    lines = [f"{'image':<{width}} " + " ".join(f"{n:>13}" for n in names)]
    for row in [*rows, {"image": "mean", **mean}]:
        lines.append(f"{row['image']!s:<{width}} " + " ".join(f"{float(row[n]):>13.6g}" for n in names))  # type: ignore[arg-type]
    return "\n".join(lines)


def _json_number(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
