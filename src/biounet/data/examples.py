"""Training examples: image/label pairs from folders or file lists, each read into one of two kinds of example.

Both kinds answer ``patch(region)`` with the image, target and weights of a region. An :class:`Example` is
read once into memory with its targets and the paper's border weights; it costs 16 bytes per voxel (float32
image, int64 target, float32 weights), fine for ISBI, not for a 50 GB volume. A :class:`LazyExample` keeps
only the opened arrays (zarr, HDF5, TIFF): each patch reads its image region (normalised with statistics
fitted on a subsample of the whole image) and its label region with a margin, makes the targets and border
weights there, and drops the margin. Its class-balance weights come from a sample of blocks of the whole
label, so every patch is weighed alike. Its weights differ from a whole-image computation only where the
nearest cells lie beyond the margin (which exceeds the border term's reach, ``3 sigma``) or past the image's
edge.

Both read a pair and make its targets the same way, through :func:`read_pair` (or the shape check inside it)
and :func:`make_targets`. With the ``distance`` instance target (``LabelConfig.instance_target``) a patch
also has the float distance map: an :class:`Example` computes it once on the whole label, where each object
is whole (exact); a :class:`LazyExample` on the patch's region with its margin, the same for every object
that lies inside that region away from the image's edge (an object cut by the region is measured on its part
inside; one at the image's edge, on it and its mirror image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from biounet.data.labels import IGNORE_INDEX, LabelConfig, LabelValues, check_label_channels, read_label
from biounet.data.targets import ClassWeights, border_weight_map
from biounet.errors import BiounetError
from biounet.geometry import read_mirrored
from biounet.io.axes import plan_stack
from biounet.io.channels import match_channels
from biounet.io.files import file_stem, list_image_files
from biounet.io.items import ItemView
from biounet.io.readers import ImageMeta, read_image_meta
from biounet.io.stored import open_stored, probe_stored
from biounet.models.normalization import Normalization

# Pairs whose in-memory copy (16 bytes per voxel) would take this much are read patch by patch.
LAZY_FROM_BYTES = 4 * 1024**3
# A patch: image (C, *R), target (*R), weight (*R), and the distance (*R) with the distance target.
Patch = tuple[np.ndarray, ...]
# Blocks of the label sampled for a lazy example's class balance, and their edge.
_BALANCE_BLOCKS = 16
_BALANCE_EDGE = {2: 512, 3: 64}


def pair_files(images: Path | Sequence[Path], labels: Path | Sequence[Path]) -> list[tuple[Path, Path]]:
    """Image/label pairs: two folders matched by file stem, or two equally long lists in order.

    Stems are :func:`~biounet.io.files.file_stem` (``case_001.nii.gz`` pairs with ``case_001.tif``);
    ``.zarr`` stores in a folder are files, and HDF5 files must hold one dataset each.

    Args:
        images: a folder of images, or a list of image files.
        labels: a folder of labels, or a list of label files in the images' order.

    Raises:
        BiounetError: naming the file, for a missing folder, an image without a label or vice versa.
    """
    if isinstance(images, Path) != isinstance(labels, Path):
        raise BiounetError("give images and labels both as folders or both as file lists")
    if isinstance(images, Path) and isinstance(labels, Path):
        found = []
        for folder in (images, labels):
            if not folder.is_dir():
                raise BiounetError("folder not found", folder)
            files = {file_stem(p): p for p in list_image_files(folder)}
            if not files:
                raise BiounetError("folder holds no image files", folder)
            found.append(files)
        image_files, label_files = found
        for stem, path in image_files.items():
            if stem not in label_files:
                raise BiounetError(f"no label with the same name in {labels}", path)
        for stem, path in label_files.items():
            if stem not in image_files:
                raise BiounetError(f"no image with the same name in {images}", path)
        return [(image_files[s], label_files[s]) for s in sorted(image_files)]
    image_list, label_list = list(images), list(labels)  # type: ignore[arg-type]
    if len(image_list) != len(label_list):
        raise BiounetError(f"{len(image_list)} images but {len(label_list)} labels")
    return list(zip(image_list, label_list, strict=True))


def split_validation(pairs: list[tuple[Path, Path]], fraction: float,
                     seed: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Splits off ``fraction`` of the pairs (at least one) for validation, reproducibly for a seed.

    Args:
        pairs: the labelled images.
        fraction: share of them for validation.
        seed: picks which.
    """
    if len(pairs) < 2:
        raise BiounetError("need at least two labelled images to split off a validation set; "
                           "give --val-images and --val-labels")
    count = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    val = sorted(order[:count])
    return [p for i, p in enumerate(pairs) if i not in val], [pairs[i] for i in val]


@dataclass(frozen=True)
class WeightMapConfig:
    """The U-Net paper's loss weights: class balance plus ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))``.

    Args:
        w0: border weight; 0 disables the border term.
        sigma: border width in pixels.
        class_balance: weigh classes inversely to their frequency in each image.
    """

    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True


