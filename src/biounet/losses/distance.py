"""The loss of a foreground/distance model: the foreground learnt as a sigmoid class, the normalised distance
to the object's boundary regressed beside it.

Channel 0 is the foreground's logit, trained with the foreground loss the config names (binary
cross-entropy weighted by the border weight map, soft Dice, or both). Channel 1 is the distance's logit,
trained with binary cross-entropy against the distance target in [0, 1]
(:func:`~biounet.data.targets.distance_target`): for a target ``t`` its minimum lies at ``sigmoid = t``, so
it regresses the distance, with gradients ``sigmoid - t`` that neither vanish as L2's do through a saturated
sigmoid nor explode. It counts every annotated pixel, background (target 0) included, not only the
foreground: post-processing seeds objects where the distance is high, and a distance that was never taught
to be low outside the objects could seed a false object wherever the foreground is wrongly confident; with
background in the loss such a blob has no seed and is dropped. Each pixel weighs what the weight map gives
it, as in the foreground's cross-entropy: with class balance the objects' pixels weigh as much in all as the
background's (unweighted, the background, most of an image and learnt first, dominates the mean and the
ramps inside the objects are fitted slowly: after 2 minutes on DSB 2018 the predicted peaks had a median of
0.36 unweighted, 0.51 weighted), and the paper's border term stresses the gaps between objects, where the
distance must fall to 0. The sum is divided by the counted pixels, as the weighted cross-entropy's is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biounet.errors import BiounetError
from biounet.losses._inputs import check_inputs


class ForegroundDistanceLoss(nn.Module):
    """``foreground(logits[:, :1], target, weight) + sum(weight * BCE(logits[:, 1], distance)) / n`` over the
    ``n`` counted pixels.

    Args:
        foreground: a loss of one-channel (sigmoid) logits and 0/1 targets, e.g. a
            :class:`~biounet.losses.cross_entropy.WeightedBinaryCrossEntropy`.
        ignore_index: target value of pixels that count for nothing in either term.
    """

    def __init__(self, foreground: nn.Module, ignore_index: int | None = None) -> None:
        super().__init__()
        self.foreground = foreground
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                distance: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar loss.

        Args:
            logits: ``(N, 2, *S)``: the foreground's and the distance's scores.
            target: ``(N, *S)`` 0 (background), 1 (object) or ``ignore_index``.
            weight: ``(N, *S)`` weight map of both terms, or None for weight 1; its zero pixels (the
                unannotated ones) are left out of both.
            distance: ``(N, *S)`` the distance target in [0, 1].
        """
        check_inputs(logits, target, weight)
        if logits.shape[1] != 2:
            raise BiounetError(f"the foreground/distance loss needs 2-channel logits, got {logits.shape[1]}")
        if distance is None or distance.shape != target.shape:
            raise BiounetError("the foreground/distance loss needs a distance target of the target's shape, got "
                               f"{None if distance is None else tuple(distance.shape)}")
        counted = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else \
            target != self.ignore_index
        if weight is not None:
            counted = counted & (weight > 0)
        zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
        # An ignored pixel's target may be anything, even NaN: replaced before the loss sees it, since a NaN
        # would reach the gradient through any mask applied afterwards.
        wanted = torch.where(counted, distance.to(logits.dtype), zero)
        per_pixel = F.binary_cross_entropy_with_logits(logits[:, 1], wanted, reduction="none")
        if weight is not None:
            per_pixel = per_pixel * weight.to(logits.dtype)
        regression = torch.where(counted, per_pixel, zero)
        total: torch.Tensor = self.foreground(logits[:, :1], target, weight)
        # clamp: a batch with every pixel ignored gives 0 (still connected to the graph) instead of 0/0.
        return total + regression.sum() / counted.sum().clamp(min=1)
