"""Draws augmentation parameters per sample and applies them to a training batch."""

from __future__ import annotations

import math

import torch

from biounet.augment.config import AugmentConfig
from biounet.augment.elastic import control_displacements, control_grid_shape
from biounet.augment.params import AugmentParams
from biounet.augment.spatial import rotation_matrix, rotation_planes


class Augmenter:
    """Random augmentation of ``(image, label, weight)`` batches, in torch on the batch's device.

    Parameters are drawn once per sample (:meth:`sample`) and then applied to all three tensors
    (:meth:`AugmentParams.apply`), so image, label and weight map always move together. Every random draw
    comes from the ``generator`` passed in, so a seeded generator reproduces the batch.

    Args:
        config: what to draw; ``AugmentConfig.none()`` passes batches through unchanged.
        spatial_dims: 2 for images ``(N, C, H, W)``, 3 for volumes ``(N, C, D, H, W)``.
    """

    def __init__(self, config: AugmentConfig, spatial_dims: int = 2) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        config.plane_limits(spatial_dims)  # a list of rotation limits must fit the dimension
        self.config = config
        self.spatial_dims = spatial_dims

    def sample(self, batch: int, spatial_shape: tuple[int, ...], generator: torch.Generator) -> AugmentParams:
        """Draws the parameters of ``batch`` samples of spatial shape ``spatial_shape``.

        Args:
            batch: number of samples ``N``; each gets its own parameters.
            spatial_shape: ``S``, every size >= 2.
            generator: source of every random draw; the parameters lie on its device.
        """
        spatial_shape = tuple(int(s) for s in spatial_shape)
        if len(spatial_shape) != self.spatial_dims or min(spatial_shape) < 2:
            raise ValueError(f"expected a {self.spatial_dims}D spatial shape with sizes >= 2, got {spatial_shape}")
        config, dims = self.config, self.spatial_dims

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)

        def log_uniform(bounds: tuple[float, float]) -> torch.Tensor:
            return torch.exp(uniform(math.log(bounds[0]), math.log(bounds[1]), batch))

        def chosen(p: float) -> torch.Tensor:
            return uniform(0.0, 1.0, batch) < p

        matrix = offset = control = None
        if config.affine:
            limits = torch.tensor(config.plane_limits(dims), device=generator.device)
            angles = uniform(-1.0, 1.0, batch, len(rotation_planes(dims))) * limits
            matrix = rotation_matrix(angles, dims)
            if config.flip:
                signs = torch.randint(0, 2, (batch, dims), generator=generator, device=generator.device) * 2 - 1
                matrix = matrix * signs[:, None, :]
            # Zooming in by s means reading the input at 1/s of the distance from the centre.
            matrix = matrix / log_uniform(config.scale)[:, None, None]
            offset = uniform(-config.shift, config.shift, batch, dims)
        if config.elastic:
            sigma = config.elastic_sigma * chosen(config.elastic_p)
            grid_shape = control_grid_shape(spatial_shape, config.elastic_grid, config.elastic_spacing)
            control = control_displacements(batch, grid_shape, sigma, generator)

        gamma = contrast = brightness = noise = None
        seed = 0
        if config.intensity:
            on = chosen(config.intensity_p)
            if config.gamma != (1.0, 1.0):
                gamma = torch.where(on, log_uniform(config.gamma), 1.0)
            if config.contrast != (1.0, 1.0):
                contrast = torch.where(on, log_uniform(config.contrast), 1.0)
            if config.brightness > 0:
                brightness = uniform(-config.brightness, config.brightness, batch) * on
            if config.noise > 0:
                noise = config.noise * on.float()
                seed = int(torch.randint(0, 1 << 62, (1,), generator=generator, device=generator.device))
        return AugmentParams(spatial_shape, matrix=matrix, offset=offset, control=control,
                             control_spacing=config.elastic_spacing, gamma=gamma,
                             contrast=contrast, brightness=brightness, noise=noise, noise_seed=seed)

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None, weight: torch.Tensor | None = None,
                 *, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Augments a batch: draws parameters per sample, then applies them to every tensor given.

        Args:
            image: ``(N, C, *S)`` floating point.
            label: ``(N, *S)`` integer class map (an ignore value survives unchanged), or ``None``.
            weight: ``(N, *S)`` floating-point weight map, or ``None``.
            generator: source of every random draw.
        """
        params = self.sample(image.shape[0], tuple(image.shape[2:]), generator)
        return params.apply(image, label, weight)
