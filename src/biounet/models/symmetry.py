"""A trained model's test-time augmentation, stored in its checkpoint beside the normalisation: which
transforms its training taught it to ignore, and whether predictions average over them by default."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from biounet.configs import from_dict
from biounet.errors import BiounetError

# The transforms a model may be averaged over (biounet.infer.tta.transforms builds them): "flips" of every
# spatial axis, "turns" in the last two axes (the image plane), "dihedral" both, "none" neither.
Symmetry = Literal["dihedral", "flips", "turns", "none"]
SYMMETRIES: tuple[Symmetry, ...] = ("dihedral", "flips", "turns", "none")
# Training switches TTA on only where it lowers the validation error (1 - Dice or accuracy@0.5, or the Rand
# error) by at least this share: it multiplies the time of every prediction by its group's size.
TTA_GAIN = 0.05


@dataclass(frozen=True)
class TTA:
    """How ``biounet predict`` uses test-time augmentation (TTA) with a model.

    A model trained without flips (left and right hippocampus are different classes) must not be averaged
    over flipped predictions: that swaps its classes. Training records the transforms its augmentation
    covered (:meth:`biounet.augment.config.AugmentConfig.symmetry`) and, on the validation images, whether
    averaging over them pays for its several-fold prediction time; checkpoints written before this was
    stored read as the full group, off.

    Args:
        symmetry: the transforms TTA may average over.
        enabled: whether predictions average over them unless told otherwise.
    """

    symmetry: Symmetry = "dihedral"
    enabled: bool = False

    def __post_init__(self) -> None:
        if self.symmetry not in SYMMETRIES:
            raise BiounetError(f"test-time symmetry must be one of {', '.join(SYMMETRIES)}, got {self.symmetry!r}")
        if self.enabled and self.symmetry == "none":
            raise BiounetError("test-time augmentation cannot be enabled for a model without a symmetry")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TTA:
        return from_dict(cls, data, "test-time augmentation")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
