"""``biounet train``: train a U-Net from image/label folders."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from biounet.errors import BiounetError
from biounet.train.config import TrainConfig, apply_overrides, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "train", help="train a model from labelled images",
        description="Train a U-Net. RUN_DIR receives model.pt (best validation score), last.pt (resumable), "
                    "config.yaml, log.csv, curves.png and overlays/. Without --config, the settings are "
                    "planned from the data, the device and the budget (see `biounet plan`); --set "
                    "key=value overrides either (e.g. --set model.base_channels=16).")
    parser.add_argument("--images", type=Path, help="folder of training images")
    parser.add_argument("--labels", type=Path, help="folder of training labels (same file stems)")
    parser.add_argument("--val-images", type=Path, help="folder of validation images")
    parser.add_argument("--val-labels", type=Path, help="folder of validation labels")
    parser.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help="training config (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config value; repeatable")
    parser.add_argument("--epochs", type=int, help="epoch budget (same as --set epochs=N)")
    parser.add_argument("--minutes", type=float, help="wall-clock budget (same as --set minutes=M)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from last.pt")
    parser.add_argument("--device", default="cpu", metavar="DEVICE",
                        help="cpu (default), cuda, cuda:N or mps; a GPU is used only when named here")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on CUDA: bfloat16 where the GPU has it, else float16 with a gradient "
                             "scaler (same as --set amp=auto); the CPU stays float32")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from biounet.infer.devices import resolve_device
    from biounet.train import distributed

    ranks, device = distributed.start(resolve_device(args.device))
    try:
        started = time.monotonic()
        # Rank 0 plans (it times the candidate widths) and the others take its config, or its error.
        config, error = _config(args) if ranks.main else (None, None)
        config, error = ranks.broadcast((config, error))
        if error is not None:
            raise BiounetError(error)
        from biounet.train.run import train

        trainer = train(config, args.out, resume=args.resume, device=device, progress=not args.quiet and ranks.main,
                        spent_seconds=time.monotonic() - started, ranks=ranks)
        state = trainer.state
        if ranks.main:
            print(f"stopped after epoch {state.epoch} (step {state.step}, {state.seconds / 60:.1f} min): "
                  f"{trainer.stop_reason}; best val_{config.monitor} = {state.best} at epoch {state.best_epoch}")
            print(f"model: {args.out / 'model.pt'}")
    finally:
        distributed.stop()
    return 0


def _config(args: argparse.Namespace) -> tuple[TrainConfig | None, str | None]:
    """The run's config from the flags (planned without --config), or the one-line error that stops it."""
    from biounet.plan.planner import plan_run

    overrides = list(args.overrides)
    for flag, key in [("images", "data.images"), ("labels", "data.labels"), ("val_images", "data.val_images"),
                      ("val_labels", "data.val_labels"), ("epochs", "epochs"), ("minutes", "minutes")]:
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.amp:
        overrides.append("amp=auto")
    try:
        if args.resume:
            return apply_overrides(saved_config(args.out), overrides), None
        if args.config is None and args.images is not None and args.labels is not None:
            # The label convention given with --set (kind, foreground, ignore) is the one the plan reads the data by.
            labels = apply_overrides({}, [o for o in overrides if o.startswith("labels.")]).labels
            plan, fingerprint = plan_run(args.images, args.labels, args.device, args.minutes, args.epochs,
                                         progress=not args.quiet, labels_config=labels)
            print(fingerprint.report())
            print(plan.report())
            return plan.config(overrides), None  # --set wins over the plan
        return load_config(args.config, overrides), None
    except BiounetError as exc:
        return None, str(exc)


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The training config stored in ``run_dir/config.yaml``, checked to be a valid config.

    Args:
        run_dir: a run directory written by ``biounet train``.

    Raises:
        BiounetError: naming ``config.yaml``, if it is missing, not YAML or not a valid config.
    """
    path = run_dir / "config.yaml"
    if not path.exists():
        raise BiounetError("nothing to resume: no config.yaml in the run directory", run_dir)
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BiounetError(f"damaged run config, not valid YAML ({type(exc).__name__})", path) from exc
    if not isinstance(data, dict):
        raise BiounetError("damaged run config: expected a mapping of settings", path)
    try:
        # Checked before --set overrides are applied, so that an error here is the file's, not the flags'.
        apply_overrides(data, [])
    except BiounetError as exc:
        raise BiounetError(f"damaged run config: {exc}", path) from exc
    return data