def read_pair(image_path: Path, label_path: Path, spatial_dims: int, in_channels: int | None = None, *,
              label: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, ImageMeta]:
    """Reads an image and its label and checks that their shapes agree.

    Args:
        image_path: the image file.
        label_path: its label, read by :func:`~biounet.data.labels.read_label`.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: the model's input channels, which the image's are matched to; ``None``: as stored.
        label: the label if it was read already (the fingerprint keeps labels from deciding the
            convention); it is still checked against the image.

    Returns:
        The image ``(C, *S)``, the int64 label ``(*S)`` and the image's spacing and header.

    Raises:
        BiounetError: naming the file, for unreadable files or an image and label of different shapes.
    """
    image, meta = read_image_meta(image_path, spatial_dims)
    if in_channels is not None:
        image = match_channels(image, in_channels, image_path)
    if label is None:
        label = read_label(label_path, spatial_dims)
    _check_shapes(image.shape[1:], label.shape, image_path, label_path)
    return image, label, meta


def _check_shapes(image_shape: Sequence[int], label_shape: Sequence[int], image_path: Path,
                  label_path: Path) -> None:
    """Checks that a label's spatial shape is its image's; the error names the label file."""
    image_shape, label_shape = tuple(int(n) for n in image_shape), tuple(int(n) for n in label_shape)
    if label_shape != image_shape:
        raise BiounetError(f"label shape {label_shape} does not match its image {image_shape} ({image_path})",
                           label_path)


