"""U-Net models and their configuration."""

from biounet.models.config import UNetConfig
from biounet.models.unet import UNet

__all__ = ["UNet", "UNetConfig"]
