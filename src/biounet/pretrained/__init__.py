"""Models shipped with the package, usable by name: ``biounet predict --model isbi2012-membranes``.

Each ``<name>.pt`` here is an ordinary biounet checkpoint; ``<name>.md`` says how it was trained.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from biounet.errors import BiounetError


def available() -> list[str]:
    """Names of the shipped models."""
    folder = resources.files(__name__)
    return sorted(p.name.removesuffix(".pt") for p in folder.iterdir() if p.name.endswith(".pt"))


def resolve_model(name_or_path: str | Path) -> Path:
    """A checkpoint path: ``name_or_path`` itself if it exists, else the shipped model of that name.

    Raises:
        BiounetError: if it is neither an existing file nor a shipped model's name.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = resources.files(__name__) / f"{name_or_path}.pt"
    if shipped.is_file():
        return Path(str(shipped))
    names = ", ".join(available()) or "none"
    raise BiounetError(f"checkpoint not found (and not a shipped model: {names})", path)
