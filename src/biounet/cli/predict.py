"""``biounet predict``: segment images with a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from biounet.cli.inputs import expand_inputs
from biounet.data.readers import file_stem, match_channels, probe_image, read_image_meta
from biounet.data.writers import write_prediction
from biounet.errors import BiounetError
from biounet.infer.predict import predict, probabilities_to_mask, resolve_device
from biounet.models.checkpoint import load_checkpoint
from biounet.pretrained import resolve_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "predict", help="segment images with a trained model",
        description="Segment images or volumes of any size by overlap-tile prediction; a 3D model reads "
                    "volumes. Per input: 2D images give <stem>_prob.tif (float32 class probabilities, CYX) "
                    "and <stem>_mask.png (class indices); NIfTI volumes give <stem>_prob.nii.gz (classes on "
                    "the 4th axis) and <stem>_mask.nii.gz with the input's header and affine; other volumes "
                    "(TIFF stacks, HDF5, zarr) give <stem>_prob.tif (CZYX) and <stem>_mask.tif (ZYX).")
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
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"],
                        help="default: cuda when available, else cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(resolve_model(args.model))
    config = checkpoint.config
    files = expand_inputs(args.inputs)
    # Check every input before writing anything, so a bad file does not leave a half-done output set.
    for path in files:
        info = probe_image(path, config.spatial_dims)
        match_channels_shape_check(info.channels, config.in_channels, path)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="images", unit="img", disable=len(files) < 2):
        image, meta = read_image_meta(path, config.spatial_dims)
        image = match_channels(image, config.in_channels, path)
        try:
            probs = predict(checkpoint.model, image, tile=args.tile, batch_size=args.batch_size, tta=args.tta,
                            normalization=checkpoint.normalization, device=device, progress=True)
        except BiounetError as exc:
            raise BiounetError(str(exc), path) from exc
        written = write_prediction(args.out, file_stem(path), probs, probabilities_to_mask(probs), meta)
        tqdm.write(f"{path} -> {', '.join(str(w) for w in written)}")
    return 0


def match_channels_shape_check(have: int, want: int, path: Path) -> None:
    """Fails early for channel counts that :func:`match_channels` cannot adapt."""
    if have != want and not (want == 1 and have in (3, 4)) and not (want == 3 and have == 4):
        raise BiounetError(f"image has {have} channel(s) but the model expects {want}", path)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
