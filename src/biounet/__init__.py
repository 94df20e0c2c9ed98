"""biounet: U-Net and 3D U-Net for biomedical image segmentation.

The main entry points, one call per CLI command::

    import biounet

    biounet.plan(images="train/images", labels="train/labels", minutes=20)        # biounet plan
    trainer = biounet.train(images="train/images", labels="train/labels", out="run", minutes=20)
    biounet.predict_files("run/model.pt", ["test/images"], "pred")               # biounet predict
    scores = biounet.evaluate(pred="pred", truth="test/labels")                   # biounet evaluate

and the building blocks: ``UNet``, ``UNetConfig``, ``predict`` (an array, overlap-tile), ``load_checkpoint``,
``save_checkpoint``.

Names are imported on first use, so that ``import biounet.metrics`` (NumPy/SciPy only) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from biounet._version import __version__
from biounet.errors import BiounetError

if TYPE_CHECKING:
    from biounet.infer.files import predict_files
    from biounet.infer.predict import predict
    from biounet.metrics.evaluate import evaluate
    from biounet.models.checkpoint import load_checkpoint, save_checkpoint
    from biounet.models.config import UNetConfig
    from biounet.models.unet import UNet
    from biounet.workflows import plan, train

# name -> the module that defines it
_LAZY = {
    "UNet": "biounet.models.unet",
    "UNetConfig": "biounet.models.config",
    "load_checkpoint": "biounet.models.checkpoint",
    "save_checkpoint": "biounet.models.checkpoint",
    "predict": "biounet.infer.predict",
    "predict_files": "biounet.infer.files",
    "evaluate": "biounet.metrics.evaluate",
    "train": "biounet.workflows",
    "plan": "biounet.workflows",
}

__all__ = ["BiounetError", "UNet", "UNetConfig", "__version__", "evaluate", "load_checkpoint", "plan", "predict",
           "predict_files", "save_checkpoint", "train"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'biounet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value
