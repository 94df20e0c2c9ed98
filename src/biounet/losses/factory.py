"""The training losses by name, including the usual sum of cross-entropy and Dice."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import nn

from biounet.errors import BiounetError
from biounet.losses.cross_entropy import WeightedBinaryCrossEntropy, WeightedCrossEntropy
from biounet.losses.dice import SoftDiceLoss
from biounet.losses.distance import ForegroundDistanceLoss

LossName = Literal["ce", "dice", "ce_dice", "bce_dice"]


class CombinedLoss(nn.Module):
    """Cross-entropy plus soft Dice, the common recipe.

    A weight map weights the cross-entropy term only; Dice, already balanced across classes, counts every
    pixel that the map keeps (weight > 0) equally, so pixels the map ignores are left out of both terms.

    Args:
        cross_entropy: a ``WeightedCrossEntropy`` or ``WeightedBinaryCrossEntropy``.
        dice: the ``SoftDiceLoss`` added to it.
    """

    def __init__(self, cross_entropy: nn.Module, dice: SoftDiceLoss) -> None:
        super().__init__()
        self.cross_entropy = cross_entropy
        self.dice = dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return self.cross_entropy(logits, target, weight) + self.dice(logits, target, weight)


def build_loss(name: LossName, ignore_index: int | None = None, *, include_background: bool = False,
               smooth: float = 1.0, distance: bool = False) -> nn.Module:
    """A loss module whose ``forward(logits, target, weight=None)`` returns a scalar.

    Args:
        name: ``ce`` (softmax cross-entropy, weighted by the map when one is given: the paper's loss),
            ``dice`` (soft Dice), ``ce_dice`` (both summed, softmax) or ``bce_dice`` (binary cross-entropy
            plus Dice for single-channel logits and 0/1 targets).
        ignore_index: target value of pixels that count for nothing, or None.
        include_background: whether Dice also averages over class 0.
        smooth: Dice smoothing term.
        distance: for a foreground/distance model (:mod:`biounet.losses.distance`): ``name`` says how its
            foreground channel is learnt (``ce`` its binary cross-entropy, ``dice``, ``ce_dice`` or
            ``bce_dice`` both), and the module's ``forward(logits, target, weight, distance)`` adds the
            distance term.
    """
    def dice() -> SoftDiceLoss:
        return SoftDiceLoss(ignore_index, include_background=include_background, smooth=smooth)

    if distance and name in get_args(LossName):
        # The foreground is one sigmoid channel, so its cross-entropy is the binary one whatever the name.
        foreground: nn.Module
        if name == "ce":
            foreground = WeightedBinaryCrossEntropy(ignore_index)
        elif name == "dice":
            foreground = dice()
        else:
            foreground = CombinedLoss(WeightedBinaryCrossEntropy(ignore_index), dice())
        return ForegroundDistanceLoss(foreground, ignore_index)
    if name == "ce":
        return WeightedCrossEntropy(ignore_index)
    if name == "dice":
        return dice()
    if name == "ce_dice":
        return CombinedLoss(WeightedCrossEntropy(ignore_index), dice())
    if name == "bce_dice":
        return CombinedLoss(WeightedBinaryCrossEntropy(ignore_index), dice())
    raise BiounetError(f"unknown loss {name!r}: use one of {', '.join(get_args(LossName))}")
