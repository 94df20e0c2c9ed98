"""Which axis of a stored array is which, and how a model of a given dimension goes through it.

A file's axes (:class:`StoredAxes`) are named with the letters ``T`` (time), ``Z``, ``C`` (channels), ``Y``
and ``X``, one per stored axis, in stored order; readers write ``?`` for an axis the file does not name
(tifffile's pages of a plain multi-page TIFF). :func:`plan_stack` resolves those from the model, never from a
page count alone, and says how to iterate: a 2D model is run on every ``(C, Y, X)`` plane of the ``T`` and
``Z`` axes, a 3D model on every ``(C, Z, Y, X)`` volume of ``T``. :func:`image_plan` resolves them without a
model, for a file that must be one ``(C, *spatial)`` image (training data, labels, ``evaluate``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError

AXIS_LETTERS = "TZCYX"
UNKNOWN = "?"


@dataclass(frozen=True)
class StoredAxes:
    """A file's array as stored, with a name for each axis.

    Attributes:
        shape: the array's shape as stored.
        dtype: the dtype that reading gives.
        axes: one letter per stored axis, from ``TZCYX``, or ``?`` where the file does not say.
        spacing: pixel/voxel size per stored axis; 1.0 where the file does not say or the axis is not spatial.
        header: the format's header, kept to write results back alike (NIfTI); ``None`` for other formats.
        colour: whether the file says that its ``C`` axis holds the samples of a colour picture (RGB, RGBA:
            ``True``; a PNG, a TIFF's photometric samples) or separate channels (stains, ``False``: an ImageJ
            hyperstack's channels); ``None`` where it does not say, or the axes were given (``--axes``).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    axes: str
    spacing: tuple[float, ...]
    header: Any = field(default=None, compare=False, repr=False)
    colour: bool | None = None


def check_spatial_dims(spatial_dims: int, path: str | Path | None = None) -> None:
    """Raises a :class:`BiounetError` unless ``spatial_dims`` is 2 or 3.

    Args:
        spatial_dims: a model's number of spatial dimensions.
        path: the file, for messages.
    """
    if spatial_dims not in (2, 3):
        raise BiounetError(f"{spatial_dims}D images are not supported (2 or 3)", path)


def check_axes(axes: str, shape: tuple[int, ...], path: str | Path | None = None) -> str:
    """Validates an ``--axes`` string (or a file's own axes) against an array's shape.

    Args:
        axes: one letter of ``TZCYX`` per stored axis, case-insensitive, e.g. ``ZYX`` or ilastik's ``ZYXC``.
        shape: the stored array's shape.
        path: the file, for messages.

    Returns:
        The axes in upper case.

    Raises:
        BiounetError: for an unknown or repeated letter, a length that is not the array's number of
            dimensions, or no ``Y`` and ``X``.
    """
    text = axes.strip().upper()
    unknown = sorted({a for a in text if a not in AXIS_LETTERS})
    if unknown:
        raise BiounetError(f"axes {axes!r} have unknown letter(s) {''.join(unknown)}; use letters of "
                           f"{AXIS_LETTERS}", path)
    repeated = sorted({a for a in text if text.count(a) > 1})
    if repeated:
        raise BiounetError(f"axes {axes!r} repeat {''.join(repeated)}", path)
    if "Y" not in text or "X" not in text:
        raise BiounetError(f"axes {axes!r} need both Y and X", path)
    if len(text) != len(shape):
        raise BiounetError(f"axes {axes!r} have {len(text)} letter(s) but the array has {len(shape)} "
                           f"dimension(s) (shape {tuple(shape)})", path)
    return text


@dataclass(frozen=True)
class StackPlan:
    """How a stored array is read as items of ``(C, *spatial)`` for a model.

    Attributes:
        shape: the stored shape.
        axes: one letter per stored axis, unknowns resolved; ``-`` for a singleton axis that is dropped.
        spatial_dims: the model's, 2 or 3.
        channel: the one channel that items hold (an index into the ``C`` axis), or ``None`` for all; a
            nuclear stain in a file of several, say.
    """

    shape: tuple[int, ...]
    axes: str
    spatial_dims: int
    channel: int | None = None

    @property
    def out_axes(self) -> str:
        """The letters of a mask's axes (the stored order, channels and dropped axes left out)."""
        return "".join(a for a in self.axes if a not in "C-")

    @property
    def batch_axes(self) -> str:
        """The axes iterated over, in stored order: ``T`` and ``Z`` for a 2D model, ``T`` for a 3D one."""
        return "".join(a for a in self.axes if a in ("TZ" if self.spatial_dims == 2 else "T"))

    @property
    def spatial_axes(self) -> str:
        """The item's spatial axes, in stored order (a plane or volume is never transposed)."""
        return "".join(a for a in self.axes if a in ("YX" if self.spatial_dims == 2 else "ZYX"))

    @property
    def channels(self) -> int:
        """The channels of an item: one where :attr:`channel` picks it."""
        return 1 if self.channel is not None else self.stored_channels

    @property
    def stored_channels(self) -> int:
        """The channels of the stored array."""
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    @property
    def channel_key(self) -> slice:
        """The stored ``C`` axis' index that reads an item's channels."""
        return slice(None) if self.channel is None else slice(self.channel, self.channel + 1)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self._size(a) for a in self.batch_axes)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self._size(a) for a in self.spatial_axes)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self._size(a) for a in self.out_axes)

    def items(self, array: np.ndarray) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """``(index into batch_shape, (C, *spatial) view)`` for every item of the stored ``array``."""
        kept = [i for i, a in enumerate(self.axes) if a != "-"]
        letters = "".join(self.axes[i] for i in kept)
        data = array.reshape([self.shape[i] for i in kept])
        channel = [letters.index("C")] if "C" in letters else []
        if channel:
            data = data[(slice(None),) * channel[0] + (self.channel_key,)]
        order = [letters.index(a) for a in self.batch_axes + "".join("C" for _ in channel)] + [
            letters.index(a) for a in self.spatial_axes]
        moved = np.transpose(data, order)
        if not channel:
            moved = np.expand_dims(moved, len(self.batch_axes))
        for index in np.ndindex(*self.batch_shape):
            yield index, moved[index]

    def to_stored_order(self, stacked: np.ndarray) -> np.ndarray:
        """``(K, *batch_shape, *spatial_shape)`` results moved to ``(K, *out_shape)`` (the stored order)."""
        inner = self.batch_axes + self.spatial_axes
        return np.transpose(stacked, (0, *(1 + inner.index(a) for a in self.out_axes)))

    def _size(self, letter: str) -> int:
        return self.shape[self.axes.index(letter)]


