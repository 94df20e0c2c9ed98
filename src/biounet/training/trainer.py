"""The training loop: a small trainer with callbacks (after minGPT's), checkpoints and resume.

The trainer owns the step loop, the budget (epochs or minutes), validation scheduling, early stopping and
atomic checkpoints that hold the model, optimizer, scheduler, random-generator states and counters, so
that ``resume`` continues the same run and a killed run loses at most ``checkpoint_seconds`` of work.
Logging, plots and progress reporting are callbacks. Ctrl-C takes effect between steps (see
``interrupts.py``) and saves ``last.pt`` before the run stops.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from biounet.augment import Augmenter
from biounet.data.labels import IGNORE_INDEX
from biounet.data.sampling import PatchDataset, PatchSampler, StepBatches
from biounet.data.targets import CLASS_NAMES, DISTANCE_NAMES
from biounet.errors import BiounetError
from biounet.infer.tta import transforms
from biounet.interrupts import deferred_interrupt
from biounet.losses import DeepSupervisionLoss, build_loss
from biounet.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.object_size import ObjectSize
from biounet.models.symmetry import TTA
from biounet.models.unet import UNet, center_crop, prediction_layout
from biounet.training.budget import Budget
from biounet.training.config import TrainConfig
from biounet.training.distributed import Ranks
from biounet.training.ema import WeightAverage
from biounet.training.retention import Retention
from biounet.training.tuning import grid_points
from biounet.training.validation import OBJECTS_SECONDS

Callback = Callable[["Trainer"], None]
# The points of an instance model's post-processing search, each a seeded watershed and one IoU table per
# image, which scores every minimum size (13.7 s on 16 DSB 2018 images, 31 times the 0.45 s of one point).
TUNING_POINTS = grid_points()
MINIMISED = {"rand_error"}


class TrainingDivergedError(BiounetError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""

    exit_code = 3


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; the message says what was saved (the CLI exits with 130)."""


@dataclass
class TrainState:
    """Counters that a checkpoint restores (besides weights, optimizer and generators)."""

    step: int = 0
    epoch: int = 0
    epoch_step: int = 0
    seconds: float = 0.0
    epoch_loss: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    stale_validations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step, "seconds": self.seconds,
                "epoch_loss": self.epoch_loss, "best": self.best,
                "best_epoch": self.best_epoch, "stale_validations": self.stale_validations,
                "history": [dict(row) for row in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**data)

    @property
    def last_validated_epoch(self) -> int:
        """The epoch of the latest validation (0 if none): the model ``keep: last`` saves."""
        return next((int(row["epoch"]) for row in reversed(self.history) if any(k.startswith("val_") for k in row)),
                    0)


