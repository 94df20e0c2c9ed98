"""Training losses on logits, with ignored pixels and per-pixel weights.

- ``cross_entropy``: the U-Net paper's weighted cross-entropy (softmax) and its one-channel (sigmoid) form.
- ``dice``: soft Dice.
- ``distance``: a foreground/distance model's loss, the foreground's plus the distance's regression.
- ``factory``: :func:`build_loss`, a loss or a sum of two by name (``ce``, ``dice``, ``ce_dice``, ``bce_dice``).
- ``deep_supervision``: :class:`DeepSupervisionLoss`, a loss on each output of ``UNet.forward_deep``.
- ``distillation``: :func:`distillation_loss`, a model's probabilities pulled toward a teacher's.
- ``_inputs``: the shared checks of logits, targets and weights.
"""

from biounet.losses.cross_entropy import WeightedBinaryCrossEntropy, WeightedCrossEntropy
from biounet.losses.deep_supervision import DeepSupervisionLoss
from biounet.losses.dice import SoftDiceLoss
from biounet.losses.distance import ForegroundDistanceLoss
from biounet.losses.distillation import distillation_loss
from biounet.losses.factory import CombinedLoss, LossName, build_loss

__all__ = [
    "CombinedLoss",
    "DeepSupervisionLoss",
    "ForegroundDistanceLoss",
    "LossName",
    "SoftDiceLoss",
    "WeightedBinaryCrossEntropy",
    "WeightedCrossEntropy",
    "build_loss",
    "distillation_loss",
]
