"""Models shipped with the package, usable by name: ``biounet predict --model isbi2012-membranes``.

Each ``<name>.pt`` here is an ordinary biounet checkpoint; ``<name>.md`` says how it was trained.
``samples/`` holds an image of the kind each was made for (napari's sample data, the test tensors and cover
of an exported package).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from biounet.errors import BiounetError

# The sample image of each shipped model, in samples/.
SAMPLE_IMAGES = {"isbi2012-membranes": "isbi2012-em.png", "dsb2018-nuclei": "dsb2018-nuclei.png"}


def sample_image(name: str) -> Path:
    """The sample image of a shipped model (see :data:`SAMPLE_IMAGES`)."""
    return Path(str(resources.files(__name__) / "samples" / SAMPLE_IMAGES[name]))


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
