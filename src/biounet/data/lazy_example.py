"""Training pairs too large for memory, read patch by patch from zarr, HDF5 or TIFF.

An in-memory :class:`~biounet.data.examples.Example` costs 16 bytes per voxel (float32 image, int64 target,
float32 weights), fine for ISBI, not for a 50 GB volume. A :class:`LazyExample` keeps only the opened
arrays: each patch reads its image region (normalised with statistics fitted on a subsample of the whole
image) and its label region with a margin, turns the label into targets and the paper's border weights
there, and drops the margin. Class-balance weights come from a sample of blocks of the whole label, so
every patch is weighed alike. Weights differ from a whole-image computation only where the nearest cells
lie beyond the margin (which exceeds the border term's reach, ``3 sigma``) or past the image's edge.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from biounet.data.examples import WeightMapConfig
from biounet.data.labels import IGNORE_INDEX, LabelConfig, LabelValues
from biounet.errors import BiounetError
from biounet.geometry import read_mirrored
from biounet.io.axes import plan_stack
from biounet.io.files import file_stem
from biounet.io.items import ItemView
from biounet.io.stored import open_stored, probe_stored
from biounet.models.normalization import Normalization

# Pairs whose in-memory copy (16 bytes per voxel) would take this much are read patch by patch.
LAZY_FROM_BYTES = 4 * 1024**3
# Blocks of the label sampled for the class balance, and their edge.
_BALANCE_BLOCKS = 16
_BALANCE_EDGE = {2: 512, 3: 64}


def is_large(image: Path, spatial_dims: int) -> bool:
    """Whether a pair with this image would take :data:`LAZY_FROM_BYTES` or more in memory."""
    stored = probe_stored(image, spatial_dims)
    spatial = [n for n, a in zip(stored.shape, stored.axes, strict=True) if a in "ZYX?"]
    return 16 * math.prod(spatial) >= LAZY_FROM_BYTES


class LazyExample:
    """One training pair, opened, read patch by patch (see the module docstring).

    Args:
        image_path: the image (zarr, HDF5 and TIFF are read region by region).
        label_path: its label, one channel, same spatial shape.
        spatial_dims: 2 or 3.
        in_channels: the model's input channels.
        num_classes: the model's classes.
        normalization: intensity normalisation, fitted on a subsample of the whole image.
        labels: the resolved label convention.
        weights: the border weight map's settings.
        seed: picks the blocks sampled for the class balance.
    """

    def __init__(self, image_path: Path, label_path: Path, *, spatial_dims: int, in_channels: int,
                 num_classes: int, normalization: Normalization, labels: LabelConfig, weights: WeightMapConfig,
                 seed: int = 0) -> None:
        self.name = file_stem(image_path)
        self.labels, self.num_classes, self.weights = labels, num_classes, weights
        self.paths = (image_path, label_path)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.normalization = normalization
        self._files: ExitStack | None = None
        image, label = self._open()
        self.shape: tuple[int, ...] = tuple(image.shape[1:])
        if tuple(label.shape[1:]) != self.shape or label.shape[0] != 1:
            raise BiounetError(f"label shape {tuple(label.shape)} does not match its image {self.shape} "
                               f"({image_path})", label_path)
        self.stats = normalization.fit(image)
        # The border term reaches ~3 sigma from a gap; the margin covers that and the cells either side.
        self.margin = math.ceil(6 * weights.sigma) + 8
        self.class_weights = self._class_weights(label, seed)
        self.objects = None

    def __getstate__(self) -> dict[str, Any]:
        # Open files stay with the process that opened them; a DataLoader worker opens its own.
        state = dict(self.__dict__)
        state["_files"] = None
        state.pop("_arrays", None)
        return state

    def _open(self) -> tuple[Any, Any]:
        if self._files is None:
            self._files = ExitStack()
            views = []
            for path, channels in zip(self.paths, (self.in_channels, None), strict=True):
                array, stored = self._files.enter_context(open_stored(path, self.spatial_dims))
                stack = plan_stack(stored.axes, stored.shape, self.spatial_dims, channels or 1, path)
                if stack.batch_shape:
                    raise BiounetError("a stack of images cannot be one training pair; give one image or volume "
                                       "per file", path)
                views.append(ItemView(array, stack, (), channels, path))
            self._arrays = (views[0], views[1])
        return self._arrays

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def foreground(self) -> np.ndarray:
        """No foreground index list for a volume this size: foreground oversampling draws uniformly."""
        return np.zeros(0, np.int64)

    def patch(self, region: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image (C, *R), target (*R), weight (*R))`` of a region (mirrored beyond the image's edge)."""
        image, label = self._open()
        wide = [(a - self.margin, b + self.margin) for a, b in region]
        raw = read_mirrored(label, wide)[0]
        target, weight = self._targets(raw)
        inner = tuple(slice(self.margin, -self.margin) for _ in region)
        pixels = self.normalization.apply(read_mirrored(image, region), *self.stats)
        return pixels, target[inner], weight[inner]

    def _targets(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from biounet.data.weight_map import border_weight_map

        target, instances = self.labels.targets(raw.astype(np.int64), self.num_classes)
        ignored = target == IGNORE_INDEX
        weight = border_weight_map(np.where(ignored, 0, target), instances, w0=self.weights.w0,
                                   sigma=self.weights.sigma, class_weights=self.class_weights, ignore=ignored)
        return target, weight.astype(np.float32)

    def _class_weights(self, label: Any, seed: int) -> list[float] | None:
        """Balanced class weights (as the in-memory weight map's) from sampled blocks of the label."""
        if not self.weights.class_balance:
            return None
        rng = np.random.default_rng(seed)
        edge = _BALANCE_EDGE[self.spatial_dims]
        counts = np.zeros(self.num_classes, np.int64)
        for _ in range(_BALANCE_BLOCKS):
            start = [int(rng.integers(0, max(n - edge, 0) + 1)) for n in self.shape]
            region = [(s, min(s + edge, n)) for s, n in zip(start, self.shape, strict=True)]
            target, _ = self.labels.targets(read_mirrored(label, region)[0].astype(np.int64), self.num_classes)
            counts += np.bincount(target[target != IGNORE_INDEX].ravel(), minlength=self.num_classes)
        present = counts > 0
        weights = np.ones(self.num_classes, np.float64)
        # w_c = N / (K * n_c) over the K classes present (balanced_class_weights' definition).
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return [float(w) for w in weights]


def large_label_values(path: Path, spatial_dims: int) -> LabelValues:
    """The distinct values of a label too large to read whole, collected block by block."""
    with open_stored(path, spatial_dims) as (array, stored):
        stack = plan_stack(stored.axes, stored.shape, spatial_dims, 1, path)
        view = ItemView(array, stack, (), None, path)
        found: set[int] = set()
        rows = max(1, (64 * 1024**2) // max(1, math.prod(view.shape[2:])))
        for start in range(0, view.shape[1], rows):
            found.update(int(v) for v in np.unique(view[:, start:start + rows]))
    return LabelValues(tuple(sorted(found)), path)
