"""``biounet evaluate``: score predictions against ground truth, per image and on average.

The arguments go to :func:`biounet.metrics.evaluate.evaluate`; this module prints its report and writes the
JSON and CSV files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from biounet.atomic import atomic_path
from biounet.data.labels import KINDS
from biounet.metrics.evaluate import VOLUME_METRICS, evaluate
from biounet.metrics.pairs import SUFFIXES
from biounet.metrics.suite import DEFAULT_METRICS, METRICS


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "evaluate", help="score predictions against ground truth",
        description="Pair predictions with ground-truth label images or volumes by file stem (ignoring the "
                    f"suffixes {', '.join(SUFFIXES)} and .nii.gz; of one stem, an instance map is preferred, "
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


def run(args: argparse.Namespace) -> int:
    metrics = None if args.metrics is None else [n.strip() for n in args.metrics.split(",") if n.strip()]
    evaluation = evaluate(args.pred, args.truth, metrics=metrics, truth_kind=args.truth_kind,
                          foreground=args.foreground, ignore=args.ignore, spacing=args.spacing,
                          spatial_dims=args.spatial_dims, isbi_stack=args.isbi_stack)
    print(evaluation.to_text())
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(evaluation.to_json())
    if args.csv:
        with atomic_path(args.csv) as tmp:
            tmp.write_text(evaluation.to_csv())
    return 0
