"""Training augmentation in torch: elastic deformation, rotation, flips, zoom and gray-value changes,
drawn once per sample and applied alike to image, label and weight map."""

from biounet.augment.augmenter import Augmenter
from biounet.augment.config import AugmentConfig
from biounet.augment.params import AugmentParams

__all__ = ["AugmentConfig", "AugmentParams", "Augmenter"]
