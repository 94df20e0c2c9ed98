"""What a model's logits mean: per-class probabilities, then class indices."""

from __future__ import annotations

import numpy as np
import torch


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or a sigmoid for single-output models."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def probabilities_to_mask(probabilities: np.ndarray) -> np.ndarray:
    """Class indices from ``(C, *spatial)`` probabilities: argmax (the first of equal maxima), or > 0.5 for a
    single channel; uint8, uint16 beyond 256 classes."""
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
