"""U-Net models and what a trained one carries with it.

- ``config``: :class:`UNetConfig` and the exact valid-convolution shape arithmetic (pure functions).
- ``unet``: :class:`UNet`, 2D or 3D (``spatial_dims``), valid or same padding, batch norm, plain or residual
  encoder; returns logits (``forward_deep``: with the deep-supervision heads').
- ``normalization``: the intensity normalisation a model was trained with (percentiles or z-score).
- ``outputs``: logits to probabilities (softmax or sigmoids, as ``UNetConfig.output`` says) and
  probabilities to a class mask.
- ``instance_params``: how an instance model's probabilities become objects (thresholds, minimum size).
- ``symmetry``: which transforms test-time augmentation may average a model over, and whether it does.
- ``tensors``: a PyTorch file read as tensors only (``weights_only``), without torch's warnings on stderr.
- ``checkpoint``: the versioned checkpoint (:class:`Checkpoint`), saved atomically, loaded weights-only.
- ``bioimageio``: reading a biounet-made BioImage Model Zoo package back as its checkpoint.
"""

from biounet.models.config import UNetConfig
from biounet.models.unet import UNet

__all__ = ["UNet", "UNetConfig"]
