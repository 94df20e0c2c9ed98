"""The ``biounet`` command: subcommands, and turning expected failures into one line on stderr.

Exit codes: 0 success; 2 a problem with the input (a :class:`BiounetError`, an unreadable or unwritable
file, invalid YAML); 3 training diverged; 4 out of memory (CPU or GPU: try smaller tiles or batches); 130
interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM. None of these prints a traceback; anything else is a
bug and does.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import torch
import yaml

from biounet._version import __version__
from biounet.cli import evaluate, export, info, plan, predict, train
from biounet.errors import BiounetError
from biounet.interrupts import terminate_as_interrupt

EXIT_INPUT = 2
EXIT_OUT_OF_MEMORY = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM

# torch.OutOfMemoryError appeared in torch 2.5; torch.cuda.OutOfMemoryError is the same class there and
# the only one before.
_TORCH_OUT_OF_MEMORY: type[Exception] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# How to need less memory, per command.
_SMALLER = {
    "train": "try a smaller tile or batch size (--set tile=N --set batch_size=N)",
    "predict": "try a smaller --tile or --batch-size",
}


class _Parser(argparse.ArgumentParser):
    """argparse held to the one-line error contract: a usage error is one line on stderr, exit code 2 (argparse
    prints the whole usage block first). Subcommands' parsers are of the same class."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="biounet",
        description="U-Net segmentation for biomedical images: plan, train, predict, evaluate, inspect, export.",
        epilog="Exit codes: 0 success, 2 bad input (one line on stderr), 3 training diverged, 4 out of memory, "
               "130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")
    parser.add_argument("--version", action="version", version=f"biounet {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (plan, train, predict, evaluate, info, export):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``) and returns the exit code.

    Args:
        argv: arguments after the program name.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    terminated: list[int] = []
    try:
        with terminate_as_interrupt(terminated):
            code: int = args.run(args)
    except BiounetError as exc:
        return _fail(args.command, str(exc), int(getattr(exc, "exit_code", EXIT_INPUT)))
    except KeyboardInterrupt as exc:
        # A training run says what it saved; a bare Ctrl-C has no message.
        return _fail(args.command, str(exc), EXIT_TERMINATED if terminated else EXIT_INTERRUPTED, kind="interrupted")
    except (_TORCH_OUT_OF_MEMORY, MemoryError):
        hint = _SMALLER.get(args.command, "the inputs need more memory than is free")
        return _fail(args.command, f"out of memory: {hint}", EXIT_OUT_OF_MEMORY)
    except OSError as exc:
        return _fail(args.command, _os_error(exc), EXIT_INPUT)
    except yaml.YAMLError as exc:
        return _fail(args.command, f"invalid YAML: {exc}", EXIT_INPUT)
    return code


def _os_error(exc: OSError) -> str:
    """``FILE: reason`` (``FILE -> OTHER: reason`` for a rename), or the error's text without a file."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    files = str(exc.filename) if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
    return f"{files}: {reason}"


def _fail(command: str, message: str, code: int, kind: str = "error") -> int:
    # Messages from libraries (YAML marks) span lines; the contract is one line.
    line = f"biounet {command}: {kind}" + (f": {' '.join(message.split())}" if message.strip() else "")
    print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
