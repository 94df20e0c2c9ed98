"""Callbacks for the trainer: progress bar, log.csv, TensorBoard and plots."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

from tqdm import tqdm

from biounet.atomic import atomic_path
from biounet.training.trainer import Trainer


class ProgressBar:
    """A tqdm bar per epoch with the running loss, and a line per epoch with the validation scores."""

    def __init__(self, steps_per_epoch: int, enabled: bool = True) -> None:
        self.steps, self.enabled = steps_per_epoch, enabled
        self.bar: tqdm[Any] | None = None

    def attach(self, trainer: Trainer) -> None:
        trainer.add_callback("on_step_end", self.on_step)
        trainer.add_callback("on_epoch_end", self.on_epoch)
        trainer.add_callback("on_run_end", self.on_end)

    def on_step(self, trainer: Trainer) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.steps, desc=f"epoch {trainer.state.epoch + 1}", unit="step",
                            disable=not self.enabled, leave=False)
        self.bar.update(1)
        budget = trainer.budget
        if budget.limited:
            self.bar.set_postfix(loss=f"{trainer.last_loss:.4f}", elapsed=_clock(budget.elapsed()),
                                 left=_clock(budget.remaining()))
        else:
            self.bar.set_postfix(loss=f"{trainer.last_loss:.4f}")

    def on_epoch(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled:
            parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trainer.row.items()]
            tqdm.write(" ".join(parts))

    def on_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class CSVLogger:
    """Rewrites ``log.csv`` from the run history after every epoch (so a resumed run has no gaps or
    duplicates)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def attach(self, trainer: Trainer) -> None:
        trainer.add_callback("on_epoch_end", self.write)

    def write(self, trainer: Trainer) -> None:
        rows = trainer.state.history
        columns = list(dict.fromkeys(k for row in rows for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        with atomic_path(self.path) as tmp:
            tmp.write_text(buffer.getvalue())


class TensorBoardLogger:
    """Scalars for TensorBoard (optional: needs the ``tensorboard`` package)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.writer: Any = None

    def attach(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            warnings.warn("tensorboard is not installed; skipping TensorBoard logs "
                          "(pip install 'biounet[tensorboard]')", stacklevel=2)
            return
        self.writer = SummaryWriter(str(self.log_dir))
        trainer.add_callback("on_step_end", self.on_step)
        trainer.add_callback("on_epoch_end", self.on_epoch)
        trainer.add_callback("on_run_end", lambda _t: self.writer.close())

    def on_step(self, trainer: Trainer) -> None:
        self.writer.add_scalar("train/loss", trainer.last_loss, trainer.state.step)

    def on_epoch(self, trainer: Trainer) -> None:
        for key, value in trainer.row.items():
            if key.startswith("val_") or key == "lr":
                self.writer.add_scalar(key.replace("val_", "val/"), value, trainer.state.step)


def _clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for the progress bar."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
