"""One item of a stack (a plane for a 2D model, a volume for a 3D one) as ``(C, *spatial)``, read region by
region: the out-of-core path of ``biounet predict``, so that a 20000 x 20000 slide or a 50 GB stack is never
loaded whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError, reason
from biounet.io.axes import StackPlan
from biounet.io.channels import match_channels


class ItemView:
    """One item of a stored array as ``(C, *spatial)``, read region by region.

    Args:
        array: the stored array (anything with ``shape``, ``dtype`` and basic slicing).
        plan: how the array splits into items (:func:`~biounet.io.axes.plan_stack`).
        index: the item's index into ``plan.batch_shape``.
        channels: the model's input channels; reads are adapted to them as
            :func:`~biounet.io.channels.match_channels` does (grey to RGB, RGB to grey, RGBA to RGB).
        path: the file, for messages.
    """

    def __init__(self, array: Any, plan: StackPlan, index: tuple[int, ...], channels: int | None = None,
                 path: str | Path | None = None) -> None:
        self.array, self.plan, self.index, self.path = array, plan, tuple(index), path
        self.source_channels = plan.channels
        self.channels = channels or plan.channels
        self.shape: tuple[int, ...] = (self.channels, *plan.spatial_shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32) if self.channels != self.source_channels else np.dtype(array.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        """``view[channels, *spatial]`` with basic slices (steps included); only that region is read.

        Raises:
            BiounetError: naming the file, if the region cannot be read (a damaged chunk, tile or strip).
        """
        key = key if isinstance(key, tuple) else (key,)
        channel, spatial = (key[0], key[1:]) if key else (slice(None), ())
        spatial = tuple(spatial) + (slice(None),) * (len(self.plan.spatial_axes) - len(spatial))
        plan = self.plan
        stored_key: list[int | slice] = []
        for letter in plan.axes:
            if letter == "-":
                stored_key.append(0)
            elif letter == "C":
                stored_key.append(plan.channel_key)
            elif letter in plan.batch_axes:
                stored_key.append(self.index[plan.batch_axes.index(letter)])
            else:
                stored_key.append(spatial[plan.spatial_axes.index(letter)])
        try:
            block = np.asarray(self.array[tuple(stored_key)])
        except MemoryError:
            raise
        except Exception as exc:  # a damaged chunk or strip fails in its codec in many ways; all mean the same
            raise BiounetError(f"cannot read the image region by region ({reason(exc)})", self.path) from exc
        kept = [a for a, k in zip(plan.axes, stored_key, strict=True) if not isinstance(k, int)]
        block = np.moveaxis(block, kept.index("C"), 0) if "C" in kept else block[None]
        block = match_channels(block, self.channels, self.path) if self.channels != self.source_channels else block
        result: np.ndarray = block[channel]
        return result
