"""The ``biounet`` command: subcommands, and turning input errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from biounet import __version__
from biounet.cli import evaluate, export, info, predict, train
from biounet.errors import BiounetError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biounet",
        description="U-Net segmentation for biomedical images: train, predict, evaluate, inspect, export.")
    parser.add_argument("--version", action="version", version=f"biounet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (train, predict, evaluate, info, export):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except BiounetError as exc:
        print(f"biounet {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print("biounet: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
