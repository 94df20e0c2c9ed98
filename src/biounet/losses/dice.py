"""Soft Dice loss over the classes of a softmax (or the sigmoid of a single channel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biounet.losses._inputs import check_inputs, pixel_weights


class SoftDiceLoss(nn.Module):
    """``1 - mean_c (2 sum(p_c t_c) + s) / (sum(p_c) + sum(t_c) + s)`` over the non-ignored pixels.

    ``p_c`` is the softmax probability of class ``c`` (for single-channel logits, the sigmoid is the
    foreground and its complement the background) and ``t_c`` the one-hot target. The sums run over the whole
    batch, one Dice per class, so a class that a crop happens to miss does not make the loss jump; a class
    absent from both target and prediction scores a Dice of about 1 thanks to the smoothing ``s``.

    Args:
        ignore_index: target value of pixels left out of every sum.
        include_background: also average the Dice of class 0; by default only the foreground classes count.
        smooth: ``s``, added to numerator and denominator.
    """

    def __init__(self, ignore_index: int | None = None, include_background: bool = False, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.include_background = include_background
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss.

        Args:
            logits: ``(N, C, *S)`` scores; ``C == 1`` means sigmoid foreground scores with 0/1 targets.
            target: ``(N, *S)`` class ids or ``ignore_index``.
            weight: optional ``(N, *S)`` map whose zero pixels are left out like ignored ones. Its values are
                not used otherwise: Dice is already balanced across classes, and a border weight map
                would only distort it.
        """
        check_inputs(logits, target, weight)
        if logits.shape[1] == 1:
            foreground = torch.sigmoid(logits)
            probs = torch.cat([1.0 - foreground, foreground], dim=1)
        else:
            probs = torch.softmax(logits, dim=1)
        kept = None if weight is None else (weight > 0).to(probs.dtype)
        target, weights, _ = pixel_weights(target, self.ignore_index, kept, probs.dtype)
        one_hot = F.one_hot(target, probs.shape[1]).movedim(-1, 1).to(probs.dtype)
        weights = weights.unsqueeze(1)
        dims = (0, *range(2, probs.ndim))
        intersection = (probs * one_hot * weights).sum(dims)
        total = ((probs + one_hot) * weights).sum(dims)
        dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
        if not self.include_background:
            dice = dice[1:]
        return 1.0 - dice.mean()
