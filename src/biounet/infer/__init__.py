"""Overlap-tile inference: tiling arithmetic, blending, test-time augmentation and the predictor."""

from biounet.infer.predict import logits_to_probabilities, predict
from biounet.infer.tiling import TilePlan, plan_tiles

__all__ = ["TilePlan", "logits_to_probabilities", "plan_tiles", "predict"]
