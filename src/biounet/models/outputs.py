"""What a model's logits mean: per-channel probabilities, then class indices.

The model says how (``UNetConfig.output``), not the channel count: a ``classes`` model's logits are class
scores (softmax over channels; a sigmoid for a single output), a ``distance`` model's two channels are
independent sigmoids, the foreground probability and the normalised distance to the object's boundary.
Every probability map is in [0, 1] per channel either way, so tiling, blending and the uint8 stores treat
both alike.
"""

from __future__ import annotations

import numpy as np
import torch

from biounet.models.config import OutputKind


def logits_to_probabilities(logits: torch.Tensor, output: OutputKind = "classes") -> torch.Tensor:
    """Softmax over classes, or a sigmoid for single-output models and per channel for ``distance`` ones.

    Args:
        logits: ``(N, C, *S)`` scores.
        output: the model's ``UNetConfig.output``.
    """
    if output == "distance" or logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


def probabilities_to_mask(probabilities: np.ndarray, output: OutputKind = "classes") -> np.ndarray:
    """Class indices from ``(C, *spatial)`` probabilities: argmax (the first of equal maxima), or > 0.5 for a
    single channel and for a ``distance`` model's foreground (channel 0); uint8, uint16 beyond 256 classes.

    Args:
        probabilities: as :func:`logits_to_probabilities` gives them.
        output: the model's ``UNetConfig.output``.
    """
    if output == "distance":
        return (probabilities[0] > 0.5).astype(np.uint8)
    if probabilities.shape[0] == 1:
        return (probabilities[0] > 0.5).astype(np.uint8)
    dtype = np.uint8 if probabilities.shape[0] <= 256 else np.uint16
    # np.argmax over the leading axis strides through memory (0.1 s per 2048^2 block); a pass per class
    # over contiguous planes is ~10x faster.
    best = np.array(probabilities[0], copy=True)
    mask = np.zeros(best.shape, dtype)
    for k in range(1, probabilities.shape[0]):
        better = probabilities[k] > best
        mask[better] = k
        np.maximum(best, probabilities[k], out=best)
    return mask


def foreground_probability(probabilities: np.ndarray, output: OutputKind = "classes") -> np.ndarray:
    """The probability of not being background, ``(*spatial)``: one minus the background class's, the single
    channel of a one-output model, a ``distance`` model's channel 0.

    Args:
        probabilities: ``(C, *spatial)``.
        output: the model's ``UNetConfig.output``.
    """
    if output == "distance" or probabilities.shape[0] == 1:
        return probabilities[0]
    return probabilities[1:].sum(axis=0)
