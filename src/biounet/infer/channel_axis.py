"""A leading channel axis for single-channel array-likes, added per read instead of by ``array[None]``.

h5py datasets and zarr arrays reject ``None`` in an index, and reading them whole to add the axis would
defeat tile-by-tile prediction of images larger than memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class WithChannelAxis:
    """A read-only view of a ``(*spatial)`` array-like as ``(1, *spatial)``; nothing is read until indexed.

    Args:
        array: NumPy array, memory map, h5py dataset, zarr array, or anything with ``shape``, ``dtype``
            and basic slicing.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape: tuple[int, ...] = (1, *(int(s) for s in array.shape))
        self.ndim = len(self.shape)
        self.dtype = array.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        """``view[channel, *spatial]``: the channel index or slice selects on the added axis, the rest
        (basic slices or integers) is passed to the wrapped array, which reads only that region."""
        key = key if isinstance(key, tuple) else (key,)
        channel, spatial = (key[0], key[1:]) if key else (slice(None), ())
        block = np.asarray(self.array[spatial if spatial else ...])
        result: np.ndarray = block[None][channel]
        return result