class Trainer:
    """Trains ``model`` on patches from ``sampler``; validates with ``validate`` (a callable returning metrics).

    Events for callbacks: ``on_step_end`` (``trainer.last_loss`` set), ``on_epoch_end`` (``trainer.row``
    holds the epoch's log row, after validation and checkpointing), ``on_run_end``.

    Args:
        config: the run's configuration.
        model: the network (moved to ``device``).
        sampler: patch source.
        validate: ``validate(model) -> {metric: value}`` on held-out images.
        out_dir: run directory for ``last.pt`` and ``model.pt``.
        device: training device.
        ranks: this process's place in a distributed run (:mod:`biounet.training.distributed`): each rank
            trains on its share of every batch of ``batch_size`` patches per rank, under
            DistributedDataParallel; rank 0 validates and writes.
        object_size: the training objects' size, recorded in every checkpoint
            (:func:`~biounet.data.examples.measure_object_size`).
    """

    def __init__(self, config: TrainConfig, model: UNet, sampler: PatchSampler,
                 validate: Callable[[UNet], dict[str, float]], out_dir: Path, device: torch.device,
                 ranks: Ranks | None = None, object_size: ObjectSize | None = None) -> None:
        self.config, self.sampler, self.validate, self.out_dir, self.device = config, sampler, validate, out_dir, device
        self.object_size = object_size
        self.ranks = ranks or Ranks()
        # The layout the steps run in, measured on this CPU with oneDNN (torch 2.13, forward + backward):
        # channels-last 2D convolutions run the forward ~25% faster but the backward ~65% slower, a whole
        # base-16 572 step 0.50 s in NCHW against 0.62 s; in 3D channels-last wins (0.89 s against 1.33 s
        # for a base-16 batch-norm step). Prediction (forward only) is channels-last in both.
        self.memory_format = torch.contiguous_format if config.model.spatial_dims == 2 else torch.channels_last_3d
        if config.sync_batchnorm and self.ranks.distributed:
            if device.type != "cuda":
                raise BiounetError("sync_batchnorm needs CUDA devices (torch synchronises batch norms on GPUs "
                                   "only); on CPUs leave it off: each rank normalises its own batch")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        self.model = model.to(device)
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        # What the steps run: the model itself, or DDP around it, which averages the gradients over ranks.
        self.network: nn.Module = self.model if not self.ranks.distributed else nn.parallel.DistributedDataParallel(
            self.model, device_ids=[device] if device.type == "cuda" else None)
        # The moving average of the weights is what validation scores and model.pt keeps (see ema.py).
        self.ema = WeightAverage(self.model, config.ema) if config.ema > 0 else None
        self.optimizer = _optimizer(config, self.model)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.optim.step_size,
            gamma=config.optim.gamma if config.optim.scheduler == "step" else 1.0)
        if config.optim.scheduler not in ("step", "poly", "cosine", "none"):
            raise BiounetError(f"unknown scheduler {config.optim.scheduler!r}: use step, poly, cosine or none")
        self.amp = _amp_dtype(config.amp, device)
        # float16 gradients underflow without scaling; bfloat16 has float32's range and needs none.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp == torch.float16)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = not config.deterministic
        # A foreground/distance model's loss adds the distance term (biounet.losses.distance).
        distance = {"distance": True} if config.model.output == "distance" else {}
        self.loss_fn: nn.Module = build_loss(config.loss.name, ignore_index=IGNORE_INDEX, **distance)
        if config.model.deep_supervision:
            # The same loss on every output of forward_deep, each against the patch's target at its resolution.
            self.loss_fn = DeepSupervisionLoss(self.loss_fn, config.model.deep_output_strides)
        # A fine-tuning run's distillation and anchor terms (retention.py), or None.
        self.retention = Retention.for_run(config, device)
        self.augmenter = Augmenter(config.augment, config.model.spatial_dims)
        # Patches are numbered and each is drawn from its own seed (see PatchDataset), so DataLoader workers,
        # ranks and resumed runs draw the same ones; the loader starts at the step counter.
        self.patches = PatchDataset(sampler, config.seed)
        self._loader: Iterator[list[torch.Tensor]] | None = None
        self._loader_step = -1
        self.augment_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.state = TrainState()
        self.callbacks: dict[str, list[Callback]] = defaultdict(list)
        self.last_loss = math.nan
        self.row: dict[str, float] = {}
        self.stop_reason = ""
        # The model as model.pt holds it (the best, or with ``keep: last`` the latest validated), kept for the
        # run's tuning and overlays (rank 0 only).
        self.best: Checkpoint | None = None
        self._stop_request = ""
        self.budget = Budget(math.inf)
        # False while a step or an epoch's bookkeeping is half done: such a state is not worth saving.
        self._consistent = True

    @property
    def steps_per_epoch(self) -> int:
        """Steps per epoch: every step trains ``batch_size`` patches on every rank."""
        return math.ceil(self.config.samples_per_epoch / (self.config.batch_size * self.ranks.world))

    @property
    def evaluated(self) -> UNet:
        """The network that is validated and saved as ``model.pt``: the moving average of the weights when
        the run keeps one, else the trained weights themselves."""
        model = self.ema.model if self.ema is not None else self.model
        assert isinstance(model, UNet)
        return model

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "model.pt"

    def request_stop(self, reason: str = "stopped on request") -> None:
        """Ends the run after the current step as a spent budget would: a last validation, then the run's
        outputs. Safe to call from another thread (a GUI's stop button) or from a callback."""
        self._stop_request = reason

    def add_callback(self, event: str, callback: Callback) -> None:
        self.callbacks[event].append(callback)

    def trigger(self, event: str) -> None:
        for callback in self.callbacks[event]:
            callback(self)

    # -- checkpoints ------------------------------------------------------------------------------------

    def save(self, path: Path, with_state: bool) -> None:
        """Writes the model (and with ``with_state`` what resuming needs) to ``path``; rank 0 only.

        ``with_state`` (``last.pt``) saves the trained weights and the moving average among the state;
        without (``model.pt``), the evaluated model (:attr:`evaluated`).
        """
        if not self.ranks.main:
            return
        # Never overwrite a good checkpoint with weights that have already blown up.
        if not self._weights_finite():
            raise TrainingDivergedError(f"weights became non-finite at step {self.state.step}; training stopped. The "
                                   f"last good checkpoint is {self.last_path} (try a lower optim.lr)")
        extra = self._checkpoint_extra()
        if with_state:
            extra["train_state"] = {
                "counters": self.state.to_dict(),
                "optimizer_name": self.config.optim.name,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "augment": self.augment_rng.get_state().cpu()},
            }
            if self.ema is not None:
                extra["train_state"]["ema"] = self.ema.state_dict()
            if torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
                # cuDNN and CUDA kernels (dropout, random init of buffers) draw from the per-device generators.
                extra["train_state"]["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        model = self.model if with_state else self.evaluated
        save_checkpoint(path, model, self.config.normalization, list(self.class_names), extra=extra,
                        instances=self._instances(), tta=self._tta(), object_size=self.object_size)

    def _checkpoint_extra(self) -> dict[str, Any]:
        return {"train_config": self.config.to_yaml(), "metrics": dict(self.row)}

    def _tta(self) -> TTA:
        """The transforms the augmentation covered; whether averaging over them pays is decided after training
        (:func:`biounet.training.run.choose_tta`)."""
        return TTA(self.config.augment.symmetry(self.config.model.spatial_dims))

    def _instances(self) -> InstanceParams | None:
        return InstanceParams() if self.config.instance_task else None

    def _in_memory(self) -> Checkpoint:
        """The model as ``model.pt`` now holds it, as :func:`~biounet.models.checkpoint.load_checkpoint` would
        read it back: a fresh UNet on the CPU (not a copy of ``self.model``, which may hold SyncBatchNorm)."""
        model = UNet(self.config.model)
        model.load_state_dict({k: v.detach().cpu() for k, v in self.evaluated.state_dict().items()})
        model.eval()
        model.to(memory_format=prediction_layout(self.config.model.spatial_dims))  # type: ignore[call-overload]
        return Checkpoint(model, self.config.normalization, list(self.class_names), extra=self._checkpoint_extra(),
                          instances=self._instances(), tta=self._tta(), object_size=self.object_size)

    def _weights_finite(self) -> bool:
        models = [self.model] if self.ema is None else [self.model, self.ema.model]
        return all(bool(torch.isfinite(p).all()) for m in models for p in m.parameters())

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.config.class_names
        if names:
            return names
        if self.config.model.output == "distance":
            return DISTANCE_NAMES
        if self.config.instance_task:
            return CLASS_NAMES
        from biounet.models.checkpoint import default_class_names

        return tuple(default_class_names(self.config.num_classes))

    def resume(self) -> None:
        """Restores weights, optimizer, scheduler, generators and counters from ``last.pt``."""
        checkpoint = load_checkpoint(self.last_path)
        saved = checkpoint.extra.get("train_state")
        if not isinstance(saved, dict):
            raise BiounetError("checkpoint holds no training state to resume from", self.last_path)
        if saved.get("optimizer_name") != self.config.optim.name:
            raise BiounetError(f"cannot resume a run that used optimizer {saved.get('optimizer_name')} with "
                               f"{self.config.optim.name}", self.last_path)
        self.model.load_state_dict(checkpoint.model.state_dict())
        self.optimizer.load_state_dict(saved["optimizer"])
        for group in self.optimizer.param_groups:  # a run saved before fused kernels continues with them
            group["fused"] = _fusable(self.model)
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None and "ema" in saved:  # else the average starts from the resumed weights
            self.ema.load_state_dict(saved["ema"])
        torch.set_rng_state(saved["rng"]["torch"])
        self.augment_rng.set_state(saved["rng"]["augment"].to(self.augment_rng.get_state().device))
        cuda_states = saved["rng"].get("cuda")
        if cuda_states and torch.cuda.is_available():
            # A machine with fewer GPUs than the one that saved the run restores the devices it has.
            torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
        self.state = TrainState.from_dict(saved["counters"])

    # -- the loop ---------------------------------------------------------------------------------------

    def train_step(self) -> float:
        """One step on this rank's share of the step's batch: the patches (numbered, see PatchDataset) and
        the augmentations (drawn for all ranks alike, from generators seeded the same on every rank) of rank
        r are rows r*B..(r+1)*B-1 of the batch one process with batch size world*B would use, so N ranks
        train as that process does."""
        config, ranks = self.config, self.ranks
        share = slice(ranks.rank * config.batch_size, (ranks.rank + 1) * config.batch_size)
        total = config.batch_size * ranks.world
        # A foreground/distance model's patches carry its distance target too: a map moved like the weights.
        images, targets, weights, *maps = (t.to(self.device, non_blocking=True) for t in self._next_batch())
        params = self.augmenter.sample(total, tuple(images.shape[2:]), self.augment_rng)
        rows = params.rows(share.start, share.stop)
        images, aug_targets, aug_weights = rows.apply(images, targets, weights)
        assert aug_targets is not None and aug_weights is not None
        deep = config.model.deep_supervision > 0
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            batch = images.contiguous(memory_format=self.memory_format)
            # forward_deep's list asked for through self.network: DDP averages the gradients of its forward only.
            logits = self.network(batch, deep=True) if deep else self.network(batch)
        extra = [rows.warp(m) for m in maps]
        if deep:  # the wrapper crops and samples the whole augmented patch for each output itself
            loss: torch.Tensor = self.loss_fn([out.float() for out in logits], aug_targets, aug_weights, *extra)
        else:
            logits = logits.float()  # the loss in float32
            out_shape = tuple(logits.shape[2:])
            target = center_crop(aug_targets[:, None], out_shape)[:, 0]
            weight = center_crop(aug_weights[:, None], out_shape)[:, 0]
            loss = self.loss_fn(logits, target, weight, *[center_crop(m[:, None], out_shape)[:, 0] for m in extra])
        if self.retention is not None:
            full = logits[0].float() if deep else logits
            at_output = center_crop(aug_weights[:, None], tuple(full.shape[2:]))[:, 0]
            loss = loss + self.retention.loss(self.model, batch, full, at_output)
        if not ranks.all(bool(torch.isfinite(loss))):
            raise TrainingDivergedError(
                f"loss became {loss.item()} at step {self.state.step + 1}; training stopped. The last good "
                f"checkpoint is {self.last_path if self.last_path.exists() else 'not written yet'} "
                "(try a lower optim.lr)")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
        if config.optim.clip > 0:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    def _next_batch(self) -> list[torch.Tensor]:
        """This rank's patches of the current step, from a DataLoader started at the step counter (again
        whenever the counter is not where the loader left off: a resumed run, a timing call)."""
        if self._loader is None or self._loader_step != self.state.step:
            cuda = self.device.type == "cuda"
            workers = self.config.data_workers if self.config.data_workers >= 0 else \
                (min(4, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0)
            batches = StepBatches(self.state.step, self.config.batch_size, self.ranks.rank, self.ranks.world)
            self._loader = iter(DataLoader(self.patches, batch_sampler=batches, num_workers=workers,
                                           pin_memory=cuda, persistent_workers=workers > 0,
                                           prefetch_factor=2 if workers else None))
        self._loader_step = self.state.step + 1
        return next(self._loader)

    def run(self, setup_seconds: float = 0.0) -> TrainState:
        """Trains until the epoch or minute budget is spent or early stopping triggers.

        Args:
            setup_seconds: time the run already spent before training (reading data, weight maps), which
                counts against a minute budget.

        Raises:
            TrainingInterrupted: on Ctrl-C, after saving ``last.pt`` so that ``resume`` continues from the
                last finished step.
        """
        minutes = self.config.minutes
        self.budget = Budget(minutes * 60 if minutes > 0 else math.inf, self.state.seconds + setup_seconds)
        # The end of the run: the final validation, a prediction of the validation images to choose test-time
        # augmentation with, and one per transform of its group; an instance model's post-processing search
        # makes objects from them once per point of its grid.
        group = len(transforms(self.config.model.spatial_dims, self._tta().symmetry))
        self.budget.ending_validations = 2 + (group if group > 1 else 0)
        self.budget.tuning_points = TUNING_POINTS if self.config.instance_task else 0
        try:
            self._run_epochs()
        except KeyboardInterrupt as exc:
            raise self._interrupted() from exc
        self.trigger("on_run_end")
        return self.state

    def _run_epochs(self) -> None:
        config, budget = self.config, self.budget
        steps_per_epoch = self.steps_per_epoch
        if budget.limited and not budget.validation_seconds:
            # The end of the run must fit the budget from the first step on, so one validation is timed now.
            self._timed_validation()
        last_save = time.monotonic()
        while self.state.epoch < config.epochs:
            self.model.train()
            out_of_time = False
            # A run resumed from a mid-epoch checkpoint finishes that epoch's remaining steps.
            for _ in range(self.state.epoch_step, steps_per_epoch):
                if self._stop_request or not self.ranks.agree(budget.room_for_step()):
                    out_of_time = True
                    break
                started = time.monotonic()
                # The callbacks and the periodic save are inside too: an interrupt raised in the middle of
                # TensorBoard's queue or a checkpoint write can leave a lock held that closing them waits on.
                with deferred_interrupt():
                    self._consistent = False
                    self._step(steps_per_epoch)
                    self._consistent = True
                    self.trigger("on_step_end")
                    budget.note_step(time.monotonic() - started)
                    if time.monotonic() - last_save >= config.checkpoint_seconds:
                        self._timed_save()
                        last_save = time.monotonic()
            if out_of_time and self.state.epoch_step == 0:
                # The last epoch's validation was the last one that fitted; nothing was trained since.
                self.stop_reason = self._stop_request or "time budget spent"
                return
            finished = out_of_time or self.state.epoch + 1 >= config.epochs
            # Validation changes no state, so a Ctrl-C during it (the longest part of an epoch's end) stops
            # at once and still saves the finished steps.
            validating = (self.state.epoch + 1) % config.val_every == 0 or finished
            if validating and not finished and not self.ranks.agree(budget.room_for_validation_and_step()):
                finished = out_of_time = True  # this validation is the run's last
            metrics = self._timed_validation() if validating else None
            with deferred_interrupt():
                started = time.monotonic()
                self._consistent = False
                self._end_epoch(metrics)
                self._consistent = True
                last_save = time.monotonic()
                self.trigger("on_epoch_end")
                budget.note_epoch_end(time.monotonic() - started)
            if finished:
                self.stop_reason = self._stop_request or ("time budget spent" if out_of_time else "epoch budget spent")
                return
            if config.patience and self.state.stale_validations >= config.patience:
                self.stop_reason = f"no improvement in {config.patience} validations"
                return
        self.stop_reason = "epoch budget spent"

    def _timed_validation(self) -> dict[str, float]:
        """Rank 0 validates; the others wait for its scores, so that every rank keeps the same best and
        stops early alike."""
        started = time.monotonic()
        metrics = self.validate(self.evaluated) if self.ranks.main else {}
        self.budget.note_validation(time.monotonic() - started, metrics.pop(OBJECTS_SECONDS, 0.0))
        return dict(self.ranks.broadcast(metrics))

    def _timed_save(self) -> None:
        started = time.monotonic()
        self.save(self.last_path, with_state=True)
        self.budget.note_save(time.monotonic() - started)

    def _step(self, steps_per_epoch: int) -> None:
        """One optimisation step and the counters that go with it."""
        config = self.config
        if config.optim.scheduler in ("poly", "cosine"):
            done = max(self.state.step / (config.epochs * steps_per_epoch), self.budget.training_share())
            for group in self.optimizer.param_groups:
                group["lr"] = config.optim.lr * lr_factor(config.optim.scheduler, done, config.optim.warmup)
        self.last_loss = self.train_step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.state.epoch_loss += self.last_loss
        self.state.step += 1
        self.state.epoch_step += 1
        self.state.seconds = self.budget.elapsed()

    def _end_epoch(self, metrics: dict[str, float] | None) -> None:
        """The epoch's log row, its validation scores (saving ``model.pt`` as ``keep`` says) and ``last.pt``."""
        self.scheduler.step()
        self.state.seconds = self.budget.elapsed()
        steps = self.state.epoch_step
        self.state.epoch += 1
        self.row = {"epoch": self.state.epoch, "step": self.state.step, "seconds": round(self.state.seconds, 2),
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "train_loss": self.state.epoch_loss / steps if steps else math.nan}
        self.state.epoch_step, self.state.epoch_loss = 0, 0.0
        if metrics is not None:
            self._record_validation(metrics)
        self.state.history.append(dict(self.row))
        self._timed_save()

    def _record_validation(self, metrics: dict[str, float]) -> None:
        self.row.update({f"val_{k}": v for k, v in metrics.items()})
        monitor = self.config.monitor
        if monitor not in metrics:
            raise BiounetError(f"monitor metric {monitor!r} is not computed for this task "
                               f"(available: {', '.join(sorted(metrics))})")
        value = metrics[monitor]
        sign = -1.0 if monitor in MINIMISED else 1.0
        improved = self.state.best is None or sign * value > sign * self.state.best
        if improved:
            self.state.best, self.state.best_epoch, self.state.stale_validations = value, self.state.epoch, 0
        else:
            self.state.stale_validations += 1
        if improved or self.config.keep == "last":
            self.save(self.best_path, with_state=False)
            if self.ranks.main:
                self.best = self._in_memory()

    def _interrupted(self) -> TrainingInterrupted:
        """Saves ``last.pt`` if the state is whole and the weights finite; the error says what was kept."""
        self.trigger("on_run_end")
        if self._consistent and self._weights_finite():
            self.save(self.last_path, with_state=True)
            return TrainingInterrupted(f"saved {self.last_path} at step {self.state.step}; resume the run "
                                       "to continue")
        kept = f"the last checkpoint is {self.last_path}" if self.last_path.exists() else "no checkpoint written"
        return TrainingInterrupted(f"stopped in the middle of a step; {kept}")


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``, or ``None`` for float32."""
    if amp == "off":
        return None
    if device.type != "cuda":
        raise BiounetError(f"amp {amp} is for CUDA devices; training on {device.type} stays float32 (bfloat16 "
                           "runs ~100x slower than float32 on CPUs without matrix units)")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    optim = config.optim
    # The fused kernels update all weights in one pass: on 2 CPU cores Adam's per-tensor loop took 16 ms a step
    # for 1.9M weights on one thread, the fused one 2.7 ms, and with two threads and any other load the loop's
    # many small parallel regions stall (0.35 s a step measured).
    fused = _fusable(model)
    if optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum,
                               weight_decay=optim.weight_decay, fused=fused)
    if optim.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, fused=fused)
    if optim.name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, fused=fused)
    raise BiounetError(f"unknown optimizer {optim.name!r}: use sgd, adam or adamw")


def _fusable(model: nn.Module) -> bool | None:
    """Whether the optimiser's fused kernels apply: floating-point weights on the CPU or a CUDA device."""
    parameters = list(model.parameters())
    ok = bool(parameters) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)
    return True if ok else None


def lr_factor(schedule: str, done: float, warmup: float) -> float:
    """The share of the base learning rate at ``done`` (0..1) of the budget: a linear warm-up over the first
    ``warmup`` of it, then ``(1 - t)^0.9`` (poly, nnU-Net's) or a half cosine down to 0.

    Args:
        schedule: ``poly`` or ``cosine``.
        done: spent share of the step or time budget, whichever is larger.
        warmup: share of the budget spent warming up (0: none).
    """
    done = min(max(done, 0.0), 1.0)
    if done < warmup:
        return (done / warmup) * lr_factor(schedule, warmup, 0.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    return (1.0 - done) ** 0.9
