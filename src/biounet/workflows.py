"""The library's one-call workflows, one per CLI command: what ``biounet train`` and ``biounet plan`` do.

The other two are where their work lives: :func:`biounet.infer.files.predict_files` (``biounet predict``)
and :func:`biounet.metrics.evaluate.evaluate` (``biounet evaluate``). All four are importable from the
package root: ``biounet.training(...)``, ``biounet.planning(...)``, ``biounet.predict_files(...)``,
``biounet.evaluate(...)``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from biounet.configs import load_yaml
from biounet.data.labels import LabelConfig
from biounet.errors import BiounetError
from biounet.infer.devices import resolve_device
from biounet.planning.fingerprint import Fingerprint
from biounet.planning.planner import Plan, plan_run
from biounet.training import distributed
from biounet.training.config import TrainConfig, apply_overrides, load_config
from biounet.training.finetune import FINE_TUNING_MINUTES, finetune_config
from biounet.training.run import train as run_training
from biounet.training.trainer import Callback, Trainer


def plan(images: str | Path, labels: str | Path, *, minutes: float | None = None, epochs: int | None = None,
         device: str = "cpu", labels_config: LabelConfig | None = None,
         progress: bool = True) -> tuple[Plan, Fingerprint]:
    """The dataset's fingerprint and the training plan made from it, as ``biounet plan`` prints them.

    Args:
        images: folder of training images.
        labels: folder of training labels (same file stems).
        minutes: the run's wall-clock budget (default 30 minutes).
        epochs: an epoch budget instead of minutes.
        device: the training device; candidate network widths are timed on it.
        labels_config: the label convention to read the labels by (default: detected).
        progress: show a progress bar while reading.

    Returns:
        The plan (``plan.config()`` is the :class:`~biounet.training.config.TrainConfig`, ``plan.to_yaml()``
        a config file for :func:`train`) and the fingerprint.

    Raises:
        BiounetError: naming the file, for missing, unreadable or mismatched data.
    """
    return plan_run(Path(images), Path(labels), device, minutes, epochs, progress=progress,
                    labels_config=labels_config)


def train(images: str | Path | None = None, labels: str | Path | None = None, out: str | Path = "run", *,
          minutes: float | None = None, epochs: int | None = None, config: str | Path | TrainConfig | None = None,
          overrides: Sequence[str] = (), val_images: str | Path | None = None, val_labels: str | Path | None = None,
          device: str = "cpu", amp: bool = False, resume: bool = False, progress: bool = True,
          init: str | Path | None = None, rehearsal: tuple[str | Path, str | Path] | None = None,
          unlabelled: str | Path | None = None,
          callbacks: Mapping[str, Sequence[Callback]] | None = None) -> Trainer:
    """Trains a U-Net as ``biounet train`` does: without ``config``, planned from the data, the device and the
    budget (printing the fingerprint and the plan), or with ``init``, fine-tuned from that model
    (:func:`~biounet.training.finetune.finetune_config`); ``overrides`` win over any of them.

    The run directory receives ``model.pt`` (best validation score), ``last.pt`` (resumable),
    ``config.yaml``, ``log.csv``, ``curves.png`` and ``overlays/``. Started by ``torchrun``, every process
    calls this and the run is distributed (see :mod:`biounet.training.distributed`).

    Args:
        images: folder of training images.
        labels: folder of training labels (same file stems).
        out: the run directory.
        minutes: wall-clock budget of the whole run.
        epochs: an epoch budget instead.
        config: a training config (YAML file or :class:`~biounet.training.config.TrainConfig`) instead of a plan.
        overrides: ``key.sub=value`` settings, e.g. ``["model.base_channels=16"]``.
        val_images: folder of validation images (default: a share of the training pairs).
        val_labels: folder of their labels.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; a GPU is used only when named.
        amp: mixed precision on CUDA (``amp=auto``); the CPU stays float32.
        resume: continue the run in ``out`` from its ``last.pt``, with its saved config.
        progress: show progress bars.
        init: a checkpoint or shipped model name to fine-tune (default minutes:
            :data:`~biounet.training.finetune.FINE_TUNING_MINUTES`), keeping what it knew (``retain``).
        rehearsal: with ``init``, its own training images and labels folders (default: those its config
            records, if they are still there).
        unlabelled: with ``init``, a folder of images without labels, distilled from it.
        callbacks: more callbacks per trainer event (see :class:`~biounet.training.trainer.Trainer`).

    Returns:
        The finished trainer: ``trainer.state`` (epochs, steps, best score), ``trainer.best`` (the best
        model as a :class:`~biounet.models.checkpoint.Checkpoint`), ``trainer.stop_reason``.

    Raises:
        BiounetError: for bad data, a bad config, an existing run without ``resume``, or a missing one with it.
    """
    ranks, torch_device = distributed.start(resolve_device(device))
    try:
        started = time.monotonic()
        settings = {"images": images, "labels": labels, "val_images": val_images, "val_labels": val_labels,
                    "epochs": epochs, "minutes": minutes}
        # Rank 0 plans (it times the candidate widths) and the others take its config, or its error.
        finetune = (init, rehearsal, unlabelled)
        chosen, error = _config(Path(out), settings, config, list(overrides), amp, resume, device, progress,
                                finetune) if ranks.main else (None, None)
        chosen, error = ranks.broadcast((chosen, error))
        if error is not None:
            raise BiounetError(error)
        return run_training(chosen, Path(out), resume=resume, device=torch_device,
                            progress=progress and ranks.main, spent_seconds=time.monotonic() - started,
                            ranks=ranks, callbacks=callbacks)
    finally:
        distributed.stop()


def _config(out: Path, settings: dict[str, Any], config: str | Path | TrainConfig | None, overrides: list[str],
            amp: bool, resume: bool, device: str, progress: bool,
            finetune: tuple[Any, Any, Any] = (None, None, None)) -> tuple[TrainConfig | None, str | None]:
    """The run's config (planned without ``config``, fine-tuning with ``finetune``'s init), or the one-line
    error that stops every rank."""
    keys = {"images": "data.images", "labels": "data.labels", "val_images": "data.val_images",
            "val_labels": "data.val_labels", "epochs": "epochs", "minutes": "minutes"}
    given = [f"{keys[name]}={value}" for name, value in settings.items() if value is not None]
    overrides = overrides + given + (["amp=auto"] if amp else [])  # the named settings win, as the CLI's flags
    try:
        if resume:
            return apply_overrides(saved_config(out), overrides), None
        if isinstance(config, TrainConfig):
            return apply_overrides(config.to_dict(), overrides), None
        init, rehearsal, unlabelled = finetune
        if init is not None:
            if config is not None or settings["images"] is None or settings["labels"] is None:
                raise BiounetError("fine-tuning (--init) takes --images and --labels, and no --config")
            minutes = settings["minutes"] if settings["minutes"] is not None else FINE_TUNING_MINUTES
            pairs = (Path(rehearsal[0]), Path(rehearsal[1])) if rehearsal else None
            tuned = finetune_config(init, Path(settings["images"]), Path(settings["labels"]), minutes=minutes,
                                    rehearsal=pairs, unlabelled=Path(unlabelled) if unlabelled else None)
            return apply_overrides(tuned.to_dict(), overrides), None
        if config is None and settings["images"] is not None and settings["labels"] is not None:
            # The label convention given in overrides (kind, foreground, ignore) is the one the plan reads by.
            labels = apply_overrides({}, [o for o in overrides if o.startswith("labels.")]).labels
            planned, found = plan(settings["images"], settings["labels"], minutes=settings["minutes"],
                                  epochs=settings["epochs"], device=device, labels_config=labels, progress=progress)
            print(found.report())
            print(planned.report())
            return planned.config(overrides), None  # overrides win over the plan
        return load_config(Path(config) if config is not None else None, overrides), None
    except BiounetError as exc:
        return None, str(exc)


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The training config stored in ``run_dir/config.yaml``, checked to be a valid config.

    Args:
        run_dir: a run directory written by :func:`train`.

    Raises:
        BiounetError: naming ``config.yaml``, if it is missing, not YAML or not a valid config.
    """
    path = run_dir / "config.yaml"
    if not path.exists():
        raise BiounetError("nothing to resume: no config.yaml in the run directory", run_dir)
    try:
        data = load_yaml(path.read_text(), path)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BiounetError(f"damaged run config, not valid YAML ({type(exc).__name__})", path) from exc
    if not isinstance(data, dict):
        raise BiounetError("damaged run config: expected a mapping of settings", path)
    try:
        # Checked before the overrides are applied, so that an error here is the file's, not the flags'.
        apply_overrides(data, [])
    except BiounetError as exc:
        raise BiounetError(f"damaged run config: {exc}", path) from exc
    return data
