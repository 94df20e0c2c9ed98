"""``biounet predict``: segment images with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from biounet.errors import BiounetError
from biounet.infer.devices import resolve_device
from biounet.infer.instances_blocks import instances_to_store
from biounet.infer.objects import object_table, write_object_table
from biounet.infer.out_of_core import predict_to_store
from biounet.infer.stack import check_channels, predict_stack, stack_instances
from biounet.infer.store import PROB_DTYPES
from biounet.io.axes import StackPlan, plan_stack
from biounet.io.files import expand_inputs, file_stem
from biounet.io.readers import image_meta
from biounet.io.stored import probe_stored, read_stored
from biounet.io.writers import write_instances, write_prediction
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.models.outputs import probabilities_to_mask
from biounet.pretrained import resolve_model

OUTPUTS = ("prob", "mask", "instances", "objects")
# Probabilities (float32) from this size on are written to zarr by --out-format auto.
ZARR_FROM_BYTES = 512 * 1024**2
"""What ``predict`` can write per input, in the order it writes them."""


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
                             "(.zip), or a shipped model's name (isbi2012-membranes, dsb2018-nuclei)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output directory (for zarr outputs of one input, OUT.zarr names the store itself)")
    parser.add_argument("--tta", action="store_true",
                        help="average over the 8 rotations/flips (in 3D: the flips of all axes)")
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
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(resolve_model(args.model))
    outputs = chosen if chosen is not None else default_outputs(checkpoint)
    config = checkpoint.config
    files = expand_inputs(args.inputs)
    # Check every input before writing anything, so a bad file does not leave a half-done output set.
    formats = {}
    for path in files:
        stored = probe_stored(path, config.spatial_dims, args.axes)
        plan = plan_stack(stored.axes, stored.shape, config.spatial_dims, config.in_channels, path)
        check_channels(plan, config.in_channels, path)
        formats[path] = out_format(args.out_format, plan, config.out_channels)
        if formats[path] == "zarr":
            zarr_outputs(chosen, checkpoint, path)
    if args.dask is not None and "zarr" not in formats.values():
        raise BiounetError("--dask computes zarr outputs: add --out-format zarr")
    single_store = args.out.suffix.lower() == ".zarr" and len(files) == 1 and formats[files[0]] == "zarr"
    if not single_store:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="images", unit="img", disable=len(files) < 2):
        if formats[path] == "zarr":
            # --out big.zarr names the store itself for a single input; otherwise stores go into the folder.
            store = args.out if single_store else args.out / f"{file_stem(path)}.zarr"
            done, total = predict_to_store(path, resolve_model(args.model), store, axes=args.axes, tile=args.tile,
                                           batch_size=args.batch_size, tta=args.tta, device=str(device),
                                           prob_dtype=args.prob_dtype, block=args.block, scheduler=args.dask,
                                           progress=True)
            before = f"; {total - done} done by an earlier run" if done < total else ""
            found = ""
            if "instances" in outputs:
                found = f"; {instances_to_store(store, checkpoint.instances)} objects in instances/0"
            skipped = "; the objects table is written for tiff outputs only" \
                if chosen is None and "objects" in outputs else ""
            tqdm.write(f"{path} -> {store} ({done} of {total} blocks computed{before}{found}{skipped})")
            continue
        array, stored = read_stored(path, config.spatial_dims, args.axes)
        plan = plan_stack(stored.axes, stored.shape, config.spatial_dims, config.in_channels, path)
        probs = predict_stack(checkpoint, array, plan, path, tile=args.tile, batch_size=args.batch_size,
                              tta=args.tta, device=device)
        meta = image_meta(path, stored, plan)
        stem, mask = file_stem(path), probabilities_to_mask(probs)
        maps = [o for o in outputs if o in ("prob", "mask")]
        written = write_prediction(args.out, stem, probs, mask, meta, plan.out_axes, maps) if maps else []
        if "instances" in outputs or "objects" in outputs:
            # Per item (plane) order: the objects table measures each plane of a stack on its own.
            ids = stack_instances(checkpoint, probs, mask, plan)
            if "instances" in outputs:
                written.append(write_instances(args.out, stem, plan.to_stored_order(ids[None])[0], meta,
                                               plan.out_axes))
            if "objects" in outputs:
                sizes = dict(zip(plan.axes, stored.spacing, strict=True))
                table = object_table(ids, raw_items(array, plan, config.in_channels),
                                     tuple(sizes[a] for a in plan.spatial_axes), plan.batch_axes)
                written.append(args.out / f"{stem}_objects.csv")
                write_object_table(written[-1], table)
        tqdm.write(f"{path} -> {', '.join(str(w) for w in written)}")
    return 0


def out_format(wanted: str, plan: StackPlan, classes: int) -> str:
    """``tiff`` or ``zarr`` for ``--out-format wanted``: ``auto`` is zarr from 512 MiB of probabilities."""
    if wanted != "auto":
        return wanted
    values = classes * int(np.prod(plan.out_shape, dtype=np.int64))
    return "zarr" if values * 4 >= ZARR_FROM_BYTES else "tiff"


def zarr_outputs(chosen: tuple[str, ...] | None, checkpoint: Checkpoint, path: Path) -> None:
    """Fails for outputs a zarr store does not hold (prob and mask always, instances for instance models and
    models of one or two classes)."""
    if "objects" in (chosen or ()):
        raise BiounetError("zarr outputs hold prob, mask and instances; objects need --out-format tiff", path)
    if "instances" in (chosen or ()) and checkpoint.instances is None and checkpoint.config.out_channels > 2:
        raise BiounetError("zarr instances are made for instance models and models of one or two classes; "
                           "use --out-format tiff for the components of each class", path)


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


def default_outputs(checkpoint: Checkpoint) -> tuple[str, ...]:
    """All outputs for an instance model; the probabilities and the mask for a semantic one."""
    return OUTPUTS if checkpoint.instances is not None else ("prob", "mask")


def raw_items(array: np.ndarray, plan: StackPlan, in_channels: int) -> np.ndarray:
    """The stored image as ``(C, *plan.batch_shape, *plan.spatial_shape)``, intensities untouched.

    Channels are the file's, except that a fourth channel that the model takes for alpha (RGBA for a
    1- or 3-channel model, see :func:`~biounet.io.channels.match_channels`) is left out.
    """
    channels = 3 if plan.channels == 4 and in_channels in (1, 3) else plan.channels
    raw = np.empty((channels, *plan.batch_shape, *plan.spatial_shape), array.dtype)
    for index, item in plan.items(array):
        region: tuple[slice | int, ...] = (slice(None), *index)
        raw[region] = item[:channels]
    return raw


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
