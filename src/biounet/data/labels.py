"""Label conventions: how a label image on disk becomes training targets.

Targets are a class map (int64, ``IGNORE_INDEX`` where unannotated) and, for weight maps, an instance map
of the cells (0 = background).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from biounet.configs import from_dict
from biounet.errors import BiounetError

IGNORE_INDEX = -1
Kind = Literal["classes", "binary", "instances"]


@dataclass(frozen=True)
class LabelConfig:
    """How to read label images.

    Args:
        kind: ``classes``: pixel values are class indices 0..K-1. ``binary``: pixels equal to ``foreground``
            are class 1, all others class 0 (ISBI 2012: 0 = membrane, 255 = cell). ``instances``: 0 is
            background, every other value is one object; touching objects are separated by a line of
            background, and the classes are background/object.
        foreground: the foreground value for ``binary`` labels.
        ignore: a label value meaning "not annotated"; those pixels weigh 0 in every loss and metric.
    """

    kind: Kind = "binary"
    foreground: int = 255
    ignore: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("classes", "binary", "instances"):
            raise BiounetError(f"invalid label kind {self.kind!r}: use classes, binary or instances")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelConfig:
        return from_dict(cls, data, "labels config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def targets(self, label: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """``(classes, instances)`` for a label image of spatial shape ``S``.

        Raises:
            BiounetError: if a class index is out of range for ``num_classes``.
        """
        from biounet.data.instances import instances_from_classes, separate_touching

        ignored = label == self.ignore if self.ignore is not None else np.zeros(label.shape, bool)
        if self.kind == "instances":
            instances = separate_touching(np.where(ignored, 0, label).astype(np.int64))
            classes = (instances > 0).astype(np.int64)
        else:
            classes = (label == self.foreground).astype(np.int64) if self.kind == "binary" else \
                label.astype(np.int64)
            if self.kind == "classes":
                bad = (classes < 0) | (classes >= num_classes)
                if np.any(bad & ~ignored):
                    found = np.unique(classes[bad & ~ignored])[:5].tolist()
                    raise BiounetError(f"label values {found} are not classes 0..{num_classes - 1} "
                                       "(set labels.kind or labels.ignore)")
            instances = instances_from_classes(np.where(ignored, 0, classes))
        classes = np.where(ignored, IGNORE_INDEX, classes)
        return classes, instances
