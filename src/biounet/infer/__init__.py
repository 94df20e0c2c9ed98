"""Overlap-tile inference: tiling arithmetic, blending, test-time augmentation and the predictor."""

from biounet.infer.predict import predict
from biounet.infer.tiling import TilePlan, plan_tiles

__all__ = ["TilePlan", "plan_tiles", "predict"]
