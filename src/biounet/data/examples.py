"""Training examples: image/label pairs from folders or file lists, loaded once with their weight maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from biounet.data.labels import IGNORE_INDEX, LabelConfig, read_label
from biounet.errors import BiounetError
from biounet.geometry import read_mirrored
from biounet.io.channels import match_channels
from biounet.io.files import file_stem, list_image_files
from biounet.io.readers import read_image
from biounet.models.normalization import Normalization


@dataclass
class Example:
    """One training or validation image, ready to sample from.

    Attributes:
        name: file stem.
        image: ``(C, *S)`` float32, normalised.
        target: ``(*S)`` int64 class map, ``IGNORE_INDEX`` where unannotated.
        weight: ``(*S)`` float32 loss weights (border weight map; 0 where unannotated).
        objects: ``(*S)`` int32 true object ids for instance labels (0 = background or unannotated), what
            validation matches predicted objects against; ``None`` for other labels.
    """

    name: str
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    objects: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)

    @property
    def size(self) -> int:
        return int(self.target.size)

    def patch(self, region: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image (C, *R), target (*R), weight (*R))`` of a region (mirrored beyond the image's edge)."""
        return (read_mirrored(self.image, region), read_mirrored(self.target[None], region)[0],
                read_mirrored(self.weight[None], region)[0])

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


def pair_files(images: Path | Sequence[Path], labels: Path | Sequence[Path]) -> list[tuple[Path, Path]]:
    """Image/label pairs: two folders matched by file stem, or two equally long lists in order.

    Stems are :func:`~biounet.io.files.file_stem` (``case_001.nii.gz`` pairs with ``case_001.tif``);
    ``.zarr`` stores in a folder are files, and HDF5 files must hold one dataset each.

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
    """Splits off ``fraction`` of the pairs (at least one) for validation, reproducibly for a seed."""
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
    from biounet.data.weight_map import border_weight_map

    image = match_channels(read_image(image_path, spatial_dims), in_channels, image_path)
    label = read_label(label_path, spatial_dims)
    if label.shape != image.shape[1:]:
        raise BiounetError(f"label shape {label.shape} does not match its image {image.shape[1:]} "
                           f"({image_path})", label_path)
    try:
        target, instances = labels.targets(label, num_classes)
    except BiounetError as exc:
        raise BiounetError(str(exc), label_path) from exc
    ignored = target == IGNORE_INDEX
    if ignored.all():
        raise BiounetError("label image has no annotated pixels", label_path)
    weight = border_weight_map(np.where(ignored, 0, target), instances, w0=weights.w0, sigma=weights.sigma,
                               class_weights="balanced" if weights.class_balance else None, ignore=ignored)
    objects = np.where(ignored, 0, label).astype(np.int32) if labels.kind == "instances" else None
    return Example(file_stem(image_path), normalization(image), target, weight.astype(np.float32), objects)