def plan_stack(axes: str, shape: tuple[int, ...], spatial_dims: int, in_channels: int,
               path: str | Path | None = None, channel: int | None = None) -> StackPlan:
    """Resolves a file's axes for a model: which axes are channels, which are iterated, which are spatial.

    Singleton axes that the model does not need are dropped. An unnamed axis (``?``) longer than 1 becomes
    the stack axis (``Z``, or ``T`` where ``Z`` is named or spatial for a 3D model already) unless it could as
    well be the model's channels (as many as ``in_channels``, with no channel axis named): then the file is
    ambiguous and ``--axes`` must say. With ``channel`` given, an unnamed axis is the channels when no
    other axis is.

    Args:
        axes: one letter per stored axis, from ``TZCYX`` or ``?``.
        shape: the stored shape.
        spatial_dims: the model's, 2 or 3.
        in_channels: the model's input channels.
        path: the file, for messages.
        channel: read only this channel of the file (an index from 0 into its channel axis); 0 for a file
            of one channel.

    Raises:
        BiounetError: for two unnamed axes, an ambiguous one, an array without the model's spatial axes,
            more than one channel axis, or a ``channel`` that the file does not have.
    """
    check_spatial_dims(spatial_dims, path)
    needed = "YX" if spatial_dims == 2 else "ZYX"
    letters = ["-" if n == 1 and a not in needed else a for a, n in zip(axes, shape, strict=True)]
    described = f"axes {axes} and shape {tuple(shape)}"
    # A file may name two channel axes (ImageJ's C and samples S), fine as long as one is 1 long.
    repeated = sorted({a for a in letters if a not in "-?" and letters.count(a) > 1})
    if repeated:
        raise BiounetError(f"an image with {described} has more than one {'/'.join(repeated)} axis", path)
    unknown = [i for i, a in enumerate(letters) if a == UNKNOWN]
    if len(unknown) > 1:
        raise BiounetError(f"cannot tell which axis is which ({described}); give them with --axes, e.g. "
                           f"--axes {_example(letters, unknown)}", path)
    if unknown:
        i = unknown[0]
        stack = next((a for a in ("Z", "T") if a not in letters), None)
        could_be_channels = "C" not in letters and (shape[i] == in_channels or channel is not None)
        if could_be_channels and channel is not None:  # the caller says there are channels
            stack = None
        if stack is not None and could_be_channels:
            rest = "".join(a for a in letters if a != "-")
            raise BiounetError(
                f"cannot tell whether the {shape[i]} pages are channels or a stack ({described}) for a model "
                f"with {in_channels} input channels; give --axes {rest.replace(UNKNOWN, 'C')} or --axes "
                f"{rest.replace(UNKNOWN, stack)}", path)
        if stack is None and not could_be_channels:
            raise BiounetError(f"cannot tell what the unnamed axis is ({described}); give --axes", path)
        letters[i] = stack if stack is not None else "C"
    resolved = "".join(letters)
    if any(a not in resolved for a in needed):
        missing = "".join(a for a in needed if a not in resolved)
        raise BiounetError(f"an image with {described} has no {missing} axis for a {spatial_dims}D model"
                           + ("; give --axes if it is a stack" if spatial_dims == 3 else ""), path)
    plan = StackPlan(tuple(int(n) for n in shape), resolved, spatial_dims)
    if channel is None:
        return plan
    if not 0 <= channel < plan.stored_channels:
        have = f"channels 0 to {plan.stored_channels - 1}" if plan.stored_channels > 1 else "one channel (0)"
        raise BiounetError(f"there is no channel {channel}: the image ({described}) has {have}", path)
    return replace(plan, channel=channel if "C" in resolved else None)


