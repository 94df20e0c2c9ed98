"""Training losses: weighted cross-entropy (the U-Net paper's), soft Dice, and their combination."""

from biounet.losses.cross_entropy import WeightedBinaryCrossEntropy, WeightedCrossEntropy
from biounet.losses.dice import SoftDiceLoss
from biounet.losses.factory import CombinedLoss, LossName, build_loss

__all__ = [
    "CombinedLoss",
    "LossName",
    "SoftDiceLoss",
    "WeightedBinaryCrossEntropy",
    "WeightedCrossEntropy",
    "build_loss",
]
