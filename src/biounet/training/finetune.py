"""Fine-tuning: a training config that continues a trained model on new labelled images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from biounet.configs import load_yaml
from biounet.data.examples import pair_files
from biounet.errors import BiounetError
from biounet.models.checkpoint import load_checkpoint
from biounet.pretrained import resolve_model
from biounet.training.config import TrainConfig, apply_overrides

FINE_TUNING_LR_FACTOR = 0.1
# The budget of a fine-tuning run when none is given.
FINE_TUNING_MINUTES = 5.0
# What a fine-tuning run keeps of its start model by default (see biounet.training.retention), measured with
# benchmarks/bench_corrections.py.
REHEARSAL_SHARE = 0.5
DISTILL = 1.0
ANCHOR = 0.0


def finetune_config(init: str | Path, images: Path, labels: Path, *, minutes: float,
                    label_kind: str | None = None, ignore: int | None = None,
                    rehearsal: tuple[Path, Path] | None = None, unlabelled: Path | None = None,
                    overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of a run that starts from ``init``'s weights and trains on the pairs in two folders.

    The model's own training config is kept (architecture, normalisation, loss, augmentation, optimiser,
    tile, batch), as a run resumed on other data would, but with a tenth of its learning rate, which then
    decays to 0 over the budget (``poly``), so that the last steps settle; the final model is kept (a few
    corrected images are too few to rank checkpoints by). With fewer than two pairs the training pair is
    also the validation pair: a handful of corrected images is too few to hold one out.

    What the start model knew is kept (``retain``, :mod:`biounet.training.retention`): its own training
    pairs, given or found by :func:`start_model_pairs`, are rehearsed in :data:`REHEARSAL_SHARE` of
    the patches (with ``unlabelled`` images beside them); every unannotated pixel is distilled from it with
    weight :data:`DISTILL`.

    Args:
        init: a checkpoint or a shipped model's name.
        images: folder of training images.
        labels: folder of their labels (same stems).
        minutes: the run's budget.
        label_kind: how the labels are read (``instances``, ``classes``, ...); default: objects for an
            instance model, detected (``auto``) otherwise.
        ignore: the label value of unannotated pixels.
        rehearsal: the start model's training images and labels folders; default: those of
            :func:`start_model_pairs` (a shipped model's bundled pairs, or the folders a checkpoint's config
            records, if they still exist).
        unlabelled: a folder of images without labels, trained to agree with the start model.
        overrides: ``key=value`` settings applied last (as ``--set``).

    Raises:
        BiounetError: naming the file, for an unreadable checkpoint or folders without pairs.
    """
    path = resolve_model(init)
    source = load_checkpoint(path)
    settings: dict[str, Any] = {}
    if isinstance(source.extra.get("train_config"), str):
        try:
            settings = load_yaml(source.extra["train_config"], path) or {}
        except yaml.YAMLError as exc:
            raise BiounetError(f"damaged training config in the checkpoint ({type(exc).__name__})", path) from exc
        if not isinstance(settings, dict):
            raise BiounetError("damaged training config in the checkpoint: expected a mapping of settings", path)
    fine_tuned = bool(settings.get("init"))
    settings["model"] = source.config.to_dict()
    settings["normalization"] = source.normalization.to_dict()
    settings["class_names"] = list(source.class_names)
    kind = label_kind or ("instances" if source.instances is not None else "auto")
    # A foreground/distance model keeps learning its own target (its outputs mean nothing else).
    target = "distance" if source.config.output == "distance" else "boundary"
    settings["labels"] = {"kind": kind, "foreground": None, "ignore": ignore, "instance_target": target}
    single = len(pair_files(images, labels)) < 2
    known = rehearsal or start_model_pairs(path, settings)
    settings["retain"] = {"images": str(known[0]) if known else "", "labels": str(known[1]) if known else "",
                          "unlabelled": str(unlabelled or ""), "share": REHEARSAL_SHARE, "distill": DISTILL,
                          "anchor": ANCHOR}
    settings["keep"] = "last"
    settings["data"] = {"images": str(images), "labels": str(labels), "val_images": str(images) if single else "",
                        "val_labels": str(labels) if single else "",
                        "val_fraction": settings.get("data", {}).get("val_fraction", 0.2)}
    settings["init"] = str(path)
    settings["minutes"] = minutes
    settings["epochs"] = 1_000_000
    settings["patience"] = 0
    optim = settings.setdefault("optim", {})
    # A tenth of the rate the model was trained with: at its full rate a few minutes on a few corrected
    # images wreck a trained network (measured with benchmarks/bench_corrections.py: accuracy@0.5 on the
    # DSB test split fell from 0.59 to 0.003 at 1e-3, to 0.30 at 1e-4).
    # A model that was itself fine-tuned (its config has an init) has the lowered rate already.
    factor = 1.0 if fine_tuned else FINE_TUNING_LR_FACTOR
    optim.update(lr=factor * float(optim.get("lr", TrainConfig().optim.lr)), scheduler="poly", warmup=0.0)
    return apply_overrides(settings, list(overrides))


def start_model_pairs(checkpoint: Path, settings: dict[str, Any]) -> tuple[Path, Path] | None:
    """The start model's own training pairs, for rehearsal, the first of these still at hand: the folder
    ``<stem>.rehearsal/`` beside its checkpoint (``images/`` and ``labels/``; the shipped models carry
    theirs), the pairs it rehearsed itself if it was fine-tuned (``retain``: what its own start model knew),
    the training folders its config records (``data``). ``None`` when none is.

    Args:
        checkpoint: the start model's checkpoint file.
        settings: the config it was trained with, as a plain dict.
    """
    beside = checkpoint.with_suffix(".rehearsal")
    candidates = [(beside / "images", beside / "labels")]
    for section in ("retain", "data"):
        recorded = settings.get(section) or {}
        candidates.append((Path(str(recorded.get("images") or "")), Path(str(recorded.get("labels") or ""))))
    for images, labels in candidates:
        if str(images) not in ("", ".") and images.is_dir() and labels.is_dir():
            return images, labels
    return None
