"""Distillation: a model's probabilities pulled toward another model's (a teacher's) on the same input.

The per-pixel term is the KL divergence ``KL(teacher || model)`` of the class probabilities, which is 0 where
the two agree and, unlike a cross-entropy against soft targets, does not reward the model for the teacher's
own uncertainty. Outputs follow :mod:`biounet.models.outputs`: a softmax over a ``classes`` model's
channels, independent sigmoids for a ``distance`` model's channels and a single output (each a Bernoulli
KL, summed over channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from biounet.models.config import OutputKind


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor,
                      output: OutputKind = "classes") -> torch.Tensor:
    """``sum(mask * KL(teacher || model)) / mask.numel()``: the KL divergence per pixel, summed where
    ``mask`` is set and divided by all pixels, so that the term weighs as much as the share of the patch it
    covers.

    Args:
        logits: the model's ``(N, C, *S)`` scores.
        teacher: the teacher's scores for the same pixels, same shape (no gradient flows into them).
        mask: ``(N, *S)`` where the term counts (bool or 0/1).
        output: the models' ``UNetConfig.output``.
    """
    teacher = teacher.detach()
    if output == "distance" or logits.shape[1] == 1:
        p = torch.sigmoid(teacher)
        kl = p * (F.logsigmoid(teacher) - F.logsigmoid(logits)) + \
            (1 - p) * (F.logsigmoid(-teacher) - F.logsigmoid(-logits))
    else:
        log_p = F.log_softmax(teacher, dim=1)
        kl = log_p.exp() * (log_p - F.log_softmax(logits, dim=1))
    return (kl.sum(dim=1) * mask.to(kl.dtype)).sum() / mask.numel()
