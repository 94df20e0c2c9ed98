"""A corrections collection: the folder where corrected images accumulate, so that every fine-tuning runs on
all of them (as Cellpose's human-in-the-loop retrains on everything corrected so far), not on the last image
alone. No Qt here.

Layout: ``<folder>/images/<name>.tif`` and ``<folder>/labels/<name>.tif``, a pair per corrected image (per
annotated plane of a stack), written by :func:`~biounet.napari.layers.write_training_pairs`: the label holds
the painted corrections (and :data:`~biounet.napari.layers.CONTEXT` pixels around them), :data:`IGNORE`
elsewhere. The two folders are what ``biounet train --init MODEL --images <folder>/images --labels
<folder>/labels --set labels.ignore=-1`` trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from biounet.data.examples import pair_files
from biounet.errors import BiounetError
from biounet.napari.layers import IGNORE, write_training_pairs


@dataclass(frozen=True)
class Entry:
    """One corrected image of a collection.

    Attributes:
        name: its file stem.
        annotated: the share of its pixels that are annotated (painted, or drawn in full).
        objects: the number of object ids in its label.
    """

    name: str
    annotated: float
    objects: int


class Corrections:
    """A corrections collection in ``folder`` (made on the first :meth:`add`).

    Args:
        folder: the collection's folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def images(self) -> Path:
        return self.folder / "images"

    @property
    def labels(self) -> Path:
        return self.folder / "labels"

    def add(self, name: str, image: Any, rgb: bool, label: np.ndarray, spatial_dims: int, in_channels: int) -> int:
        """Adds a corrected image (its pairs replace any of the same name: correcting an image again updates
        it); returns the number of pairs written.

        Args:
            name: the file stem (an image layer's name).
            image: the image layer's data.
            rgb: whether it is RGB(A).
            label: :func:`~biounet.napari.layers.training_label` of its Labels layer.
            spatial_dims: the model's.
            in_channels: the model's.

        Raises:
            BiounetError: if nothing is annotated or the label does not fit the image.
        """
        # The image's earlier pairs: itself, or its planes (``<name>_t0_z3``: see write_training_pairs).
        for folder in (self.images, self.labels):
            for pattern in (f"{name}.tif", f"{name}_[tz][0-9]*.tif"):
                for old in folder.glob(pattern) if folder.is_dir() else ():
                    old.unlink()
        return write_training_pairs(self.folder, name, image, rgb, label, spatial_dims, in_channels)[2]

    def entries(self) -> list[Entry]:
        """The corrected images, by name (none for a collection not made yet).

        Raises:
            BiounetError: naming the file, for an image without its label or a label that cannot be read.
        """
        if not self.images.is_dir():
            return []
        found = []
        for _, label_path in pair_files(self.images, self.labels):
            try:
                label = tifffile.imread(label_path)
            except (OSError, ValueError) as exc:
                raise BiounetError(f"cannot read the label ({type(exc).__name__})", label_path) from exc
            annotated = label != IGNORE
            found.append(Entry(label_path.stem, float(annotated.mean()),
                               int(np.unique(label[annotated & (label > 0)]).size)))
        return found
