"""``biounet plan``: the dataset fingerprint and the training plan that ``biounet train`` would use."""

from __future__ import annotations

import argparse
from pathlib import Path

from biounet.atomic import atomic_path


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "plan", help="fingerprint a dataset and plan its training",
        description="Read every training pair once, print the dataset's fingerprint and the training plan "
                    "chosen from it, the device and the budget (the one `biounet train` uses without "
                    "--config). With --out, write the plan as a config for `biounet train --config`.")
    parser.add_argument("--images", type=Path, required=True, help="folder of training images")
    parser.add_argument("--labels", type=Path, required=True, help="folder of training labels (same file stems)")
    parser.add_argument("--out", type=Path, metavar="PLAN.yaml", help="write the planned config here")
    add_budget_arguments(parser)
    parser.set_defaults(run=run)


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """``--minutes``, ``--epochs`` and ``--device``, shared with ``biounet train``."""
    parser.add_argument("--minutes", type=float, help="wall-clock budget of the whole run")
    parser.add_argument("--epochs", type=int, help="epoch budget instead of minutes")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="cpu (default), cuda, cuda:N or mps; a GPU is used only when named here")


def run(args: argparse.Namespace) -> int:
    from biounet.planning.planner import plan_run

    plan, fingerprint = plan_run(args.images, args.labels, args.device, args.minutes, args.epochs)
    print(fingerprint.report())
    print(plan.report())
    if args.out is not None:
        with atomic_path(args.out) as tmp:
            tmp.write_text(plan.to_yaml())
        print(f"plan: {args.out}")
    return 0
