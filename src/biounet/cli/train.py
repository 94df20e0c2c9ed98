"""``biounet train``: train a U-Net from image/label folders."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    parser.add_argument("--init", metavar="MODEL",
                        help="fine-tune this checkpoint or shipped model on --images/--labels (default 5 minutes), "
                             "keeping what it knew: its own training data rehearsed when at hand, unannotated "
                             "pixels distilled from it; ends with the new model against it")
    parser.add_argument("--rehearse-images", type=Path, metavar="DIR",
                        help="with --init: the model's own training images (default: the folders it records)")
    parser.add_argument("--rehearse-labels", type=Path, metavar="DIR", help="with --init: their labels")
    parser.add_argument("--unlabelled", type=Path, metavar="DIR",
                        help="with --init: images without labels, trained to agree with the start model")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from biounet.errors import BiounetError
    from biounet.training.distributed import environment_ranks
    from biounet.workflows import train

    if (args.rehearse_images is None) != (args.rehearse_labels is None):
        raise BiounetError("give both --rehearse-images and --rehearse-labels, or neither")
    if (args.rehearse_images or args.unlabelled) and not args.init:
        raise BiounetError("--rehearse-images, --rehearse-labels and --unlabelled go with --init")
    rehearsal = (args.rehearse_images, args.rehearse_labels) if args.rehearse_images else None
    trainer = train(args.images, args.labels, args.out, minutes=args.minutes, epochs=args.epochs, config=args.config,
                    overrides=args.overrides, val_images=args.val_images, val_labels=args.val_labels,
                    device=args.device, amp=args.amp, resume=args.resume, progress=not args.quiet,
                    init=args.init, rehearsal=rehearsal, unlabelled=args.unlabelled)
    state = trainer.state
    if environment_ranks().main:
        kept = f"; kept the latest validated model (epoch {state.last_validated_epoch})" \
            if trainer.config.keep == "last" else ""
        print(f"stopped after epoch {state.epoch} (step {state.step}, {state.seconds / 60:.1f} min): "
              f"{trainer.stop_reason}; best val_{trainer.config.monitor} = {state.best} at epoch {state.best_epoch}"
              f"{kept}")
        print(f"model: {args.out / 'model.pt'}")
        if trainer.config.init and (args.out / "model.pt").exists():
            from biounet.training.compare import compare_to_start

            print(compare_to_start(args.out, trainer.config).report())
    return 0