def image_plan(stored: StoredAxes, spatial_dims: int, path: str | Path | None = None) -> StackPlan:
    """Resolves a file's axes as one ``(C, *spatial)`` image, with no model to tell channels from a stack.

    The plan has exactly one item (its ``batch_shape`` is ``()``). Singleton axes are dropped. For a 2D
    model an unnamed axis (``?``) is channels; for a 3D model the ``Z`` axis is the named one, or else the
    one unnamed axis longer than 1 (other unnamed axes are channels). At most one channel axis may be longer
    than 1, and neither time nor, for a 2D model, ``Z``. The spatial axes keep their stored order (NIfTI's
    i, j, k stay so).

    Args:
        stored: the file's array as stored (:func:`biounet.io.stored.probe_stored`).
        spatial_dims: 2 for images, 3 for volumes.
        path: the file, for messages.

    Raises:
        BiounetError: for a non-numeric or empty array, or one that is not a single image of that dimension.
    """
    check_spatial_dims(spatial_dims, path)
    shape = stored.shape
    if stored.dtype.kind not in "biuf":
        raise BiounetError(f"unsupported pixel type {stored.dtype}", path)
    if 0 in shape:
        raise BiounetError(f"image of shape {shape} is empty", path)
    described = f"axes {stored.axes} and shape {shape}"
    letters = list(stored.axes)
    if spatial_dims == 3 and "Z" not in letters:
        letters[_unnamed_z(stored, described, path)] = "Z"
    needed = "YX" if spatial_dims == 2 else "ZYX"
    letters = ["-" if n == 1 and a not in needed else "C" if a == UNKNOWN else a
               for a, n in zip(letters, shape, strict=True)]
    if "Z" in letters and spatial_dims == 2:
        raise BiounetError(f"cannot use a 3D volume with {described} as a 2D image for a 2D model", path)
    if "T" in letters or letters.count("C") > 1:
        why = "a time series" if "T" in letters else "more than one channel axis"
        raise BiounetError(f"cannot use an image with {described} as a {spatial_dims}D image ({why})", path)
    return StackPlan(shape, "".join(letters), spatial_dims)


def _unnamed_z(stored: StoredAxes, described: str, path: str | Path | None) -> int:
    """The stored axis that is ``Z`` in a file that names none: its one unnamed axis longer than 1."""
    unnamed = [i for i, (a, n) in enumerate(zip(stored.axes, stored.shape, strict=True)) if a == UNKNOWN and n > 1]
    if not unnamed:
        raise BiounetError(f"a 2D image ({described}) cannot be used with a 3D model", path)
    if len(unnamed) > 1:
        raise BiounetError(f"cannot tell the Z axis from channels in an image with {described}; write it with "
                           "axes metadata (e.g. ImageJ's ZCYX)", path)
    return unnamed[0]


def _example(letters: list[str], unknown: list[int]) -> str:
    free = iter(a for a in "TZC" if a not in letters)
    return "".join(next(free, UNKNOWN) if i in unknown else a for i, a in enumerate(letters) if a != "-")
