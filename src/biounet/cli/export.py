"""``biounet export``: write a checkpoint's network as ONNX, or as a BioImage Model Zoo package."""

from __future__ import annotations

import argparse
import dataclasses
from importlib import resources
from pathlib import Path

from biounet.errors import BiounetError
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.pretrained import SAMPLE_IMAGES, resolve_model, sample_image

FORMATS = ("onnx", "bioimageio")
# The format an output's suffix implies when --format is not given.
_BY_SUFFIX = {".onnx": "onnx", ".zip": "bioimageio"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX or as a BioImage Model Zoo package",
        description="Export a model. onnx: the network alone (input 'image' N,C,*spatial -> output 'logits'), "
                    "with dynamic batch and spatial sizes; normalisation and softmax are not part of the graph. "
                    "bioimageio: a BioImage Model Zoo package (bioimageio.yaml, spec 0.5) with PyTorch state "
                    "dict, TorchScript and ONNX weights, the checkpoint's normalisation as preprocessing, "
                    "softmax (sigmoid) as postprocessing, test tensors, a cover and the model card; it is "
                    "checked with bioimageio.core's test before it is written, and `biounet predict --model "
                    "OUT.zip` loads it back. Needs pip install 'biounet[bioimageio]'.")
    parser.add_argument("checkpoint", metavar="CKPT", help="a biounet checkpoint (.pt) or a shipped model's name")
    parser.add_argument("output", type=Path, metavar="OUT", help="OUT.onnx or OUT.zip")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="default: from OUT's suffix (.onnx: onnx, .zip: bioimageio)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (also of the package's ONNX weights)")
    group = parser.add_argument_group("bioimageio packages")
    group.add_argument("--test-image", type=Path, default=None, metavar="FILE",
                       help="image to crop the test tensors and the cover from (default: the sample image of a shipped "
                            "model, else a synthetic image)")
    group.add_argument("--card", type=Path, default=None, metavar="FILE.md",
                       help="model card to include as documentation (default: CKPT's .md beside it, else one "
                            "made from the checkpoint)")
    group.add_argument("--name", default=None, help="model name (default: CKPT's file name)")
    group.add_argument("--author", action="append", default=None, metavar="NAME",
                       help="an author (repeat for several; default 'biounet developers')")
    group.add_argument("--license", default=None, metavar="SPDX", help="license identifier (default MIT)")
    group.add_argument("--pixel-size", type=float, nargs="+", default=None, metavar="SIZE",
                       help="training pixel size per spatial axis (Z Y X order; one value for all axes), in "
                            "--unit; known for the shipped isbi2012-membranes (4 nm)")
    group.add_argument("--unit", default="micrometer", help="unit of --pixel-size (default micrometer)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    fmt = args.format or _BY_SUFFIX.get(args.output.suffix.lower())
    if fmt is None:
        raise BiounetError("cannot tell the format from the output's suffix: name it OUT.onnx or OUT.zip, or "
                           "give --format onnx|bioimageio", args.output)
    path = resolve_model(args.checkpoint)
    checkpoint = load_checkpoint(path)
    if not args.output.parent.is_dir():
        raise BiounetError("output directory does not exist", args.output.parent)
    if fmt == "bioimageio":
        _export_package(args, path, checkpoint)
    else:
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
        except ImportError as exc:
            raise BiounetError("ONNX export needs the 'onnx' extra: pip install 'biounet[onnx]'") from exc
        from biounet.export.onnx import export_onnx

        export_onnx(checkpoint.model, args.output, opset=args.opset)
    print(f"wrote {args.output}")
    return 0


def _export_package(args: argparse.Namespace, path: Path, checkpoint: Checkpoint) -> None:
    from biounet.export.bioimageio import export_bioimageio, package_info
    from biounet.io.channels import match_channels
    from biounet.io.readers import read_image

    config = checkpoint.config
    if args.card is not None and not args.card.is_file():
        raise BiounetError("model card not found", args.card)
    card_path = args.card or path.with_suffix(".md")
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else None
    stem = path.name.removesuffix(".zip").removesuffix(".pt")
    # What the shipped models' cards know (pixel size, modality) applies to the shipped files only.
    shipped = path.resolve().parent == Path(str(resources.files("biounet.pretrained"))).resolve()
    info = package_info(args.name or stem, checkpoint, card, shipped=stem if shipped else None)
    pixel_size, unit = info.pixel_size, info.unit
    if args.pixel_size is not None:
        pixel_size = tuple(args.pixel_size) * (config.spatial_dims if len(args.pixel_size) == 1 else 1)
        if len(pixel_size) != config.spatial_dims or min(pixel_size) <= 0:
            raise BiounetError(f"--pixel-size needs 1 or {config.spatial_dims} positive values")
        unit = args.unit
    info = dataclasses.replace(info, authors=tuple(args.author or info.authors),
                               license=args.license or info.license, pixel_size=pixel_size, unit=unit)
    image = None
    # A shipped model's test tensors and cover come from its sample image (the napari plugin's).
    test_image = args.test_image or (sample_image(stem) if shipped and stem in SAMPLE_IMAGES else None)
    if test_image is not None:
        image = match_channels(read_image(test_image, config.spatial_dims), config.in_channels, test_image)
    export_bioimageio(checkpoint, args.output, info, card=card, test_image=image, opset=args.opset)
