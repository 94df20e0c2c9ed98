"""Training losses and the U-Net paper's border weight maps."""

from biounet.losses.cross_entropy import WeightedBinaryCrossEntropy, WeightedCrossEntropy
from biounet.losses.dice import SoftDiceLoss
from biounet.losses.factory import CombinedLoss, LossName, build_loss
from biounet.losses.weight_map import balanced_class_weights, border_weight_map

__all__ = [
    "CombinedLoss",
    "LossName",
    "SoftDiceLoss",
    "WeightedBinaryCrossEntropy",
    "WeightedCrossEntropy",
    "balanced_class_weights",
    "border_weight_map",
    "build_loss",
]
