"""biounet: U-Net and 3D U-Net for biomedical image segmentation.

The main entry points::

    from biounet import UNet, UNetConfig, predict, load_checkpoint, save_checkpoint
"""

__version__ = "0.1.0"

from biounet.errors import BiounetError
from biounet.infer.predict import predict
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.config import UNetConfig
from biounet.models.unet import UNet

__all__ = ["BiounetError", "UNet", "UNetConfig", "__version__", "load_checkpoint", "predict", "save_checkpoint"]
