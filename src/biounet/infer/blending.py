"""Gaussian blending of overlapping tiles for ``same``-padded models.

Each tile's prediction is weighted by a Gaussian importance map (sigma = 1/8 of the tile, as in nnU-Net)
so that the unreliable tile borders, where zero padding distorts the prediction, count least. Because the
tiles form a Cartesian grid and the Gaussian is separable, the sum of weights at a pixel is the product
of 1D sums; each tile's weight can therefore be normalised before it is added, and the output needs no
separate weight buffer the size of the image.
"""

from __future__ import annotations

import numpy as np

from biounet.infer.tiling import Tile, TilePlan

_SIGMA_FRACTION = 1.0 / 8.0
_MIN_WEIGHT = 1e-4


def gaussian_1d(length: int) -> np.ndarray:
    """A Gaussian importance profile over ``length`` pixels, peak 1, floored so edges still count."""
    centre = (length - 1) / 2.0
    sigma = max(length * _SIGMA_FRACTION, 1e-6)
    x = np.arange(length, dtype=np.float64)
    return np.maximum(np.exp(-0.5 * ((x - centre) / sigma) ** 2), _MIN_WEIGHT)


class Blender:
    """Per-tile normalised weights for a tile plan; the weights of all tiles sum to 1 at every pixel."""

    def __init__(self, plan: TilePlan) -> None:
        self.plan = plan
        self.profiles = [gaussian_1d(o) for o in plan.output_tile]
        self.totals = []
        for starts, profile, n in zip(plan.starts, self.profiles, plan.image_shape, strict=True):
            total = np.zeros(n, dtype=np.float64)
            for s in starts:
                stop = min(s + len(profile), n)
                total[s:stop] += profile[: stop - s]
            self.totals.append(total)

    def weights(self, tile: Tile) -> np.ndarray:
        """The weight map of ``tile`` over its (clipped) output region, as float32."""
        axes = []
        for start, stop, profile, total in zip(tile.output_start, tile.output_stop, self.profiles, self.totals,
                                               strict=True):
            axes.append(profile[: stop - start] / total[start:stop])
        weight = axes[0]
        for axis in axes[1:]:
            weight = np.multiply.outer(weight, axis)
        return weight.astype(np.float32)
