"""Pixel-wise cross-entropy weighted by a weight map: the U-Net paper's energy (Ronneberger et al. 2015, eq. 1).

The loss is ``sum(w(x) * CE(x)) / n`` over the ``n`` non-ignored pixels. Dividing by the pixel count rather
than by the sum of weights keeps the map's absolute scale: a border pixel of weight 10 counts ten times a
pixel of weight 1 in every batch, and the loss does not depend on the tile size. Without a map it is the
mean cross-entropy, ``F.cross_entropy``'s value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biounet.errors import BiounetError
from biounet.losses._inputs import check_inputs, pixel_weights


def _weighted_mean(per_pixel: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # clamp: a batch with every pixel ignored gives 0 (still connected to the graph) instead of 0/0.
    return (per_pixel * weights).sum() / valid.sum().clamp(min=1)


class WeightedCrossEntropy(nn.Module):
    """Softmax cross-entropy over ``C >= 2`` classes, weighted per pixel.

    Args:
        ignore_index: target value of pixels that contribute nothing (weight 0, whatever the map holds).
    """

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss.

        Args:
            logits: ``(N, C, *S)`` scores.
            target: ``(N, *S)`` class ids in ``0..C-1`` or ``ignore_index``.
            weight: ``(N, *S)`` weight map, or None for weight 1.
        """
        check_inputs(logits, target, weight)
        if logits.shape[1] < 2:
            raise BiounetError("cross-entropy needs logits for at least 2 classes; use bce_dice for 1 channel")
        target, weights, valid = pixel_weights(target, self.ignore_index, weight, logits.dtype)
        return _weighted_mean(F.cross_entropy(logits, target, reduction="none"), weights, valid)


class WeightedBinaryCrossEntropy(nn.Module):
    """Sigmoid binary cross-entropy for single-channel logits and 0/1 targets, weighted per pixel.

    Args:
        ignore_index: target value of pixels that contribute nothing (weight 0, whatever the map holds).
    """

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss.

        Args:
            logits: ``(N, 1, *S)`` scores of the foreground.
            target: ``(N, *S)`` 0 (background), 1 (foreground) or ``ignore_index``.
            weight: ``(N, *S)`` weight map, or None for weight 1.
        """
        check_inputs(logits, target, weight)
        if logits.shape[1] != 1:
            raise BiounetError(f"binary cross-entropy needs 1-channel logits, got {logits.shape[1]} channels")
        target, weights, valid = pixel_weights(target, self.ignore_index, weight, logits.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), reduction="none")
        return _weighted_mean(per_pixel, weights, valid)
