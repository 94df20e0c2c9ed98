"""``biounet evaluate``: score predictions against ground truth, per image and on average."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from biounet.atomic import atomic_path
from biounet.data.labels import KINDS, LabelConfig, label_values, read_label, read_label_meta
from biounet.errors import BiounetError
from biounet.io.files import expand_inputs, file_stem
from biounet.io.readers import ImageMeta, guess_spatial_dims, read_image
from biounet.metrics.instances import DatasetMatching, matching_dataset
from biounet.metrics.isbi import isbi_challenge_scores
from biounet.metrics.suite import DEFAULT_METRICS, METRICS, Pair, pair_from_arrays, score

# Suffixes that `biounet predict` (and common tools) append to an input's stem.
_SUFFIXES = ("_instances", "_prob", "_mask", "_pred", "_seg")
# What the table shows by default when the truths are instance maps: overlap, and the objects matched.
INSTANCE_METRICS = ("dice", "iou", "ap50", "f1_50", "pq")
# ISBI's pixel and Rand errors are for 2D membrane maps; volumes are usually scored by overlap and distance.
VOLUME_METRICS = ("dice", "iou", "hd95")
# Per-class surface scores: metric name -> field of SurfaceScores.
_SURFACE_FIELDS = {"hd95": "hd95", "asd": "average_surface_distance", "surface_dice": "surface_dice"}
# The challenge's measures reported by --isbi-stack (the warping error, its slowest, is left out).
_STACK_SCORES = ("rand_error", "v_rand", "v_info", "pixel_error")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate", help="score predictions against ground truth",
        description="Pair predictions with ground-truth label images or volumes by file stem (ignoring the "
                    f"suffixes {', '.join(_SUFFIXES)} and .nii.gz; of one stem, an instance map is preferred, "
                    "then a probability map), print a table per image and the mean, and optionally write "
                    "JSON/CSV. With instance truths, the objects are also scored over all images together at "
                    "IoU 0.50, 0.55, ..., 0.90 (StarDist's matching_dataset: precision, recall, accuracy, F1, "
                    "PQ) with the mean accuracy over them; the JSON holds that curve under 'objects'. "
                    "Predictions may be probability maps (float TIFF or NIfTI, classes first in TIFF and on "
                    "the 4th axis in NIfTI) or label images. With more than two classes, Dice, IoU and "
                    "surface distances are also reported per class (dice_1, dice_2, ...). Distances are in "
                    "the truth file's units (NIfTI zooms, ImageJ calibration, HDF5/zarr element_size_um) "
                    "unless --spacing is given.")
    parser.add_argument("--pred", nargs="+", required=True, metavar="PATH",
                        help="prediction files/folders/globs, or FILE.h5:DATASET / STORE.zarr:ARRAY")
    parser.add_argument("--truth", nargs="+", required=True, metavar="PATH",
                        help="ground-truth files/folders/globs, or FILE.h5:DATASET / STORE.zarr:ARRAY")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated, from: {', '.join(METRICS)} (default: {','.join(DEFAULT_METRICS)} "
                             f"for 2D images, {','.join(VOLUME_METRICS)} for volumes)")
    parser.add_argument("--truth-kind", choices=KINDS, default="auto",
                        help="how to read the truth: binary (0 and one foreground value: 0/1, 0/255, bool), class "
                             "indices, or instance ids; auto (default) decides from all truth files together, "
                             "as training does (see --foreground)")
    parser.add_argument("--foreground", type=int, metavar="VALUE",
                        help="the foreground value of binary truths (default: their one nonzero value)")
    parser.add_argument("--ignore", type=int, metavar="VALUE",
                        help="a truth value meaning 'not annotated' (e.g. 255 in sparse labels): those pixels "
                             "are left out of every metric")
    parser.add_argument("--spatial-dims", type=int, choices=[2, 3], default=None,
                        help="read the files as 2D images or 3D volumes (default: from each truth file: NIfTI, "
                             "TIFF with a Z axis and 3+-dimensional HDF5/zarr arrays are volumes)")
    parser.add_argument("--spacing", type=float, nargs="+", metavar="S",
                        help="pixel/voxel size per spatial axis for distances (default: the truth file's)")
    parser.add_argument("--isbi-stack", action="store_true",
                        help="also score all 2D slices together as the ISBI 2012 challenge does (one threshold "
                             "for the whole stack): Rand error, V_rand, V_info and pixel error with their "
                             "thresholds, printed after the table and written as 'stack' to the JSON and CSV")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write all scores as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write all scores as CSV")
    parser.set_defaults(run=run)


def pair_by_stem(predictions: list[Path], truths: list[Path]) -> list[tuple[Path, Path]]:
    """``(prediction, truth)`` pairs matched by :func:`~biounet.io.files.file_stem`; of several predictions
    of one stem, an instance map (``_instances``) is taken first, then probabilities (``_prob``).

    Raises:
        BiounetError: for a truth without prediction (naming it) or nothing matched at all.
    """
    by_stem: dict[str, Path] = {}
    ranks: dict[str, int] = {}
    for path in predictions:
        stem = full = file_stem(path)
        for suffix in _SUFFIXES:
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
        labels: the convention given (``--truth-kind``, ``--foreground``, ``--ignore``).

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


def per_class_scores(pair: Pair, names: Sequence[str]) -> dict[str, float]:
    """``<metric>_<class>`` scores of each foreground class, for tasks with more than two classes.

    Only the metrics that are means over classes (Dice, IoU, surface distances) have per-class values.

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


