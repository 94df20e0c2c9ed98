"""Augmentation parameters drawn once per sample, applied alike to image, label and weight map."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from biounet.augment.elastic import dense_displacements
from biounet.augment.intensity import add_noise, adjust_brightness, adjust_contrast, adjust_gamma
from biounet.augment.spatial import resample, sampling_grid

# Labels go through grid_sample as float32, which holds every integer up to 2**24 exactly.
_MAX_EXACT_LABEL = 1 << 24


@dataclass(frozen=True, eq=False)
class AugmentParams:
    """The random draws for one batch of ``N`` samples; ``None`` means that part is the identity.

    Spatial parts (see :mod:`biounet.augment.spatial` for the coordinate convention) are composed into one
    sampling grid, so each tensor is resampled once; gray-value parts act on the image only, after it.

    Args:
        spatial_shape: ``S``, the patch shape the parameters were drawn for.
        matrix: ``(N, dims, dims)`` flip, rotation and zoom, in pixels.
        offset: ``(N, dims)`` translation in pixels.
        control: ``(N, dims, *grid)`` elastic control vectors in pixels (see :mod:`biounet.augment.elastic`).
        control_spacing: their B-spline grid spacing in pixels, or 0 for a grid spanning the patch.
        gamma: ``(N,)`` gamma exponents.
        contrast: ``(N,)`` contrast factors.
        brightness: ``(N,)`` additive offsets.
        noise: ``(N,)`` noise standard deviations.
        noise_seed: seeds the generator of the noise, so that applying twice gives the same noise.
        first_sample: the index of the first of these samples in the batch they were drawn for (see
            :meth:`rows`); it picks each sample's noise.
    """

    spatial_shape: tuple[int, ...]
    matrix: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    control: torch.Tensor | None = None
    control_spacing: float = 0.0
    gamma: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    brightness: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    noise_seed: int = 0
    first_sample: int = 0

    def rows(self, start: int, stop: int) -> AugmentParams:
        """The parameters of samples ``start..stop-1`` only: what one process of a distributed run applies
        to its share of a batch drawn for all of them."""
        def part(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor[start:stop]

        return AugmentParams(self.spatial_shape, part(self.matrix), part(self.offset), part(self.control),
                             self.control_spacing, part(self.gamma), part(self.contrast), part(self.brightness),
                             part(self.noise), self.noise_seed, self.first_sample + start)

    @property
    def spatial(self) -> bool:
        """Whether there is a spatial transform at all."""
        return self.matrix is not None or self.offset is not None or self.control is not None

    def grid(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """The normalised ``grid_sample`` grid ``(N, *S, dims)`` of the spatial parts.

        Args:
            batch: ``N``, needed when every spatial part is ``None``.
            device: where to build it (default: the CPU).
        """
        dims = len(self.spatial_shape)
        device = torch.device("cpu") if device is None else device
        matrix = self.matrix if self.matrix is not None else torch.eye(dims).expand(batch, dims, dims)
        offset = self.offset if self.offset is not None else torch.zeros(batch, dims)
        control = None if self.control is None else self.control.to(device, torch.float32)
        displacement = None if control is None else dense_displacements(control, self.spatial_shape,
                                                                               self.control_spacing)
        return sampling_grid(self.spatial_shape, matrix.to(device, torch.float32), offset.to(device, torch.float32),
                             displacement)

    def apply(self, image: torch.Tensor, label: torch.Tensor | None = None, weight: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Transforms image, label and weight map with these same parameters.

        Tensors that a part leaves alone may be returned as they are (not copied).

        Args:
            image: ``(N, C, *S)`` floating point; bilinear (trilinear) interpolation.
            label: ``(N, *S)`` integer class map; nearest neighbour, so every value (an ignore value
                such as -1 or 255 too) is one of the input's.
            weight: ``(N, *S)`` floating-point weight map; bilinear (trilinear) interpolation.

        Raises:
            ValueError: if the shapes do not match each other or the parameters, or a label value is
                too large to pass through float32 exactly.
        """
        self._check(image, label, weight)
        if self.spatial:
            grid = self.grid(image.shape[0], image.device)
            image = resample(image, grid, "bilinear")
            if label is not None:
                label = resample(label[:, None].to(grid.dtype), grid, "nearest")[:, 0].to(label.dtype)
            if weight is not None:
                weight = resample(weight[:, None], grid, "bilinear")[:, 0]
        if self.gamma is not None:
            image = adjust_gamma(image, self.gamma)
        if self.contrast is not None:
            image = adjust_contrast(image, self.contrast)
        if self.brightness is not None:
            image = adjust_brightness(image, self.brightness)
        if self.noise is not None:
            image = add_noise(image, self.noise, self.noise_seed, self.first_sample)
        return image, label, weight

    def warp(self, values: torch.Tensor) -> torch.Tensor:
        """Moves a further floating-point map exactly as :meth:`apply` moves the weight map: the same
        spatial parts (one grid for the same parameters), bilinear (trilinear) interpolation; gray-value
        parts leave it alone. A regression target (the distance map) goes through this beside ``apply``.

        Args:
            values: ``(N, *S)`` floating point.

        Raises:
            ValueError: if the shape does not match the parameters or ``values`` is not floating point.
        """
        if values.ndim != 1 + len(self.spatial_shape) or tuple(values.shape[1:]) != tuple(self.spatial_shape):
            raise ValueError(f"map shape {tuple(values.shape)} does not match (N, *{self.spatial_shape})")
        if not values.is_floating_point():
            raise ValueError(f"map must be floating point, got {values.dtype}")
        if not self.spatial:
            return values
        return resample(values[:, None], self.grid(values.shape[0], values.device), "bilinear")[:, 0]

    def _check(self, image: torch.Tensor, label: torch.Tensor | None, weight: torch.Tensor | None) -> None:
        shape = tuple(image.shape[2:])
        if image.ndim != 2 + len(self.spatial_shape) or shape != tuple(self.spatial_shape):
            raise ValueError(f"image shape {tuple(image.shape)} does not match (N, C, *{self.spatial_shape})")
        if not image.is_floating_point():
            raise ValueError(f"image must be floating point, got {image.dtype}")
        for name, tensor in (("label", label), ("weight", weight)):
            if tensor is not None and tuple(tensor.shape) != (image.shape[0], *shape):
                raise ValueError(f"{name} shape {tuple(tensor.shape)} does not match image {tuple(image.shape)}")
        if weight is not None and not weight.is_floating_point():
            raise ValueError(f"weight must be floating point, got {weight.dtype}")
        if (label is not None and self.spatial and not label.is_floating_point() and label.numel()
                and int(label.abs().max()) > _MAX_EXACT_LABEL):
            raise ValueError(f"label values beyond +-{_MAX_EXACT_LABEL} cannot be resampled exactly")
