"""Label conventions: how a label image on disk becomes training targets or an evaluation truth.

A label image is read once by :func:`read_label` (one channel, whole numbers, as int64). Its convention
(binary mask, class map or instance map) is given by :class:`LabelConfig`, or detected from all the labels
of a run together by :meth:`LabelConfig.resolve`; training (``biounet.data.examples``) and
``biounet evaluate`` both go through these functions.

Targets are a class map (int64, ``IGNORE_INDEX`` where unannotated) and, for weight maps, an instance map
of the cells (0 = background).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from biounet.configs import from_dict
from biounet.data.targets import (
    INSTANCE_TARGETS,
    InstanceTarget,
    boundary_classes,
    distance_target,
    instances_from_classes,
    separate_touching,
)
from biounet.errors import BiounetError
from biounet.io.readers import ImageMeta, read_image_meta

IGNORE_INDEX = -1
Kind = Literal["auto", "classes", "binary", "instances"]
KINDS = ("auto", "classes", "binary", "instances")
# Without a class count, a label set with more consecutive values than this is taken for instance ids.
AUTO_MAX_CLASSES = 8
# Class indices are below this: a class map is a U-Net's output channels, and every class costs a channel,
# per-class statistics and a column of the confusion matrix; a value beyond it is an object id or damage.
MAX_CLASSES = 1024


def read_label_meta(path: str | Path, spatial_dims: int = 2) -> tuple[np.ndarray, ImageMeta]:
    """Reads a label image or volume as int64 ``(*S)``, with the file's spacing and header.

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: 2 for images, 3 for volumes.

    Raises:
        BiounetError: naming the file, if it is unreadable, has more than one channel or holds fractions.
    """
    label, meta = read_image_meta(path, spatial_dims)
    check_label_channels(label.shape[0], spatial_dims, path)
    label = label[0]
    # Some datasets store labels as float32; whole numbers are fine, fractions are not labels.
    if label.dtype.kind == "f" and not np.array_equal(label, np.round(label)):
        raise BiounetError("a label image must hold whole numbers, this one has fractions", path)
    if label.dtype == np.uint64 and label.size and label.max() > np.iinfo(np.int64).max:
        raise BiounetError("label values do not fit 64-bit signed integers", path)
    # Whole floats beyond 2**63 have no int64 value: the cast below would make them garbage.
    if label.dtype.kind == "f" and label.size and float(np.abs(label).max()) >= 2.0**63:
        raise BiounetError("label values do not fit 64-bit signed integers", path)
    return label.astype(np.int64), meta


def check_label_channels(channels: int, spatial_dims: int, path: str | Path) -> None:
    """Checks that a label has one channel (an RGB label, or a volume read as a stack of 2D images, has not).

    Args:
        channels: the label's channels as read.
        spatial_dims: 2 for images, 3 for volumes.
        path: the file, named in the error.
    """
    if channels != 1:
        hint = " (for a volume, read it with 3 spatial dimensions)" if spatial_dims == 2 else ""
        raise BiounetError(f"a label image must have one channel, this one has {channels}{hint}", path)


def read_label(path: str | Path, spatial_dims: int = 2) -> np.ndarray:
    """Reads a label image or volume as int64 ``(*S)`` (see :func:`read_label_meta`).

    Args:
        path: the file, or an HDF5/zarr spec.
        spatial_dims: 2 for images, 3 for volumes.

    Raises:
        BiounetError: naming the file, if it is unreadable, has more than one channel or holds fractions.
    """
    return read_label_meta(path, spatial_dims)[0]


@dataclass(frozen=True)
class LabelValues:
    """The distinct values of one label image: all that deciding and checking its convention needs.

    Attributes:
        values: sorted distinct values, the ignore value included if present.
        path: the file, for error messages.
    """

    values: tuple[int, ...]
    path: Path | None = None


def label_values(label: np.ndarray, path: str | Path | None = None) -> LabelValues:
    """The distinct values of a label image.

    Args:
        label: an integer or bool label image.
        path: its file, named in errors.
    """
    return LabelValues(tuple(int(v) for v in np.unique(label)), None if path is None else Path(path))


@dataclass(frozen=True)
class LabelConfig:
    """How to read label images.

    Args:
        kind: ``binary``: 0 is background and one value (``foreground``) is the object, class 1; 0/1,
            0/255, 0/65535 and bool masks are all binary. With an explicit ``foreground`` every other value
            is background (one structure picked out of a multi-valued label). ``classes``: pixel values are
            class indices 0..K-1. ``instances``: 0 is background, every other value is one object; touching objects are
            separated by a line of background, and the classes are background/object. ``auto`` (default):
            decided from all the labels together by :meth:`resolve`, whose docstring gives the rule.
        foreground: the foreground value of ``binary`` labels; ``None``: the one nonzero value of all the
            labels (a label with two nonzero values is then an error).
        ignore: a label value meaning "not annotated"; those pixels weigh 0 in every loss and metric. It
            is "unknown", never background: cells and borders are found as if each unannotated pixel had
            the value of the nearest annotated one.
        instance_target: what instance labels are learnt as. ``boundary``: classes, background / interior
            / boundary for a three-class model (background / object, touching objects separated, for two).
            ``distance``: the foreground (touching objects not separated) and each object pixel's normalised
            distance to its boundary (:func:`~biounet.data.targets.distance_target`), for a model with
            ``output: distance``; a training config with it makes its model so (see
            :class:`~biounet.training.config.TrainConfig`). Other label kinds ignore it.
    """

    kind: Kind = "auto"
    foreground: int | None = None
    ignore: int | None = None
    instance_target: InstanceTarget = "boundary"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BiounetError(f"invalid label kind {self.kind!r}: use auto, binary, classes or instances")
        for name in ("foreground", "ignore"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise BiounetError(f"labels.{name} must be a whole number or null, got {value!r}")
        if self.foreground == 0:
            raise BiounetError("labels.foreground must not be 0: in binary labels 0 is the background")
        if self.foreground is not None and self.foreground == self.ignore:
            raise BiounetError(f"labels.foreground and labels.ignore are both {self.ignore}")
        if self.instance_target not in INSTANCE_TARGETS:
            raise BiounetError(f"invalid labels.instance_target {self.instance_target!r}: use boundary or distance")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelConfig:
        return from_dict(cls, data, "labels config")

    def to_dict(self) -> dict[str, Any]:
        """Plain values; ``instance_target`` only when it is not the default, since only training reads it
        (an evaluation's truth or a fingerprint's labels have none to speak of)."""
        data = asdict(self)
        if data["instance_target"] == "boundary":
            del data["instance_target"]
        return data

    @property
    def resolved(self) -> bool:
        """Whether the convention is fully known (no detection left to do)."""
        return self.kind != "auto" and not (self.kind == "binary" and self.foreground is None)

    def describe(self) -> str:
        """The convention in words, for the log: e.g. ``binary labels (0 = background, 255 = foreground)``."""
        if self.kind == "binary":
            text = f"binary labels (0 = background, {'nonzero' if self.foreground is None else self.foreground} " \
                   "= foreground)"
        elif self.kind == "classes":
            text = "class labels (values are class indices)"
        elif self.kind == "instances":
            text = "instance labels (0 = background, other values are objects)"
        else:
            text = "labels of a kind to detect (auto)"
        return text if self.ignore is None else f"{text}, {self.ignore} = unannotated"

    def resolve(self, labels: Sequence[LabelValues | np.ndarray], num_classes: int | None = None, *,
                require_foreground: bool = True) -> LabelConfig:
        """The convention of a set of labels (all of a run's training labels, or all truths of an evaluation),
        with ``kind`` and ``foreground`` filled in, after checking that every label fits it.

        ``auto`` with a ``foreground`` is ``binary``. Otherwise it looks at V, the values of all labels
        together without the ignore value, and N, those other than 0, in this order:

        1. ``num_classes`` > 2 and every value in 0..num_classes-1: ``classes`` (a class may be absent).
        2. at most one value in N: ``binary`` with that value as foreground (0/1, 0/255, 0/65535, bool).
        3. ``num_classes`` given (so some value is >= num_classes): ``instances``.
        4. no class count: ``classes`` if V is 0..K-1 without gaps and K <= ``AUTO_MAX_CLASSES``, else
           ``instances``.

        Args:
            labels: the labels' :class:`LabelValues`, or the label arrays themselves.
            num_classes: the model's (or the prediction's) classes; ``None`` if unknown.
            require_foreground: refuse a label set in which no pixel is foreground (training learns
                nothing from it).

        Raises:
            BiounetError: naming the file and the values seen, for a label that does not fit the kind, and
                for a set without any foreground pixel.
        """
        summaries = [x if isinstance(x, LabelValues) else label_values(x) for x in labels]
        seen = sorted({v for s in summaries for v in self._annotated(s)})
        kind = self.kind if self.kind != "auto" else "binary" if self.foreground is not None else \
            _detect(seen, num_classes)
        foreground = self.foreground
        if kind == "binary" and foreground is None:
            foreground = _single_foreground(summaries, self)
        resolved = replace(self, kind=kind, foreground=foreground)
        for summary in summaries:
            resolved.check(summary, num_classes)
        if require_foreground and not any(resolved._has_foreground(s) for s in summaries):
            # One file is named as itself; a set of them by their folder.
            paths = {s.path for s in summaries}
            where = next(iter(paths)) if len(paths) == 1 else \
                (summaries[0].path.parent if summaries[0].path is not None else None)
            count = "the training label" if len(summaries) == 1 else f"any of the {len(summaries)} training labels"
            raise BiounetError(f"no foreground pixel in {count} (values seen: {format_values(seen)}; read as "
                               f"{resolved.describe()})", where)
        return resolved

    def check(self, summary: LabelValues, num_classes: int | None = None) -> None:
        """Checks that one label's values fit this convention.

        Args:
            summary: the label's values and file.
            num_classes: the model's classes, which bound class indices; ``None`` if unknown.

        Raises:
            BiounetError: naming the file and its values, if they do not fit.
        """
        values = self._annotated(summary)
        if self.kind == "binary":
            # An explicit foreground picks one value out of any label; without one, the label must be a mask.
            if self.foreground is None and len([v for v in values if v != 0]) > 1:
                raise BiounetError(f"label values {format_values(values)} do not fit {self.describe()}: a mask "
                                   "has one nonzero value; set labels.foreground, labels.ignore or labels.kind",
                                   summary.path)
        elif values and values[0] < 0:
            raise BiounetError(f"label values {format_values(values)} include negative ones, which are neither "
                               f"{self.kind} nor the ignore value (set labels.ignore)", summary.path)
        elif self.kind == "classes" and values and values[-1] >= MAX_CLASSES:
            raise BiounetError(f"label value {values[-1]} is not a class index (at most {MAX_CLASSES - 1}; object ids "
                               "are labels.kind instances)", summary.path)
        elif self.kind == "classes" and num_classes is not None and values and values[-1] >= num_classes:
            found = [v for v in values if v >= num_classes]
            raise BiounetError(f"label values {format_values(found)} are not classes 0..{num_classes - 1} (values "
                               f"seen: {format_values(values)}; set labels.kind or labels.ignore)", summary.path)

    def targets(self, label: np.ndarray, num_classes: int,
                path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(classes, instances)`` training targets for a label image of spatial shape ``S``.

        Instance labels give background/object classes with touching objects separated by background for a
        two-class model, and background/interior/boundary classes
        (:func:`~biounet.data.targets.boundary_classes`) for a three-class one. With the ``distance``
        instance target they give background/object classes with touching objects left touching (the
        distance, :meth:`distance`, tells them apart), and the objects as they are.

        Cells are found on the label with every ignored pixel given the value of the nearest annotated
        one, so an unannotated stripe across a cell neither splits it nor draws a border; ignored pixels
        are then class ``IGNORE_INDEX`` and instance 0. An ``auto`` config is resolved from this label
        alone (training resolves it from all labels first).

        Args:
            label: integer label image, as :func:`read_label` returns it.
            num_classes: the model's classes.
            path: the label's file, named in errors.

        Raises:
            BiounetError: if the label's values do not fit the convention.
        """
        config = self._for(label, num_classes, path)
        ignored = self._ignored(label)
        filled = _fill_ignored(label, ignored)
        if config.kind == "instances" and config.instance_target == "distance":
            instances = filled.copy()
            classes = (filled > 0).astype(np.int64)
        elif config.kind == "instances" and num_classes == 3:
            instances = filled.copy()
            classes = boundary_classes(filled)
        elif config.kind == "instances":
            instances = separate_touching(filled)
            classes = (instances > 0).astype(np.int64)
        else:
            classes = config._classes(filled)
            instances = instances_from_classes(classes)
        instances[ignored] = 0
        return np.where(ignored, IGNORE_INDEX, classes), instances

    def distance(self, label: np.ndarray, path: str | Path | None = None) -> np.ndarray:
        """The distance target of an instance label (:func:`~biounet.data.targets.distance_target`).

        Objects are measured on the label with every ignored pixel given the value of the nearest annotated
        one, as :meth:`targets` finds cells, so an unannotated stripe is no boundary; ignored pixels are 0.

        Args:
            label: integer label image, as :func:`read_label` returns it.
            path: the label's file, named in errors.

        Returns:
            float32 map of the label's shape, in [0, 1].

        Raises:
            BiounetError: if the label is not an instance label (the distance is that of objects).
        """
        config = self._for(label, None, path)
        if config.kind != "instances":
            raise BiounetError(f"the distance target needs instance labels, this one is read as {config.describe()}",
                               path)
        ignored = self._ignored(label)
        distance = distance_target(_fill_ignored(label, ignored))
        distance[ignored] = 0.0
        return distance

    def truth(self, label: np.ndarray, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(classes, instance ids)`` of a label image as an evaluation truth.

        Unlike :meth:`targets`, touching instances are not separated: the truth is scored as drawn.

        Args:
            label: integer label image, as :func:`read_label` returns it.
            num_classes: the prediction's classes, bounding class indices; ``None`` if unknown.

        Returns:
            The class map (``IGNORE_INDEX`` where unannotated) and, for instance labels, the ids with
            ignored pixels set to 0 (else ``None``).

        Raises:
            BiounetError: if the label's values do not fit the convention.
        """
        config = self._for(label, num_classes)
        ignored = self._ignored(label)
        classes = np.where(ignored, IGNORE_INDEX, config._classes(label))
        ids = np.where(ignored, 0, label) if config.kind == "instances" else None
        return classes, ids

    def _for(self, label: np.ndarray, num_classes: int | None, path: str | Path | None = None) -> LabelConfig:
        """This config, resolved from ``label`` alone if needed, checked against ``label`` (errors name ``path``)."""
        values = label_values(label, path)
        if not self.resolved:
            return self.resolve([values], num_classes, require_foreground=False)
        self.check(values, num_classes)
        return self

    def _classes(self, label: np.ndarray) -> np.ndarray:
        """Class ids of the values of a resolved, checked label (ignored pixels come out arbitrary)."""
        if self.kind == "binary":
            foreground = label == self.foreground if self.foreground is not None else label != 0
            return foreground.astype(np.int64)
        if self.kind == "instances":
            return (label > 0).astype(np.int64)
        return label.astype(np.int64)

    def _ignored(self, label: np.ndarray) -> np.ndarray:
        return label == self.ignore if self.ignore is not None else np.zeros(label.shape, bool)

    def _annotated(self, summary: LabelValues) -> list[int]:
        return [v for v in summary.values if v != self.ignore]

    def _has_foreground(self, summary: LabelValues) -> bool:
        values = self._annotated(summary)
        if self.kind == "binary" and self.foreground is not None:
            return self.foreground in values
        return any(v > 0 for v in values)


def _detect(values: list[int], num_classes: int | None) -> Kind:
    """The ``auto`` rule of :meth:`LabelConfig.resolve` on the sorted annotated values of all labels."""
    nonzero = [v for v in values if v != 0]
    if num_classes is not None and num_classes > 2 and values and values[0] >= 0 and values[-1] < num_classes:
        return "classes"
    if len(nonzero) <= 1:
        return "binary"
    if num_classes is not None:
        return "instances"
    if values == list(range(len(values))) and len(values) <= AUTO_MAX_CLASSES:
        return "classes"
    return "instances"


def _single_foreground(summaries: list[LabelValues], config: LabelConfig) -> int | None:
    """The one nonzero value of a set of binary labels (``None`` if there is none).

    Raises:
        BiounetError: naming the first file with a second nonzero value, and its values.
    """
    foreground: int | None = None
    first: Path | None = None
    for summary in summaries:
        values = config._annotated(summary)
        for value in values:
            if value == 0:
                continue
            if foreground is None:
                if value < 0:
                    raise BiounetError(f"label values {format_values(values)} include negative ones, which are neither "
                                       "a mask's foreground nor the ignore value (set labels.ignore)", summary.path)
                foreground, first = value, summary.path
            elif value != foreground:
                other = f" ({first} has {foreground})" if first is not None and first != summary.path else ""
                raise BiounetError(f"label values {format_values(values)} do not fit binary labels, which have one "
                                   f"foreground value{other}; set labels.foreground, labels.ignore or labels.kind",
                                   summary.path)
    return foreground


def _fill_ignored(label: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """``label`` with every ignored pixel given the value of the nearest annotated pixel (0 if none is)."""
    if not ignored.any():
        return label
    if ignored.all():
        return np.zeros_like(label)
    nearest = ndimage.distance_transform_edt(ignored, return_distances=False, return_indices=True)
    return label[tuple(nearest)]


def format_values(values: Sequence[int]) -> str:
    """A list of label values for a message, shortened when long (instance maps).

    Args:
        values: sorted values.
    """
    values = list(values)
    if len(values) <= 8:
        return str(values)
    head = ", ".join(str(v) for v in values[:5])
    return f"[{head}, ... {values[-1]}] ({len(values)} values)"