def run(args: argparse.Namespace) -> int:
    pairs = pair_by_stem(expand_inputs(args.pred, unique_stems=False), expand_inputs(args.truth))
    dims = [args.spatial_dims or guess_spatial_dims(truth) for _, truth in pairs]
    labels = resolve_truths(pairs, dims, LabelConfig(args.truth_kind, args.foreground, args.ignore))
    if args.metrics is None:
        names = list(INSTANCE_METRICS if labels.kind == "instances" else
                     DEFAULT_METRICS if all(d == 2 for d in dims) else VOLUME_METRICS)
    else:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise BiounetError(f"unknown metrics {', '.join(unknown)}; available: {', '.join(METRICS)}")
    rows: list[dict[str, object]] = []
    stack: list[tuple[np.ndarray, np.ndarray]] = []
    objects: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for (pred_path, truth_path), spatial_dims in zip(pairs, dims, strict=True):
        pair = load_pair(pred_path, truth_path, labels, args.spacing, spatial_dims)
        try:
            scores = {**score(pair, names), **per_class_scores(pair, names)}
            if args.isbi_stack:
                stack.append((pair.probability("--isbi-stack"), pair.truth))
            if labels.kind == "instances":
                objects.append((pair.instances("pred"), pair.instances("truth"), pair.ignored))
        except BiounetError as exc:
            raise BiounetError(str(exc), pred_path) from exc
        rows.append({"image": file_stem(truth_path), "prediction": str(pred_path), "truth": str(truth_path),
                     **scores})
    columns = _columns(names, rows)
    for row in rows:
        for column in columns:
            row.setdefault(column, math.nan)  # a class that one image's task lacks
    mean = {n: float(np.nanmean([float(r[n]) for r in rows])) for n in columns}  # type: ignore[arg-type]
    stack_scores = isbi_stack_scores(stack) if args.isbi_stack else None
    curve = matching_dataset([p for p, _, _ in objects], [t for _, t, _ in objects],
                             ignores=[i for _, _, i in objects]) if objects else ()
    print(_table(rows, mean, columns))
    if curve:
        print(_curve_table(curve))
    if stack_scores is not None:
        print(f"stack of {stack_scores['slices']} slices, one threshold for all (ISBI 2012): "
              + ", ".join(f"{name} {stack_scores[name]:.6g} (threshold {stack_scores[name + '_threshold']:g})"
                          for name in _STACK_SCORES))
    print(f"truth: {labels.describe()}")
    if args.json:
        report: dict[str, object] = {"metrics": names, "truth": labels.to_dict(), "images": rows, "mean": mean}
        if stack_scores is not None:
            report["stack"] = stack_scores
        if curve:
            report["objects"] = {"curve": [dataclasses.asdict(c) for c in curve],
                                 "mean_accuracy": mean_accuracy(curve)}
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=_json_number))
    if args.csv:
        buffer = io.StringIO()
        extra = [k for k in stack_scores or {} if k not in columns]
        writer = csv.DictWriter(buffer, fieldnames=["image", "prediction", "truth", *columns, *extra])
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow({"image": "mean", **mean})
        if stack_scores is not None:
            writer.writerow({"image": "stack", **stack_scores})
        with atomic_path(args.csv) as tmp:
            tmp.write_text(buffer.getvalue())
    return 0


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
    """The mean of a curve's accuracies over its IoU thresholds."""
    return float(np.mean([c.accuracy for c in curve]))


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


def _table(rows: list[dict[str, object]], mean: dict[str, float], names: list[str]) -> str:
    width = max(8, *(len(str(r["image"])) for r in rows))
    lines = [f"{'image':<{width}} " + " ".join(f"{n:>13}" for n in names)]
    for row in [*rows, {"image": "mean", **mean}]:
        lines.append(f"{row['image']!s:<{width}} " + " ".join(f"{float(row[n]):>13.6g}" for n in names))  # type: ignore[arg-type]
    return "\n".join(lines)


def _json_number(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
