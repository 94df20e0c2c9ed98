"""``biounet evaluate``: score predictions against ground truth, per image and on average."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from biounet.atomic import atomic_path
from biounet.cli.inputs import expand_inputs
from biounet.data.readers import read_image
from biounet.errors import BiounetError
from biounet.metrics.suite import DEFAULT_METRICS, METRICS, Pair, pair_from_arrays, score

# Suffixes that `biounet predict` (and common tools) append to an input's stem.
_SUFFIXES = ("_prob", "_mask", "_pred", "_seg")


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate", help="score predictions against ground truth",
        description="Pair predictions with ground-truth label images by file stem (ignoring the suffixes "
                    f"{', '.join(_SUFFIXES)}; a probability map is preferred over a mask of the same stem), "
                    "print a table per image and the mean, and optionally write JSON/CSV. Predictions may "
                    "be probability maps (float TIFF, classes first) or label images.")
    parser.add_argument("--pred", nargs="+", required=True, metavar="PATH", help="prediction files/folders/globs")
    parser.add_argument("--truth", nargs="+", required=True, metavar="PATH", help="ground-truth files/folders/globs")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help=f"comma-separated, from: {', '.join(METRICS)} (default: %(default)s)")
    parser.add_argument("--truth-kind", choices=["auto", "binary", "classes", "instances"], default="auto",
                        help="how to read the truth: binary (0 / one foreground value, e.g. ISBI's 255), "
                             "class indices, or instance ids; auto decides from the values")
    parser.add_argument("--spacing", type=float, nargs="+", metavar="S", help="pixel size per axis (distances)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write all scores as JSON")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write all scores as CSV")
    parser.set_defaults(run=run)


def pair_by_stem(predictions: list[Path], truths: list[Path]) -> list[tuple[Path, Path]]:
    """``(prediction, truth)`` pairs matched by stem.

    Raises:
        BiounetError: for a truth without prediction (naming it) or nothing matched at all.
    """
    by_stem: dict[str, Path] = {}
    for path in predictions:
        stem = path.stem
        for suffix in _SUFFIXES:
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        if stem not in by_stem or path.stem.endswith("_prob"):
            by_stem[stem] = path
    missing = [t for t in truths if t.stem not in by_stem]
    if missing:
        raise BiounetError("no prediction with this stem", missing[0])
    return [(by_stem[t.stem], t) for t in truths]


def load_pair(pred_path: Path, truth_path: Path, truth_kind: str, spacing: list[float] | None) -> Pair:
    """Reads a prediction and its truth into a :class:`Pair`."""
    prediction = read_image(pred_path)
    if prediction.dtype.kind != "f":
        prediction = prediction[0] if prediction.shape[0] == 1 else prediction
    truth = read_image(truth_path)
    if truth.shape[0] != 1 or truth.dtype.kind == "f":
        raise BiounetError("a truth must be a one-channel integer label image", truth_path)
    labels = truth[0].astype(np.int64)
    values = np.unique(labels)
    kind = truth_kind
    if kind == "auto":
        kind = "binary" if len(values) <= 2 and values.max(initial=0) > 1 else "classes"
        if prediction.dtype.kind == "f" and values.max(initial=0) >= prediction.shape[0] and kind == "classes":
            kind = "instances"
    if kind == "binary":
        classes = (labels == values.max(initial=0)).astype(np.int64) if len(values) == 2 else (labels > 0)
    elif kind == "instances":
        classes = (labels > 0).astype(np.int64)
    else:
        classes = labels
    try:
        return pair_from_arrays(prediction, np.asarray(classes, np.int64), spacing=spacing,
                                truth_labels=labels if kind == "instances" else None,
                                num_classes=2 if kind in ("binary", "instances") else None)
    except BiounetError as exc:
        raise BiounetError(str(exc), pred_path) from exc


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.metrics.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise BiounetError(f"unknown metrics {', '.join(unknown)}; available: {', '.join(METRICS)}")
    pairs = pair_by_stem(expand_inputs(args.pred, unique_stems=False), expand_inputs(args.truth))
    rows: list[dict[str, object]] = []
    for pred_path, truth_path in pairs:
        pair = load_pair(pred_path, truth_path, args.truth_kind, args.spacing)
        try:
            scores = score(pair, names)
        except BiounetError as exc:
            raise BiounetError(str(exc), pred_path) from exc
        rows.append({"image": truth_path.stem, "prediction": str(pred_path), "truth": str(truth_path), **scores})
    mean = {n: float(np.nanmean([float(r[n]) for r in rows])) for n in names}  # type: ignore[arg-type]
    print(_table(rows, mean, names))
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"metrics": names, "images": rows, "mean": mean}, indent=2,
                                      default=_json_number))
    if args.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["image", "prediction", "truth", *names])
        writer.writeheader()
        writer.writerows(rows)
        writer.writerow({"image": "mean", **mean})
        with atomic_path(args.csv) as tmp:
            tmp.write_text(buffer.getvalue())
    return 0


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
