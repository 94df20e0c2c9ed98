"""The typed augmentation configuration (saved with the training run as YAML)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from biounet.configs import from_dict
from biounet.errors import BiounetError
from biounet.models.symmetry import Symmetry

Range = tuple[float, float]


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation; every value is drawn per sample (see :class:`Augmenter`).

    The defaults follow Ronneberger et al. (2015): elastic deformation on a coarse 3x3 grid with 10 px
    standard deviation, rotations by any angle, flips, plus mild scaling and gray-value changes. The 3D
    U-Net's deformation (Cicek et al. 2016) is ``elastic_spacing=32, elastic_sigma=4``.

    Args:
        elastic_sigma: standard deviation in pixels of each component of the random displacement vectors
            on the coarse grid; 0 disables elastic deformation.
        elastic_grid: control points spanning each spatial axis of the coarse grid (>= 2).
        elastic_spacing: if > 0, a control grid with this spacing in pixels instead, interpolated by cubic
            B-splines (see :mod:`biounet.augment.elastic`).
        elastic_p: probability that a sample is deformed elastically.
        rotate: largest rotation in degrees; angles are uniform in ``[-rotate, rotate]``, one per plane
            of axes (one in 2D, three in 3D). A list gives one limit per plane, in the order of
            :func:`~biounet.augment.spatial.rotation_planes` (3D ``zyx``: zy, zx, yx): an anisotropic
            stack turns freely in its yx sections only, e.g. ``[0, 0, 180]``.
        flip: flip each spatial axis with probability 1/2.
        scale: range of the isotropic zoom factor (> 1 enlarges), drawn log-uniformly.
        shift: largest translation in pixels per axis, uniform.
        brightness: largest additive offset, uniform in ``[-brightness, brightness]``, in image units.
        contrast: range of the factor that scales the image about its mean, drawn log-uniformly.
        gamma: range of the gamma exponent, drawn log-uniformly; applied to the image rescaled to [0, 1].
        noise: standard deviation of additive Gaussian noise, in image units.
        intensity_p: probability that a sample gets the gray-value changes (gamma, contrast, brightness,
            noise) at all.
    """

    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    elastic_spacing: float = 0.0
    elastic_p: float = 1.0
    rotate: float | tuple[float, ...] = 180.0
    flip: bool = True
    scale: Range = (0.9, 1.1)
    shift: float = 0.0
    brightness: float = 0.1
    contrast: Range = (0.9, 1.1)
    gamma: Range = (0.8, 1.25)
    noise: float = 0.02
    intensity_p: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.rotate, list | tuple):
            if not self.rotate or not all(isinstance(r, int | float) for r in self.rotate):
                raise BiounetError(f"invalid augment config: rotate must be a number or a list of them, got "
                                   f"{self.rotate!r}")
            object.__setattr__(self, "rotate", tuple(float(r) for r in self.rotate))
        for name in ("scale", "contrast", "gamma"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or len(value) != 2:
                raise BiounetError(f"invalid augment config: {name} must be a pair [low, high], got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        checks = [
            (self.elastic_sigma >= 0, "elastic_sigma must be >= 0"),
            (self.elastic_grid >= 2, "elastic_grid must be >= 2"),
            (self.elastic_spacing >= 0, "elastic_spacing must be >= 0"),
            (0 <= self.elastic_p <= 1, "elastic_p must be in [0, 1]"),
            (all(0 <= r <= 180 for r in self.rotate_limits), "rotate must be in [0, 180] degrees"),
            (0 < self.scale[0] <= self.scale[1], "scale must be 0 < low <= high"),
            (self.shift >= 0, "shift must be >= 0"),
            (self.brightness >= 0, "brightness must be >= 0"),
            (0 < self.contrast[0] <= self.contrast[1], "contrast must be 0 < low <= high"),
            (0 < self.gamma[0] <= self.gamma[1], "gamma must be 0 < low <= high"),
            (self.noise >= 0, "noise must be >= 0"),
            (0 <= self.intensity_p <= 1, "intensity_p must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise BiounetError(f"invalid augment config: {message}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: every magnitude zero, so the tensors pass through unchanged."""
        return cls(elastic_sigma=0.0, rotate=0.0, flip=False, scale=(1.0, 1.0), shift=0.0, brightness=0.0,
                   contrast=(1.0, 1.0), gamma=(1.0, 1.0), noise=0.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        """Builds a config from a plain dict (YAML), rejecting unknown keys by name."""
        return from_dict(cls, data, "augment config")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (pairs as lists), ready for ``yaml.safe_dump``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def rotate_limits(self) -> tuple[float, ...]:
        """The largest angle per plane (one number stands for every plane)."""
        return self.rotate if isinstance(self.rotate, tuple) else (float(self.rotate),)

    def plane_limits(self, spatial_dims: int) -> tuple[float, ...]:
        """The largest angle for each plane of ``spatial_dims`` axes.

        Raises:
            BiounetError: if a list of limits does not have one per plane.
        """
        planes = spatial_dims * (spatial_dims - 1) // 2
        limits = self.rotate_limits
        if len(limits) == 1:
            return limits * planes
        if len(limits) != planes:
            raise BiounetError(f"invalid augment config: rotate needs 1 or {planes} limits for {spatial_dims}D, "
                               f"got {list(limits)}")
        return limits

    def symmetry(self, spatial_dims: int) -> Symmetry:
        """The transforms this augmentation teaches a model to ignore, which test-time augmentation may then
        average over: flips of every axis with ``flip``; turns by quarters in the image plane (the last two
        axes) when its rotations reach them (180 degrees, or 90 with flips, which give the half turn).

        Args:
            spatial_dims: 2 or 3.
        """
        plane = self.plane_limits(spatial_dims)[-1]  # the last plane is the last two axes' (yx)
        turns = plane >= 180 or (plane >= 90 and self.flip)
        return "dihedral" if self.flip and turns else "flips" if self.flip else "turns" if turns else "none"

    @property
    def elastic(self) -> bool:
        return self.elastic_sigma > 0 and self.elastic_p > 0

    @property
    def affine(self) -> bool:
        return max(self.rotate_limits) > 0 or self.flip or self.scale != (1.0, 1.0) or self.shift > 0

    @property
    def intensity(self) -> bool:
        changes = self.brightness > 0 or self.contrast != (1.0, 1.0) or self.gamma != (1.0, 1.0) or self.noise > 0
        return changes and self.intensity_p > 0
