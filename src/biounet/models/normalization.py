"""Intensity normalisation, stored with the model so that prediction always matches training."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from biounet.configs import from_dict
from biounet.errors import BiounetError

Mode = Literal["percentile", "zscore", "none"]

# Statistics of very large images come from a regular subsample of about this many pixels per channel.
_MAX_STAT_PIXELS = 1 << 22


@dataclass(frozen=True)
class Normalization:
    """Per-image, per-channel intensity normalisation ``(x - offset) / scale``.

    Args:
        mode: ``percentile`` maps the ``low``/``high`` percentiles to 0/1 (robust to outliers, the default
            for microscopy); ``zscore`` subtracts the mean and divides by the standard deviation; ``none``
            passes values through as float32.
        low: lower percentile for ``percentile``.
        high: upper percentile for ``percentile``.
    """

    mode: Mode = "percentile"
    low: float = 1.0
    high: float = 99.8

    def __post_init__(self) -> None:
        if self.mode not in ("percentile", "zscore", "none"):
            raise BiounetError(f"invalid normalization mode {self.mode!r}: use percentile, zscore or none")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise BiounetError("invalid normalization: need 0 <= low < high <= 100")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        return from_dict(cls, data, "normalization")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fit(self, image: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(offset, scale)`` for an image of shape ``(C, *spatial)`` (any array-like)."""
        channels = image.shape[0]
        if self.mode == "none":
            return np.zeros(channels, np.float32), np.ones(channels, np.float32)
        sample = _subsample(image)
        offsets, scales = [], []
        for c in range(channels):
            values = sample[c].astype(np.float64, copy=False).ravel()
            if self.mode == "percentile":
                lo, hi = np.percentile(values, [self.low, self.high])
                offset, scale = lo, hi - lo
            else:
                offset, scale = values.mean(), values.std()
            # A constant channel would divide by zero; leave it centred instead.
            offsets.append(offset)
            scales.append(scale if scale > 1e-12 else 1.0)
        return np.asarray(offsets, np.float32), np.asarray(scales, np.float32)

    @staticmethod
    def apply(block: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Normalises a ``(C, *spatial)`` block with statistics from :meth:`fit`; returns float32."""
        shape = (-1,) + (1,) * (block.ndim - 1)
        out = block.astype(np.float32, copy=True)
        out -= offset.reshape(shape)
        out /= scale.reshape(shape)
        return out

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Normalises a whole in-memory image."""
        return self.apply(image, *self.fit(image))


def _subsample(image: Any) -> np.ndarray:
    spatial = image.shape[1:]
    total = int(np.prod(spatial))
    step = 1
    while total // (step ** len(spatial)) > _MAX_STAT_PIXELS:
        step += 1
    return np.asarray(image[(slice(None),) + tuple(slice(None, None, step) for _ in spatial)])
