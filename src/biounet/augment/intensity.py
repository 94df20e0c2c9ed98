"""Gray-value changes of an image batch ``(N, C, *S)``, one parameter per sample."""

from __future__ import annotations

import torch


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def adjust_gamma(image: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``x ** gamma`` on each sample rescaled to [0, 1] by its own minimum and maximum, then mapped back,
    so that it works for normalised images with negative values and keeps each sample's range.

    Args:
        image: ``(N, C, *S)`` floating point.
        gamma: ``(N,)`` exponents > 0.
    """
    dims = tuple(range(1, image.ndim))
    low, high = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
    span = high - low
    # A constant sample stays constant; this only keeps 0/0 out of it. Rounding is monotone, so
    # (image - low) / span is never below 0 and the power is always defined.
    span = torch.where(span > 0, span, torch.ones_like(span))
    return ((image - low) / span).pow(_per_sample(gamma, image)) * span + low


def adjust_contrast(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scales each sample about its mean by ``factor`` ``(N,)``."""
    mean = image.mean(dim=tuple(range(1, image.ndim)), keepdim=True)
    return (image - mean) * _per_sample(factor, image) + mean


def adjust_brightness(image: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Adds ``offset`` ``(N,)`` to each sample."""
    return image + _per_sample(offset, image)


def add_noise(image: torch.Tensor, std: torch.Tensor, seed: int, first: int = 0) -> torch.Tensor:
    """Adds Gaussian noise with standard deviation ``std`` ``(N,)``. Sample ``i`` draws its noise from a
    generator seeded with ``seed + first + i`` on the image's device, so the same seed gives the same noise,
    and a sample's noise does not depend on which other samples share its batch (or its process).
    """
    noise = torch.empty_like(image)
    for i in range(image.shape[0]):
        generator = torch.Generator(device=image.device).manual_seed(seed + first + i)
        noise[i] = torch.randn(image.shape[1:], generator=generator, device=image.device, dtype=image.dtype)
    return image + noise * _per_sample(std, image)
