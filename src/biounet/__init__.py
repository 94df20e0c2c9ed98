"""biounet: U-Net and 3D U-Net for biomedical image segmentation.

The main entry points::

    from biounet import UNet, UNetConfig, predict, load_checkpoint, save_checkpoint

Names are imported on first use, so that ``import biounet.metrics`` (NumPy/SciPy only) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from biounet._version import __version__
from biounet.errors import BiounetError

if TYPE_CHECKING:
    from biounet.infer.predict import predict
    from biounet.models.checkpoint import load_checkpoint, save_checkpoint
    from biounet.models.config import UNetConfig
    from biounet.models.unet import UNet

# name -> the module that defines it
_LAZY = {
    "UNet": "biounet.models.unet",
    "UNetConfig": "biounet.models.config",
    "load_checkpoint": "biounet.models.checkpoint",
    "save_checkpoint": "biounet.models.checkpoint",
    "predict": "biounet.infer.predict",
}

__all__ = ["BiounetError", "UNet", "UNetConfig", "__version__", "load_checkpoint", "predict", "save_checkpoint"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'biounet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
