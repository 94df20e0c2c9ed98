"""``biounet info``: print what a checkpoint holds."""

from __future__ import annotations

import argparse

import yaml

from biounet.models.checkpoint import load_checkpoint


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("info", help="print a checkpoint's configuration",
                                   description="Print a checkpoint's model config, normalization and classes.")
    parser.add_argument("checkpoint", metavar="CKPT")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checkpoint = load_checkpoint(args.checkpoint)
    description = checkpoint.describe()
    config = checkpoint.config
    tile = (572 if config.spatial_dims == 2 else 132,) * config.spatial_dims
    valid = config.valid_input_shape(tile)
    description["shapes"] = {"input_tile": list(valid), "output_tile": list(config.output_shape(valid))}
    print(yaml.safe_dump(description, sort_keys=False).rstrip())
    return 0
