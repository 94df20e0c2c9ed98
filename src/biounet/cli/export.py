"""``biounet export``: write a checkpoint's network as ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path

from biounet.errors import BiounetError
from biounet.models.checkpoint import load_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX",
        description="Export the network to ONNX (input 'image' N,C,*spatial -> output 'logits'), with dynamic "
                    "batch and spatial sizes. Normalisation and softmax are not part of the graph.")
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.add_argument("output", type=Path, metavar="OUT.onnx")
    parser.add_argument("--opset", type=int, default=17)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.checkpoint)
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError as exc:
        raise BiounetError("ONNX export needs the 'onnx' extra: pip install 'biounet[onnx]'") from exc
    from biounet.infer.export import export_onnx

    if not args.output.parent.is_dir():
        raise BiounetError("output directory does not exist", args.output.parent)
    export_onnx(checkpoint.model, args.output, opset=args.opset)
    print(f"wrote {args.output}")
    return 0