def make_targets(label: np.ndarray, labels: LabelConfig, num_classes: int, weights: WeightMapConfig, *,
                 class_weights: Sequence[float] | None = None,
                 path: Path | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The training targets of a label (a whole image or a patch's region of one).

    Args:
        label: integer label ``(*S)``.
        labels: the label convention.
        num_classes: the model's classes.
        weights: the border weight map's settings.
        class_weights: with ``weights.class_balance``, the weight of each class; ``None``: balanced on this
            label (a patch of a large pair uses weights from its whole label instead).
        path: the label's file, named in errors.

    Returns:
        The int64 class map (``IGNORE_INDEX`` where unannotated), the float32 border weights (0 where
        unannotated) and, for instance labels, the int32 object ids (0 where unannotated; else ``None``).

    Raises:
        BiounetError: naming the file, if the label's values do not fit the convention.
    """
    target, instances = labels.targets(label, num_classes, path)
    ignored = target == IGNORE_INDEX
    balance: ClassWeights = None
    if weights.class_balance:
        balance = "balanced" if class_weights is None else class_weights
    weight = border_weight_map(np.where(ignored, 0, target), instances, w0=weights.w0, sigma=weights.sigma,
                               class_weights=balance, ignore=ignored)
    objects = np.where(ignored, 0, label).astype(np.int32) if labels.kind == "instances" else None
    return target, weight, objects


@dataclass
class Example:
    """One training or validation image, in memory, ready to sample from.

    Attributes:
        name: file stem.
        image: ``(C, *S)`` float32, normalised.
        target: ``(*S)`` int64 class map, ``IGNORE_INDEX`` where unannotated.
        weight: ``(*S)`` float32 loss weights (border weight map; 0 where unannotated).
        objects: ``(*S)`` int32 true object ids for instance labels (0 = background or unannotated), what
            validation matches predicted objects against; ``None`` for other labels.
        distance: ``(*S)`` float32 distance target (:meth:`~biounet.data.labels.LabelConfig.distance`) for a
            model that learns it; ``None`` otherwise.
        spacing: the image file's pixel (voxel) size per spatial axis (1.0 where the file does not say).
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    objects: np.ndarray | None = None
    distance: np.ndarray | None = None
    spacing: tuple[float, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)

    @property
    def size(self) -> int:
        return int(self.target.size)

    def patch(self, region: list[tuple[int, int]]) -> Patch:
        """``(image (C, *R), target (*R), weight (*R))`` of a region (mirrored beyond the image's edge), and
        its ``distance (*R)`` when the example has one."""
        patch = (read_mirrored(self.image, region), read_mirrored(self.target[None], region)[0],
                 read_mirrored(self.weight[None], region)[0])
        if self.distance is None:
            return patch
        return (*patch, read_mirrored(self.distance[None], region)[0])

    @property
    def foreground(self) -> np.ndarray:
        """Flat indices of annotated foreground pixels (for foreground oversampling)."""
        return np.flatnonzero(self.target.ravel() > 0)

    @property
    def partly_annotated(self) -> np.ndarray:
        """Flat indices of the annotated pixels of a partly annotated image (sparse labels, painted
        corrections); empty when every pixel is annotated."""
        annotated = self.target.ravel() != IGNORE_INDEX
        return np.empty(0, np.int64) if annotated.all() else np.flatnonzero(annotated)


def load_example(image_path: Path, label_path: Path, *, spatial_dims: int = 2, in_channels: int, num_classes: int,
                 normalization: Normalization, labels: LabelConfig, weights: WeightMapConfig) -> Example:
    """Reads, checks, normalises one pair and computes its weight map.

    Args:
        image_path: the image file.
        label_path: its label, read by :func:`~biounet.data.labels.read_label`.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: the model's input channels.
        num_classes: the model's classes.
        normalization: intensity normalisation of the image.
        labels: the label convention, resolved from all labels of the run (an ``auto`` one is resolved from
            this label alone).
        weights: the weight map's settings.

    Raises:
        BiounetError: naming the file, for unreadable files or mismatched shapes/values.
    """
    image, label, meta = read_pair(image_path, label_path, spatial_dims, in_channels)
    target, weight, objects = make_targets(label, labels, num_classes, weights, path=label_path)
    if (target == IGNORE_INDEX).all():
        raise BiounetError("label image has no annotated pixels", label_path)
    # On the whole label, where every object is whole: exact, and each patch then only reads it.
    distance = labels.distance(label, label_path) if learns_distance(labels) else None
    return Example(file_stem(image_path), normalization(image), target, weight, objects, distance, meta.spacing)


def unlabelled_example(image_path: Path, *, spatial_dims: int = 2, in_channels: int,
                       normalization: Normalization, distance: bool = False) -> Example:
    """An image without a label, as an example whose every pixel is unannotated (``IGNORE_INDEX``, weight
    0): it adds nothing to the supervised loss, only to a term that needs no label (distillation, see
    :mod:`biounet.training.retention`).

    Args:
        image_path: the image file.
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: the model's input channels.
        normalization: intensity normalisation of the image.
        distance: give it the (all-zero, never counted) distance target of a foreground/distance model.

    Raises:
        BiounetError: naming the file, if it cannot be read or its channels do not fit.
    """
    image, _ = read_image_meta(image_path, spatial_dims)
    image = match_channels(image, in_channels, image_path)
    shape = image.shape[1:]
    return Example(file_stem(image_path), normalization(image), np.full(shape, IGNORE_INDEX, np.int64),
                   np.zeros(shape, np.float32), None, np.zeros(shape, np.float32) if distance else None)


def learns_distance(labels: LabelConfig) -> bool:
    """Whether examples read by this convention carry the distance target.

    Args:
        labels: the run's label convention.
    """
    return labels.instance_target == "distance"


def is_large(image: Path, spatial_dims: int) -> bool:
    """Whether a pair with this image would take :data:`LAZY_FROM_BYTES` or more in memory.

    Args:
        image: the image file.
        spatial_dims: 2 or 3.
    """
    stored = probe_stored(image, spatial_dims)
    spatial = [n for n, a in zip(stored.shape, stored.axes, strict=True) if a in "ZYX?"]
    return 16 * math.prod(spatial) >= LAZY_FROM_BYTES


class LazyExample:
    """One training pair too large for memory, opened, read patch by patch (see the module docstring).

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
        check_label_channels(label.shape[0], spatial_dims, label_path)
        _check_shapes(self.shape, label.shape[1:], image_path, label_path)
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

    def patch(self, region: list[tuple[int, int]]) -> Patch:
        """``(image (C, *R), target (*R), weight (*R))`` of a region (mirrored beyond the image's edge), and
        its ``distance (*R)`` with the distance target."""
        image, label = self._open()
        wide = [(a - self.margin, b + self.margin) for a, b in region]
        raw = read_mirrored(label, wide)[0].astype(np.int64)
        target, weight, _ = make_targets(raw, self.labels, self.num_classes, self.weights,
                                         class_weights=self.class_weights, path=self.paths[1])
        inner = tuple(slice(self.margin, -self.margin) for _ in region)
        pixels = self.normalization.apply(read_mirrored(image, region), *self.stats)
        if not learns_distance(self.labels):
            return pixels, target[inner], weight[inner]
        # An object cut by the margin's edge is measured on its part inside (see the module docstring).
        return pixels, target[inner], weight[inner], self.labels.distance(raw, self.paths[1])[inner]

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
            target, _ = self.labels.targets(read_mirrored(label, region)[0].astype(np.int64), self.num_classes,
                                            self.paths[1])
            counts += np.bincount(target[target != IGNORE_INDEX].ravel(), minlength=self.num_classes)
        present = counts > 0
        weights = np.ones(self.num_classes, np.float64)
        # w_c = N / (K * n_c) over the K classes present (balanced_class_weights' definition).
        weights[present] = counts.sum() / (present.sum() * counts[present])
        return [float(w) for w in weights]


def large_label_values(path: Path, spatial_dims: int) -> LabelValues:
    """The distinct values of a label too large to read whole, collected block by block.

    Args:
        path: the label file.
        spatial_dims: 2 or 3.
    """
    with open_stored(path, spatial_dims) as (array, stored):
        stack = plan_stack(stored.axes, stored.shape, spatial_dims, 1, path)
        view = ItemView(array, stack, (), None, path)
        found: set[int] = set()
        rows = max(1, (64 * 1024**2) // max(1, math.prod(view.shape[2:])))
        for start in range(0, view.shape[1], rows):
            found.update(int(v) for v in np.unique(view[:, start:start + rows]))
    return LabelValues(tuple(sorted(found)), path)
