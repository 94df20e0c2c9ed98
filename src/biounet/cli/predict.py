"""``biounet predict``: segment images with a checkpoint."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from biounet.errors import BiounetError
from biounet.infer.files import OUTPUTS, Written, predict_files
from biounet.infer.predict import TileOptions
from biounet.infer.store import PROB_DTYPES


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "predict", help="segment images with a trained model",
        description="Segment images or volumes of any size by overlap-tile prediction; a 3D model reads "
                    "volumes, a 2D model predicts stacks (Z, time) plane by plane. Outputs per input (choose "
                    "with --outputs): prob, the float32 class probabilities (<stem>_prob.tif, CYX, CZYX or "
                    "CTZYX; <stem>_prob.nii.gz with classes on the last axis for NIfTI); mask, the class "
                    "indices (<stem>_mask.png for 2D images, <stem>_mask.tif for stacks and volumes, "
                    "<stem>_mask.nii.gz for NIfTI); instances, the object ids (<stem>_instances.tif, uint16 or "
                    "uint32, or <stem>_instances.nii.gz): an instance model's objects, or the connected "
                    "components of each class of a semantic model's mask, with ids unique over a stack "
                    "predicted plane by plane; objects, one CSV row per object (<stem>_objects.csv: label, "
                    "plane, size in pixels and physical units, centroid, bounding box, mean and max intensity "
                    "of each channel of the input as stored, equivalent diameter, and in 2D eccentricity and "
                    "solidity). NIfTI outputs keep the input's header and affine; TIFF stacks are calibrated "
                    "with the input's voxel size.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (.png .tif .jpg .nii .nii.gz .h5 .zarr), directories, globs, or "
                             "FILE.h5:DATASET / STORE.zarr:ARRAY for an array inside a file")
    parser.add_argument("--model", required=True, metavar="CKPT",
                        help="a biounet checkpoint (.pt), a BioImage Model Zoo package made by biounet export "
                             "(.zip), or a shipped model's name (isbi2012-membranes, nuclei)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output directory (for zarr outputs of one input, OUT.zarr names the store itself)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average over the rotations/flips the model was trained on (up to 8 in 2D, the "
                             "flips of all axes in 3D); default: as the model's training chose on its "
                             "validation images (biounet info shows it)")
    parser.add_argument("--object-size", default=None, metavar="D",
                        help="the diameter of the inputs' objects in pixels: each input is rescaled so that they are "
                             "the size the model was trained on (biounet info shows it), and its outputs come "
                             "back at the input's size; auto: estimated per input from a first pass, which is "
                             "kept when they are within 1.25x of the model's size (for a zarr output, measured on "
                             "the input's centre); none: the inputs as they are; default: as the model says "
                             "(auto for nuclei, none for others; biounet info shows it)")
    parser.add_argument("--pixel-size", default=None, metavar="P",
                        help="instead of --object-size: the inputs' pixel size, in the unit of the model's "
                             "calibrated training images; their objects are taken to be as large as the model's")
    parser.add_argument("--tile", type=_positive, default=None, metavar="N",
                        help="network input tile size per axis in pixels/voxels (default 700 in 2D, the "
                             "paper used 572; 132 in 3D)")
    parser.add_argument("--batch-size", type=_positive, default=None, metavar="N",
                        help="tiles per forward pass (default: 1 on cpu, 4 on cuda)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cpu)")
    parser.add_argument("--axes", default=None, metavar="AXES",
                        help="the inputs' axes in stored order, one letter of T, Z, C, Y, X per dimension (e.g. "
                             "ZYX, CYX, YXC, TZYX, ilastik's ZYXC), for files whose axis metadata is missing or "
                             "wrong; NIfTI's i, j, k are YXZ")
    parser.add_argument("--channel", type=_channel, default=None, metavar="N",
                        help="segment only channel N of each input, counting from 0 (e.g. the nuclear stain of a "
                             "fluorescence image of several channels), as a grey image; the objects table still "
                             "measures every channel")
    parser.add_argument("--out-format", choices=("auto", "tiff", "zarr"), default="auto",
                        help="tiff: the files above (NIfTI for NIfTI inputs); zarr: <stem>.zarr with prob/0 and "
                             "mask/0 (and instances/0, equal to the whole image's objects) as OME-Zarr images, "
                             "written block by block with the input read region by "
                             "region (zarr, HDF5, TIFF), so memory stays bounded by a block, and a rerun after a "
                             "crash computes only the unfinished blocks; auto (default): zarr when the "
                             "probabilities would take 512 MiB or more, else tiff")
    parser.add_argument("--prob-dtype", choices=PROB_DTYPES, default="float32",
                        help="zarr outputs: probabilities as float32 (default), float16 or uint8 (255 = 1.0)")
    parser.add_argument("--block", type=_positive, default=None, metavar="N",
                        help="zarr outputs: block edge in output pixels/voxels, rounded to whole tiles (default "
                             "2048 in 2D, 256 in 3D)")
    parser.add_argument("--dask", default=None, metavar="SCHEDULER",
                        help="zarr outputs: compute the blocks on Dask, local:N for a local cluster of N "
                             "single-threaded worker processes or a scheduler's address (tcp://host:8786); "
                             "needs pip install 'biounet[cluster]'")
    parser.add_argument("--outputs", default=None, metavar="LIST",
                        help=f"comma-separated outputs to write, of {','.join(OUTPUTS)} (default: all four for "
                             f"an instance model, prob,mask otherwise)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    chosen = parse_outputs(args.outputs) if args.outputs is not None else None
    size = None if args.object_size is None else parse_size(args.object_size, "--object-size", auto=True)
    pixel_size = None if args.pixel_size is None else float(parse_size(args.pixel_size, "--pixel-size"))
    options = TileOptions(args.tile, args.batch_size, args.tta, args.device, size)
    predict_files(args.model, args.inputs, args.out, outputs=chosen, options=options, axes=args.axes,
                  channel=args.channel, out_format=args.out_format, prob_dtype=args.prob_dtype, block=args.block,
                  dask=args.dask, pixel_size=pixel_size, on_written=_report)
    return 0


def _report(written: Written) -> None:
    """What was written, on stdout; a note on how the input was read, on stderr."""
    tqdm.write(_line(written))
    if written.note is not None:
        tqdm.write(f"note: {written.input}: {written.note}", file=sys.stderr)


def _line(written: Written) -> str:
    """``INPUT -> OUTPUTS``, and the scale it was predicted at, or for a zarr store what was computed."""
    if written.blocks is None:
        return f"{written.input} -> {', '.join(str(p) for p in written.paths)}{_scaled(written)}"
    done, total = written.blocks
    before = f"; {total - done} done by an earlier run" if done < total else ""
    found = f"; {written.objects} objects in instances/0" if written.objects is not None else ""
    skipped = "; the objects table is written for tiff outputs only" if "objects" in written.skipped else ""
    return (f"{written.input} -> {written.paths[0]} ({done} of {total} blocks computed{before}{found}{skipped})"
            f"{_scaled(written)}")


def _scaled(written: Written) -> str:
    """`` (objects of 38.5 px: rescaled 0.51x)``, or nothing for an input predicted without an object size."""
    if written.object_size is None:
        return ""
    how = "predicted as it is" if written.scale == 1.0 else f"rescaled {written.scale:.3g}x"
    return f" (objects of {written.object_size:.1f} px: {how})"


def parse_outputs(text: str) -> tuple[str, ...]:
    """The outputs a ``--outputs`` list names, in :data:`OUTPUTS` order.

    Raises:
        BiounetError: for an unknown name or an empty list.
    """
    names = {n.strip().lower() for n in text.split(",") if n.strip()}
    unknown = sorted(names - set(OUTPUTS))
    if unknown:
        raise BiounetError(f"unknown output(s) {', '.join(unknown)} in --outputs; choose from {', '.join(OUTPUTS)}")
    if not names:
        raise BiounetError(f"--outputs names no output; choose from {', '.join(OUTPUTS)}")
    return tuple(o for o in OUTPUTS if o in names)


def parse_size(text: str, flag: str, auto: bool = False) -> float | str:
    """A positive number from ``text`` (or ``"auto"`` or ``"none"`` where ``auto`` allows them).

    Raises:
        BiounetError: naming ``flag``, for anything else.
    """
    if auto and text.strip().lower() in ("auto", "none"):
        return text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise BiounetError(f"{flag} must be a positive number{', auto or none' if auto else ''}, got {text!r}")
    return value


def _integer(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``, else a usage error saying it must be ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive = _integer(1, "a positive integer")
_channel = _integer(0, "a channel index from 0")
