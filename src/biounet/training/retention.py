"""Keeping what a fine-tuned model knew while it learns a user's corrections.

A few minutes on a few corrected images teach a model those images and unteach the rest
(``benchmarks/bench_corrections.py``: the shipped nuclei model gained on the colour images it was corrected
on and fell from 0.59 to 0.39 on fluorescence images). A fine-tuning run (``init`` set) has three measures
against it, configured by :class:`~biounet.training.config.RetainConfig`:

- *rehearsal*: patches of the start model's own training pairs mixed into the batches, with their labels
  (:func:`biounet.training.run.train` loads them and gives them ``retain.share`` of the patches);
- *distillation* (Hinton et al. 2015; "learning without forgetting", Li & Hoiem 2016): on every pixel
  without an annotation (the unpainted pixels of a corrected image, the user's unlabelled images) the model
  is pulled toward the start model's probabilities for the same augmented patch, from a frozen copy run on
  the fly, so that no stored soft target needs to follow the augmentation;
- an *anchor* (L2-SP, Li, Grandvalet & Davoine 2018): a pull of every weight toward its start value.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from biounet.losses import distillation_loss
from biounet.models.checkpoint import load_checkpoint
from biounet.models.unet import UNet, prediction_layout
from biounet.training.config import TrainConfig


class Retention:
    """The retention terms of a fine-tuning run's loss (see the module's text).

    Args:
        start: the start model (copied; the copy is frozen, in evaluation mode).
        distill: weight of the distillation term.
        anchor: weight of the pull toward ``start``'s weights.
    """

    def __init__(self, start: UNet, distill: float, anchor: float) -> None:
        self.distill, self.anchor = distill, anchor
        # The frozen copy only runs forward: in the prediction's layout (channels-last), the faster one.
        self.memory_format = prediction_layout(start.config.spatial_dims)
        self.output = start.config.output
        self.teacher = copy.deepcopy(start).eval().requires_grad_(False) if distill > 0 else None
        if self.teacher is not None:
            self.teacher.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.start_weights = [p.detach().clone() for p in start.parameters()] if anchor > 0 else []

    @classmethod
    def for_run(cls, config: TrainConfig, device: torch.device) -> Retention | None:
        """The run's retention terms from its ``init`` checkpoint (read again, so that a resumed run still
        keeps the start model, not its own last weights); ``None`` when neither term is on.

        Raises:
            BiounetError: naming the checkpoint, if it cannot be read.
        """
        if not (config.retain.distill or config.retain.anchor):
            return None
        from biounet.pretrained import resolve_model

        start = load_checkpoint(resolve_model(config.init)).model.to(device)
        return cls(start, config.retain.distill, config.retain.anchor)

    def loss(self, model: nn.Module, images: torch.Tensor, logits: torch.Tensor,
             weight: torch.Tensor) -> torch.Tensor:
        """The retention terms for one step.

        Args:
            model: the model being trained (its weights are pulled toward the start's).
            images: the step's augmented input patches ``(N, C, *in)``.
            logits: the model's full-resolution output for them ``(N, K, *out)``.
            weight: the supervised loss's weights at the output ``(N, *out)``: 0 marks an unannotated pixel,
                where distillation counts.
        """
        total = logits.new_zeros(())
        if self.teacher is not None:
            with torch.no_grad():
                teacher = self.teacher(images.contiguous(memory_format=self.memory_format)).float()
            total = total + self.distill * distillation_loss(logits, teacher, weight == 0, self.output)
        if self.start_weights:
            pull = sum(((p - p0) ** 2).sum() for p, p0 in zip(model.parameters(), self.start_weights, strict=True))
            total = total + self.anchor * pull
        return total
