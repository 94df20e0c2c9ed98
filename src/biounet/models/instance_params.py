"""The post-processing settings of an instance model, stored in its checkpoint beside the normalisation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from biounet.configs import from_dict
from biounet.errors import BiounetError


@dataclass(frozen=True)
class InstanceParams:
    """How class probabilities become objects (see :func:`biounet.infer.instances.instances_from_probabilities`).

    Training tunes them on the validation images (:mod:`biounet.training.tuning`) and stores them in the
    checkpoint, so ``biounet predict`` uses the values that scored best there.

    Args:
        seed: interior probability a pixel needs to seed an object (three-class models); the normalised
            distance to the boundary, for foreground/distance models.
        foreground: probability of belonging to an object (interior + boundary, or the foreground class or
            channel) that a pixel needs to be part of one.
        min_size: objects smaller than this many pixels (voxels) are dropped.
    """

    seed: float = 0.5
    foreground: float = 0.5
    min_size: int = 0

    def __post_init__(self) -> None:
        for name in ("seed", "foreground"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise BiounetError(f"instance {name} threshold must lie in (0, 1), got {value}")
        if self.min_size < 0:
            raise BiounetError(f"instance min_size must be >= 0, got {self.min_size}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstanceParams:
        return from_dict(cls, data, "instance post-processing")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
