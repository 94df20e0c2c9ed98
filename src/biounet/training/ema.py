"""An exponential moving average of the weights: the model a run validates and keeps.

A short run's validation scores swing from one epoch to the next (ISBI's Rand error between 0.050 and 0.108
in a 20-minute run), so the checkpoint it keeps is partly the luck of where the last steps left the
weights. The average of the weights over the last few hundred steps sits in the middle of where they went
and varies far less (Polyak & Juditsky 1992; the "EMA" of timm and of most recent segmentation recipes).

The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so that the average does not
drag the random initial weights along for the first thousand steps; buffers (batch-norm statistics) are
averaged too, integer buffers copied.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightAverage:
    """The moving average of ``model``'s weights and buffers, kept in a copy of it.

    Args:
        model: the trained network (its structure and memory format are copied).
        decay: weight of the old average at each update, in ``(0, 1)``; the average spans about
            ``1 / (1 - decay)`` steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.eval()
        for parameter in self.averaged.parameters():
            parameter.requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged network, always in eval mode (it is validated and saved, never trained)."""
        module: nn.Module = self.averaged.module
        return module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module) -> None:
        """Moves the average towards ``model``'s current weights (after each optimisation step)."""
        self.averaged.update_parameters(model)

    def _average(self, averaged: tuple[torch.Tensor, ...] | list[torch.Tensor],
                 current: tuple[torch.Tensor, ...] | list[torch.Tensor], count: torch.Tensor | int) -> None:
        # ``count`` updates so far (>= 1: the first update copies the weights).
        n = int(count)
        decay = min(self.decay, (1 + n) / (10 + n))
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - decay)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)

    def state_dict(self) -> dict[str, Any]:
        """Tensors only (``weights_only``-safe): the average's weights and buffers and the update count."""
        return {"weights": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "updates": self.averaged.n_averaged.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["weights"])
        self.averaged.n_averaged.copy_(state["updates"])
