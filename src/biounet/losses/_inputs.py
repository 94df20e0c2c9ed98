"""Checks shared by the losses, and the per-pixel weights that make ignored pixels count for nothing."""

from __future__ import annotations

import torch

from biounet.errors import BiounetError


def check_inputs(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> None:
    """Raises unless logits are ``(N, C, *S)``, the target ``(N, *S)`` integer and the weight ``(N, *S)``."""
    if logits.ndim < 3 or tuple(target.shape) != (logits.shape[0], *logits.shape[2:]):
        raise BiounetError(f"logits of shape {tuple(logits.shape)} need a target of shape (N, *S) = "
                           f"{(logits.shape[0], *logits.shape[2:])}, got {tuple(target.shape)}")
    if target.is_floating_point() or target.is_complex():
        raise BiounetError(f"target must hold integer class ids, got {target.dtype}")
    if weight is not None and weight.shape != target.shape:
        raise BiounetError(f"weight map of shape {tuple(weight.shape)} does not match target {tuple(target.shape)}")


def pixel_weights(target: torch.Tensor, ignore_index: int | None, weight: torch.Tensor | None,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The target with ignored pixels set to class 0 (safe to index with), each pixel's weight, and the mask
    of non-ignored pixels.

    Ignored pixels weigh exactly 0 whatever the weight map holds there, even inf or NaN, so neither they nor
    their gradient can leak into the loss.
    """
    target = target.long()
    if ignore_index is None:
        valid = torch.ones_like(target, dtype=torch.bool)
    else:
        valid = target != ignore_index
        target = target.masked_fill(~valid, 0)
    if weight is None:
        weights = valid.to(dtype)
    else:
        weights = torch.where(valid, weight.to(dtype), torch.zeros((), dtype=dtype, device=weight.device))
    return target, weights, valid
