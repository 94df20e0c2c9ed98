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
SAMPLE_IMAGES = {"isbi2012-membranes": "isbi2012-em.png", "nuclei": "nuclei.png"}
ALIASES = {"dsb2018-nuclei": "nuclei"}
"""Former names that still resolve: ``dsb2018-nuclei`` was a 30-minute model of 80 DSB 2018 images, replaced
by the generalist ``nuclei`` (see ``nuclei.md``)."""
DEFAULT = "nuclei"
"""The model offered first (napari's Segment widget): most users who open a viewer want nuclei."""


def sample_image(name: str) -> Path:
    """The sample image of a shipped model (see :data:`SAMPLE_IMAGES`), by its name or a former one."""
    return Path(str(resources.files(__name__) / "samples" / SAMPLE_IMAGES[ALIASES.get(name, name)]))


def available() -> list[str]:
    """Names of the shipped models, :data:`DEFAULT` first (former names, :data:`ALIASES`, are not listed)."""
    folder = resources.files(__name__)
    names = sorted(p.name.removesuffix(".pt") for p in folder.iterdir() if p.name.endswith(".pt"))
    return sorted(names, key=lambda name: name != DEFAULT)


def resolve_model(name_or_path: str | Path) -> Path:
    """A checkpoint path: ``name_or_path`` itself if it is a file, else the shipped model of that name (or
    former name, :data:`ALIASES`). A folder of the same name (``nuclei/``, say, an output folder) does not
    hide the shipped model.

    Raises:
        BiounetError: if it is neither an existing file nor a shipped model's name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    shipped = resources.files(__name__) / f"{ALIASES.get(name, name)}.pt"
    if shipped.is_file():
        return Path(str(shipped))
    if path.exists():
        return path  # a folder: loading it names the problem
    names = ", ".join(available()) or "none"
    raise BiounetError(f"checkpoint not found (and not a shipped model: {names})", path)
