"""``biounet info``: print what a checkpoint holds."""

from __future__ import annotations

import argparse

import yaml

from biounet.infer.predict import DEFAULT_TILE
from biounet.models.checkpoint import load_checkpoint
from biounet.pretrained import resolve_model


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("info", help="print a checkpoint's configuration",
                                   description="Print a checkpoint's model config, normalization and classes.")
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(resolve_model(args.checkpoint))
    description = checkpoint.describe()
    config = checkpoint.config
    valid = config.valid_input_shape((DEFAULT_TILE[config.spatial_dims],) * config.spatial_dims)
    description["default_tile"] = {"input": list(valid), "output": list(config.output_shape(valid))}
    print(yaml.safe_dump(description, sort_keys=False).rstrip())
    return 0
