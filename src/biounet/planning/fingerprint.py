"""A dataset's fingerprint: what a training planner needs to know about the data, measured in one pass.

As nnU-Net's fingerprint (shapes, spacing, intensities), plus what matters in microscopy: whether the
channels carry colour, how thin each class is (membranes and vessels vs. blobs), how large the objects are
and how often they lie close together, which is what the U-Net's border weights are for. Everything is
measured on what training sees: the image channels as the model gets them (RGB that is grey becomes one
channel) and the class map and cells of :meth:`LabelConfig.targets`, unannotated pixels left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize
from tqdm import tqdm

from biounet.data.examples import read_pair
from biounet.data.labels import IGNORE_INDEX, LabelConfig, LabelValues, label_values, read_label
from biounet.errors import BiounetError
from biounet.io.channels import match_channels
from biounet.io.readers import guess_spatial_dims
from biounet.models.object_size import diameters_of

NEAR_GAP = 3
"""Objects separated by at most this many background pixels count as near each other."""
SAMPLES = 2**23
"""Intensity values kept per channel over all images for the percentiles (at most 2**20 per image)."""
LABEL_CACHE_BYTES = 2**29
"""Labels kept in memory between deciding the convention and measuring them, so each is read once."""
GREY_SHARE = 0.999
"""Share of pixels whose R, G and B may differ by at most one grey level in RGB that is grey."""
TINY = 32
"""Images shorter than this along an axis are noted."""


@dataclass(frozen=True)
class ChannelStats:
    """Intensity statistics of one channel over all images (from a regular subsample if huge).

    Attributes:
        p0_5, p1, p50, p99, p99_5: percentiles.
        mean, std: mean and standard deviation.
        foreground_mean: mean over the pixels of foreground classes (nonzero, annotated); nan if none.
        background_mean: mean over class-0 pixels; nan if none.
    """

    p0_5: float
    p1: float
    p50: float
    p99: float
    p99_5: float
    mean: float
    std: float
    foreground_mean: float
    background_mean: float


@dataclass(frozen=True)
class ClassStats:
    """One class of the resolved label convention (class index = position).

    Attributes:
        frequency: share of the annotated pixels of all images.
        skeleton_ratio: skeleton pixels / class pixels (2D or 3D skeleton), 0 if the class is absent:
            about 1 for one-pixel-thin lines (membranes, vessels), small for blobs.
        thickness: median over images of the class's width along its skeleton, ``2 * mean distance - 1``
            pixels (a pixel beside the background is at distance 1, so a 1-px line is 1 wide); 0 if absent.
    """

    frequency: float
    skeleton_ratio: float
    thickness: float


@dataclass(frozen=True)
class ObjectStats:
    """The foreground's objects: instance ids for instance labels, else connected components of each
    nonzero class (4-connectivity in 2D, 6 in 3D).

    Attributes:
        per_image: median object count per image.
        diameter: median equivalent diameter in pixels over all objects (2D: ``2 sqrt(area / pi)``,
            3D: ``(6 V / pi)^(1/3)``).
        diameter_p10, diameter_p90: its 10th and 90th percentiles.
        near_fraction: share of objects that touch another or are separated from one by at most
            ``NEAR_GAP`` background pixels (instance maps: as drawn, touching ids included).
    """

    per_image: float
    diameter: float
    diameter_p10: float
    diameter_p90: float
    near_fraction: float


@dataclass(frozen=True)
class Fingerprint:
    """What a training planner needs to know about a dataset (see :func:`fingerprint`).

    Attributes:
        count: training pairs.
        spatial_dims: 2 or 3.
        shapes: spatial shape of each image, in file order.
        stored_channels: channels as stored by the first image (3 for RGB, 4 for RGBA).
        channels: channels that carry information: 1 for grey and RGB(A) that is grey, 3 for colour RGB(A).
        channel_kind: ``grey``, ``rgb``, ``grey-as-rgb`` or ``multichannel`` (2 or more than 4 channels).
        dtype: the first image's numpy dtype.
        intensity: per informative channel.
        spacing: median pixel/voxel size per spatial axis, in array order (1.0 where the files do not say).
        labels: the resolved label convention.
        num_classes: 2 for binary and instance labels, the largest class + 1 for class maps.
        classes: per class index.
        objects: ``None`` when there is no foreground object.
        notes: anything odd, one line each.
    """

    count: int
    spatial_dims: int
    shapes: tuple[tuple[int, ...], ...]
    stored_channels: int
    channels: int
    channel_kind: str
    dtype: str
    intensity: tuple[ChannelStats, ...]
    spacing: tuple[float, ...]
    labels: LabelConfig
    num_classes: int
    classes: tuple[ClassStats, ...]
    objects: ObjectStats | None
    notes: tuple[str, ...] = ()

    @property
    def median_shape(self) -> tuple[int, ...]:
        return tuple(round(float(v)) for v in np.median(np.array(self.shapes), axis=0))

    @property
    def min_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in np.min(np.array(self.shapes), axis=0))

    @property
    def max_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in np.max(np.array(self.shapes), axis=0))

    @property
    def anisotropy(self) -> float:
        """Largest over smallest spacing (1.0 for square pixels and unknown spacing)."""
        return max(self.spacing) / min(self.spacing)

    @property
    def foreground_fraction(self) -> float:
        return 1.0 - self.classes[0].frequency

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain YAML-safe types: lists for tuples, floats to 4 significant digits."""
        return _plain(self)

    def report(self) -> str:
        """The fingerprint as a few readable lines, for ``biounet plan``."""
        size = "x".join
        shape = (f"{self.count} training pairs, {self.spatial_dims}D, shape {size(map(str, self.median_shape))} "
                 f"(min {size(map(str, self.min_shape))}, max {size(map(str, self.max_shape))}), "
                 f"spacing {' x '.join(_num(s) for s in self.spacing)}")
        kind = {"grey": "grey", "rgb": "RGB", "grey-as-rgb": "RGB that is grey"}.get(self.channel_kind,
                                                                                   self.channel_kind)

        def each(name: str) -> str:
            return "/".join(_num(getattr(c, name)) for c in self.intensity)

        channels = (f"channels: {kind} ({self.stored_channels} stored, {self.channels} used), {self.dtype}; "
                    f"intensity p1 {each('p1')}, p50 {each('p50')}, p99 {each('p99')} "
                    f"(foreground {each('foreground_mean')}, background {each('background_mean')})")
        names = ["background", "foreground"] if self.labels.kind != "classes" else \
            [f"class {k}" for k in range(self.num_classes)]
        classes = ", ".join(f"{name} {100 * c.frequency:.1f} % (skeleton {c.skeleton_ratio:.2f}"
                            + (f", width {_num(c.thickness)} px)" if c.thickness else ")")
                            for name, c in zip(names, self.classes, strict=True))
        o = self.objects
        objects = "objects: none" if o is None else \
            (f"objects: {_num(o.per_image)} per image, diameter {_num(o.diameter)} px (p10 {_num(o.diameter_p10)}, "
             f"p90 {_num(o.diameter_p90)}), {100 * o.near_fraction:.0f} % within {NEAR_GAP} px of another")
        lines = [shape, channels, f"labels: {self.labels.describe()}; classes: {classes}", objects]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def fingerprint(pairs: Sequence[tuple[Path, Path]], spatial_dims: int | None = None,
                labels: LabelConfig | None = None, progress: bool = False) -> Fingerprint:
    """Measures a training set.

    The label convention is decided from all labels first, as training does; labels are kept in memory
    (up to ``LABEL_CACHE_BYTES``) until the images are read, so each file is normally read once.

    Args:
        pairs: (image, label) files, as :func:`biounet.data.examples.pair_files` returns them.
        spatial_dims: 2 or 3; ``None``: guessed from the first label file.
        labels: the label convention; ``None``: ``LabelConfig()``, detected from the labels.
        progress: show progress bars.

    Raises:
        BiounetError: naming the file, for unreadable files, an image and label of different shapes and
            labels that do not fit the convention.
    """
    if not pairs:
        raise BiounetError("no training pairs to fingerprint")
    dims = spatial_dims if spatial_dims is not None else guess_spatial_dims(pairs[0][1])
    config, num_classes, kept = _resolve(pairs, dims, labels or LabelConfig(), progress)
    tally = _Tally(num_classes, per_image=min(2**20, max(2**12, SAMPLES // len(pairs))))
    for i, (image_path, label_path) in enumerate(tqdm(pairs, desc="fingerprint", unit="img",
                                                      disable=not progress, leave=False)):
        small, kept[i] = kept[i], None
        image, label, meta = read_pair(image_path, label_path, dims,
                                       label=None if small is None else small.astype(np.int64))
        classes, cells = config.targets(label, num_classes, label_path)
        # Instance labels count their objects as drawn: touching cells are what near_fraction is about.
        ids = np.where(classes == IGNORE_INDEX, 0, label) if config.kind == "instances" else cells
        tally.add(image, meta.spacing, image_path, classes, ids)
    return tally.result(dims, config)


def _resolve(pairs: Sequence[tuple[Path, Path]], dims: int, config: LabelConfig,
             progress: bool) -> tuple[LabelConfig, int, list[np.ndarray | None]]:
    """The convention of all labels, the class count, and the labels that fit the memory budget."""
    found: list[LabelValues] = []
    kept: list[np.ndarray | None] = []
    budget = LABEL_CACHE_BYTES
    for _, path in tqdm(pairs, desc="labels", unit="img", disable=not progress, leave=False):
        label = read_label(path, dims)
        found.append(label_values(label, path))
        # Kept in the smallest type that holds its values: most labels fit 8 or 16 bits.
        values = found[-1].values or (0,)
        lowest, highest = values[0], values[-1]
        small = label.astype(np.result_type(np.min_scalar_type(lowest), np.min_scalar_type(highest)))
        fits = small.nbytes <= budget
        kept.append(small if fits else None)
        budget -= small.nbytes if fits else 0
    resolved = config.resolve(found)
    num_classes = 2
    if resolved.kind == "classes":
        num_classes = max(2, 1 + max(v for s in found for v in s.values if v != resolved.ignore))
    return resolved, num_classes, kept


@dataclass
class _Tally:
    """Per-image measurements, accumulated; each image is dropped once measured."""

    num_classes: int
    per_image: int
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    grey: list[bool] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)
    # Per image, in stored channels: a regular sample, and the foreground/background sums and counts. They
    # are mapped to the informative channels at the end (a linear map), once all images are known.
    samples: list[np.ndarray] = field(default_factory=list)
    sums: list[tuple[np.ndarray, int, np.ndarray, int]] = field(default_factory=list)
    pixels: np.ndarray = field(init=False)
    skeleton: np.ndarray = field(init=False)
    widths: list[list[float]] = field(init=False)
    diameters: list[np.ndarray] = field(default_factory=list)
    objects: list[int] = field(default_factory=list)
    near: int = 0
    unannotated: int = 0

    def __post_init__(self) -> None:
        self.pixels = np.zeros(self.num_classes, np.int64)
        self.skeleton = np.zeros(self.num_classes, np.int64)
        self.widths = [[] for _ in range(self.num_classes)]

    def add(self, image: np.ndarray, spacing: tuple[float, ...], path: Path, classes: np.ndarray,
            ids: np.ndarray) -> None:
        self.shapes.append(tuple(int(s) for s in image.shape[1:]))
        self.spacings.append(spacing)
        self.dtypes.append(str(image.dtype))
        self.stored.append(image.shape[0])
        self.grey.append(_is_grey(image))
        self.paths.append(path)
        flat, labelled = image.reshape(image.shape[0], -1), classes.ravel()
        self.samples.append(flat[:, ::math.ceil(flat.shape[1] / self.per_image)].copy())
        fg, bg = labelled > 0, labelled == 0
        self.sums.append((flat[:, fg].sum(1, dtype=np.float64), int(fg.sum()),
                          flat[:, bg].sum(1, dtype=np.float64), int(bg.sum())))
        self.unannotated += not (fg.any() or bg.any())
        self.pixels += np.bincount(labelled[labelled >= 0], minlength=self.num_classes)
        for k in range(self.num_classes):
            mask = classes == k
            if mask.any():
                count, width = _skeleton(mask)
                self.skeleton[k] += count
                self.widths[k].append(width)
        areas = np.unique(ids[ids > 0], return_counts=True)[1]
        self.objects.append(areas.size)
        if areas.size:
            self.diameters.append(diameters_of(areas, ids.ndim))
            self.near += _near_count(ids)

    def result(self, dims: int, labels: LabelConfig) -> Fingerprint:
        notes = []
        if any(c == 2 or c > 4 for c in self.stored):
            kind, channels = "multichannel", self.stored[0]
        elif any(c > 1 and not g for c, g in zip(self.stored, self.grey, strict=True)):
            kind, channels = "rgb", 3
            if any(c > 1 and g for c, g in zip(self.stored, self.grey, strict=True)):
                notes.append(f"{sum(c > 1 and not g for c, g in zip(self.stored, self.grey, strict=True))} of "
                             f"{len(self.stored)} images are colour, the others grey")
        else:
            kind, channels = ("grey-as-rgb" if max(self.stored) > 1 else "grey"), 1
        notes += [f"mixed {what}: {_counts(values)}" for what, values in
                  (("image dtypes", self.dtypes), ("channel counts", self.stored)) if len(set(values)) > 1]
        tiny = [s for s in self.shapes if min(s) < TINY]
        if tiny:
            notes.append(f"{len(tiny)} images are smaller than {TINY} px along an axis (smallest "
                         f"{'x'.join(map(str, min(tiny, key=math.prod)))})")
        if len(set(self.spacings)) > 1:
            notes.append("spacing differs between images")
        if self.unannotated:
            notes.append(f"{self.unannotated} labels have no annotated pixel")
        empty = sum(1 for s in self.sums if s[1] == 0)
        if empty:
            notes.append(f"{empty} of {len(self.sums)} labels have no foreground pixel")
        total = max(int(self.pixels.sum()), 1)
        classes = tuple(ClassStats(float(n / total), float(s / n) if n else 0.0,
                                   float(np.median(w)) if w else 0.0)
                        for n, s, w in zip(self.pixels, self.skeleton, self.widths, strict=True))
        return Fingerprint(len(self.shapes), dims, tuple(self.shapes), self.stored[0], channels, kind,
                           self.dtypes[0], self._intensity(channels), tuple(
                               float(v) for v in np.median(np.array(self.spacings), axis=0)),
                           labels, self.num_classes, classes, self._objects(), tuple(notes))

    def _intensity(self, channels: int) -> tuple[ChannelStats, ...]:
        """Per informative channel, each image's channels mapped as training maps them."""
        pooled = np.concatenate([match_channels(s, channels, p).astype(np.float32)
                                 for s, p in zip(self.samples, self.paths, strict=True)], axis=1)
        # Means are linear, so the sums map like the pixels: (channels, 2) foreground and background sums.
        sums = np.zeros((channels, 2))
        for (fg, _, bg, _), path in zip(self.sums, self.paths, strict=True):
            sums += match_channels(np.stack([fg, bg], 1), channels, path)
        counts = [sum(s[1] for s in self.sums), sum(s[3] for s in self.sums)]
        means = sums / np.maximum(counts, 1)
        stats = []
        for c, values in enumerate(pooled):
            p0_5, p1, p50, p99, p99_5 = (float(v) for v in np.percentile(values, [0.5, 1, 50, 99, 99.5]))
            stats.append(ChannelStats(p0_5, p1, p50, p99, p99_5, float(values.mean(dtype=np.float64)),
                                      float(values.std(dtype=np.float64)),
                                      float(means[c, 0]) if counts[0] else math.nan,
                                      float(means[c, 1]) if counts[1] else math.nan))
        return tuple(stats)

    def _objects(self) -> ObjectStats | None:
        if not self.diameters:
            return None
        diameters = np.concatenate(self.diameters)
        p10, p50, p90 = (float(v) for v in np.percentile(diameters, [10, 50, 90]))
        return ObjectStats(float(np.median(self.objects)), p50, p10, p90, self.near / diameters.size)


def _is_grey(image: np.ndarray) -> bool:
    """Whether an image is grey: one channel, or RGB(A) whose colours differ by at most one grey level."""
    if image.shape[0] not in (3, 4):
        return image.shape[0] == 1
    rgb = image[:3]
    tolerance = 1.0 if rgb.dtype.kind in "biu" else (float(rgb.max()) - float(rgb.min())) / 255
    spread = rgb.max(axis=0) - rgb.min(axis=0)  # never negative, so unsigned types cannot wrap
    return float(np.mean(spread <= tolerance)) >= GREY_SHARE


def _skeleton(mask: np.ndarray) -> tuple[int, float]:
    """The skeleton pixels of a class mask and the class's width along them (nan without a skeleton)."""
    skeleton = skeletonize(mask)  # type: ignore[no-untyped-call]
    count = int(skeleton.sum())
    if not count:
        return 0, math.nan
    return count, 2 * float(ndimage.distance_transform_edt(mask)[skeleton].mean()) - 1


def _near_count(ids: np.ndarray) -> int:
    """How many objects of an id map touch another or lie within ``NEAR_GAP`` background pixels of one.

    Every pixel goes to its nearest object (one distance transform); where two neighbouring pixels go to
    different objects, the gap between those objects there is the sum of their distances, so the pair is near
    if that sum is at most ``NEAR_GAP`` (touching objects: 0).
    """
    distance, nearest = ndimage.distance_transform_edt(ids == 0, return_indices=True)
    owner = ids[tuple(nearest)]
    near = []
    for axis in range(ids.ndim):
        a = tuple(slice(None, -1) if i == axis else slice(None) for i in range(ids.ndim))
        b = tuple(slice(1, None) if i == axis else slice(None) for i in range(ids.ndim))
        close = (owner[a] != owner[b]) & (distance[a] + distance[b] <= NEAR_GAP)
        near += [owner[a][close], owner[b][close]]
    return int(np.unique(np.concatenate(near)).size)


def _counts(values: list[Any]) -> str:
    return ", ".join(f"{v} ({n})" for v, n in Counter(values).most_common())


def _num(x: float) -> str:
    """A number for the report: whole above 100, else 3 significant digits."""
    if math.isnan(x):
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 or x == int(x) else f"{x:.3g}"


def _plain(x: Any) -> Any:
    if isinstance(x, LabelConfig):
        return x.to_dict()
    if is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in fields(x)}
    if isinstance(x, tuple | list):
        return [_plain(v) for v in x]
    if isinstance(x, float):
        return float(f"{x:.4g}")
    return x
