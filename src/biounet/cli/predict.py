"""``biounet predict``: segment images with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from biounet.cli.inputs import expand_inputs
from biounet.data.axes import StackPlan, plan_stack
from biounet.data.readers import ImageMeta, file_stem, image_format, match_channels, probe_stored, read_stored
from biounet.data.writers import write_prediction
from biounet.errors import BiounetError
from biounet.infer.predict import predict, probabilities_to_mask, resolve_device
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.pretrained import resolve_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "predict", help="segment images with a trained model",
        description="Segment images or volumes of any size by overlap-tile prediction; a 3D model reads "
                    "volumes, a 2D model predicts stacks (Z, time) plane by plane. Per input: 2D images give "
                    "<stem>_prob.tif (float32 class probabilities, CYX) and <stem>_mask.png (class indices); "
                    "NIfTI volumes give <stem>_prob.nii.gz (classes on the last axis) and <stem>_mask.nii.gz "
                    "with the input's header and affine; other stacks and volumes (TIFF, HDF5, zarr) give "
                    "<stem>_prob.tif (CZYX, CTZYX) and <stem>_mask.tif (ZYX, TZYX).")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files (.png .tif .jpg .nii .nii.gz .h5 .zarr), directories, globs, or "
                             "FILE.h5:DATASET / STORE.zarr:ARRAY for an array inside a file")
    parser.add_argument("--model", required=True, metavar="CKPT",
                        help="a biounet checkpoint (.pt) or a shipped model's name (isbi2012-membranes)")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(resolve_model(args.model))
    config = checkpoint.config
    files = expand_inputs(args.inputs)
    # Check every input before writing anything, so a bad file does not leave a half-done output set.
    for path in files:
        stored = probe_stored(path, config.spatial_dims, args.axes)
        plan = plan_stack(stored.axes, stored.shape, config.spatial_dims, config.in_channels, path)
        match_channels_shape_check(plan, config.in_channels, path)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="images", unit="img", disable=len(files) < 2):
        array, stored = read_stored(path, config.spatial_dims, args.axes)
        plan = plan_stack(stored.axes, stored.shape, config.spatial_dims, config.in_channels, path)
        probs = predict_stack(checkpoint, array, plan, path, tile=args.tile, batch_size=args.batch_size,
                              tta=args.tta, device=device)
        spacing = tuple(size for size, a in zip(stored.spacing, plan.axes, strict=True) if a in "ZYX")
        meta = ImageMeta(Path(path), image_format(path) or "", spacing, stored.header)
        written = write_prediction(args.out, file_stem(path), probs, probabilities_to_mask(probs), meta,
                                   plan.out_axes)
        tqdm.write(f"{path} -> {', '.join(str(w) for w in written)}")
    return 0


def predict_stack(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, *,
                  tile: int | None = None, batch_size: int | None = None, tta: bool = False,
                  device: torch.device | None = None) -> np.ndarray:
    """Probabilities for every item of a stored array (each plane of a stack for a 2D model), in its order.

    Each item is predicted exactly as a file holding only that item would be, normalisation included.

    Args:
        checkpoint: the model and its normalisation.
        array: the array as stored.
        plan: how ``array`` is split into ``(C, *spatial)`` items (:func:`~biounet.data.axes.plan_stack`).
        path: the input, for messages.
        tile: see :func:`~biounet.infer.predict.predict`.
        batch_size: see :func:`~biounet.infer.predict.predict`.
        tta: see :func:`~biounet.infer.predict.predict`.
        device: see :func:`~biounet.infer.predict.predict`.

    Returns:
        ``(classes, *plan.out_shape)`` float32 probabilities.
    """
    config = checkpoint.model.config
    stacked = np.zeros((config.out_channels, *plan.batch_shape, *plan.spatial_shape), np.float32)
    count = int(np.prod(plan.batch_shape, dtype=np.int64))
    for index, item in tqdm(plan.items(array), total=count, desc="slices", unit="slice", disable=count < 2,
                            leave=False):
        image = match_channels(item, config.in_channels, path)
        region: tuple[slice | int, ...] = (slice(None), *index)
        try:
            predict(checkpoint.model, image, tile=tile, batch_size=batch_size, tta=tta,
                    normalization=checkpoint.normalization, device=device, progress=count < 2,
                    out=stacked[region])
        except BiounetError as exc:
            raise BiounetError(str(exc), path) from exc
    return plan.to_stored_order(stacked)


def match_channels_shape_check(plan: StackPlan, want: int, path: Path) -> None:
    """Fails early for channel counts that :func:`match_channels` cannot adapt."""
    have = plan.channels
    if have != want and not (want == 1 and have in (3, 4)) and not (want == 3 and have == 4):
        raise BiounetError(f"image has {have} channel(s) (axes {plan.axes.replace('-', '')}) but the model "
                           f"expects {want}; if the file's axes are not these, give them with --axes", path)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
