"""Training augmentation in torch, parameters drawn once per sample and applied alike to image,
label and weight map.

- ``config``: :class:`AugmentConfig`, what to draw and how much.
- ``params``: :class:`AugmentParams`, one sample's drawn parameters and their application.
- ``augmenter``: :class:`Augmenter`, drawing the parameters for a batch.
- ``spatial``: rotations, flips, zoom as one sampling grid; resampling image, label and weights with it.
- ``elastic``: the paper's elastic deformation: random displacements on a coarse grid, B-spline smoothed.
- ``intensity``: brightness, contrast, gamma and noise.
"""

from biounet.augment.augmenter import Augmenter
from biounet.augment.config import AugmentConfig
from biounet.augment.params import AugmentParams

__all__ = ["AugmentConfig", "AugmentParams", "Augmenter"]
