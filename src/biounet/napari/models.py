"""The models the plugin's widgets offer: the shipped ones, files the user opened, and the runs trained in
this session (offered by the Segment widget as soon as the Train widget finishes one)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]

from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.pretrained import available, resolve_model


class ModelList(QObject):
    """Named models, newest last; ``changed`` is emitted with the name of each model added.

    A Qt signal, so that a widget connected to it is disconnected when Qt deletes the widget.
    """

    changed = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self._paths: dict[str, str] = {name: name for name in available()}

    def names(self) -> list[str]:
        return list(self._paths)

    def path(self, name: str) -> str:
        """The checkpoint (a file, or a shipped model's name) shown as ``name``."""
        return self._paths[name]

    def add(self, path: str | Path, name: str | None = None) -> str:
        """Offers a checkpoint under ``name`` (default: its file name and folder); returns the name."""
        path = Path(path)
        name = name or f"{path.parent.name}/{path.name}"
        self._paths[name] = str(path)
        self.changed.emit(name)
        return name


MODELS = ModelList()
"""The list both widgets share."""


def load_model(name_or_path: str) -> Checkpoint:
    """The checkpoint at a path or of a shipped model's name, read once per version of the file."""
    path = resolve_model(name_or_path)
    return _load(str(path.resolve()), path.stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _load(path: str, version: int) -> Checkpoint:
    return load_checkpoint(path)


def devices() -> list[str]:
    """The devices to offer: the GPUs first where there are any (the user sees and can change the choice),
    then the CPU."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]
