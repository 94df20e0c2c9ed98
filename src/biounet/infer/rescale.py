"""Rescaling an image so that its objects are the size the model was trained on, and the result back.

``--object-size D`` says that the image's objects are ``D`` pixels across. The image is resized by
``model diameter / D`` (:class:`~biounet.models.object_size.ObjectSize`), predicted by overlap-tile at that
size, and its probabilities resized back onto the image's own grid: so every output (probabilities, mask,
objects, the objects table) is in the image's pixels. The objects are found on the finer grid: a shrunk
image's on its own, with an instance model's post-processing sizes converted to its pixels
(:class:`~biounet.infer.instances.PixelSizes`); an enlarged image's on the model's, brought back by nearest
neighbour (:func:`nearest`; see :func:`~biounet.infer.stack.stack_instances`). Tiling happens on the rescaled
image, so tiled equals whole at any scale as it does at scale 1.

Resampling is linear with pixel areas aligned (the image's first and last pixel edges map onto the rescaled
image's), anti-aliased by a Gaussian when shrinking: ``skimage.transform.resize``'s ``order=1`` with its
default anti-aliasing (``tests/test_object_size.py`` holds it to that), written out here so that any region of
a resized array can be computed from a window of the original (:func:`needed`, :func:`resample`,
:class:`Rescaled`) and equal the same region of the whole array resized: out-of-core prediction rescales
block by block. Probabilities stay in [0, 1] and still sum to 1 over the classes, since each resampled value
is a weighted mean of the originals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from biounet.errors import BiounetError
from biounet.models.object_size import ObjectSize

AUTO = "auto"
"""``object_size="auto"``: estimate the objects' size from a first pass (see :mod:`biounet.infer.stack`)."""
AS_IT_IS = "none"
"""``object_size="none"``: predict the image as it is, whatever the model's default (:func:`chosen_size`)."""
# The factors an image is rescaled by at most, either way. An estimate beyond them is clipped (a first pass
# that found a few specks says little); a size given beyond them is refused.
MAX_SCALE = {AUTO: 4.0, "given": 8.0}
# "auto" also predicts the image at this factor: objects larger than any the model knows are split at full size
# into pieces of sizes it knows (so their size is underestimated), and seen whole at half size. Objects found at
# full size smaller than any it knows are small objects, not pieces: at half size they are smaller still, and
# the post-processing there (its sizes in the model's pixels) merges crowds of them into blobs that look larger:
# 375 nuclei of 5 px, shown at half size, measured 31.5 px at the probe and were shrunk 0.58x (accuracy@0.5 0.005).
PROBE = 0.5
# The half-size pass's estimate replaces the full-size one's when it is at least this factor larger (objects split
# at full size). The pass at the scale chosen is the last: measuring it again and predicting a third time when the
# new estimate asked for another factor lost accuracy@0.5 on the validation images of
# benchmarks/bench_generalist.py (at 2x 39 TP / 88 FP / 5 FN -> 37 / 143 / 7, at 0.5x 104 / 35 / 16 -> 105 / 44 / 15):
# a pass at a size the model knows less measures less well, not better.
LARGER_AT_PROBE = 1.25
# "auto" brings objects more than this factor larger than the model's median down to it, even those of sizes its
# training images held. Chosen on 55 held-out stage1 images (benchmarks/bench_generalist.py's validation split):
# leaving sizes up to the 90th percentile of the training images' medians (47 px for nuclei) as they were, images
# shown twice as large scored accuracy@0.5 0.632 with auto, 0.668 this way; as they are, 0.704 either way. Small
# objects are another matter: rescaling every image as it is to the median (even by its true size) scored 0.688
# against 0.708 left alone, the losses mostly false positives of enlarged small nuclei.
SHRINK_ABOVE = 1.25


def chosen_size(model: ObjectSize | None, size: float | str | None) -> float | str | None:
    """The object size a prediction uses: ``None`` (no size named) is the model's default, ``"auto"`` for a
    model that estimates by default (:attr:`ObjectSize.estimate`) and the image as it is for others;
    :data:`AS_IT_IS` is the image as it is (returned as ``None``); a number or ``"auto"`` stays.

    Args:
        model: the model's :class:`ObjectSize`, or ``None``.
        size: ``TileOptions.object_size``.
    """
    if size is None:
        return AUTO if model is not None and model.estimate else None
    return None if size == AS_IT_IS else size


def planned_scale(model: ObjectSize | None, size: float | str | None,
                  path: str | Path | None = None) -> tuple[float, float | None] | None:
    """The factor an image is rescaled by and the object size it is for, as ``TileOptions.object_size`` asks
    (:func:`chosen_size`): ``(1.0, None)`` for the image as it is, ``(factor, size)`` for a size given, and
    ``None`` for ``"auto"``, which a first pass decides.

    Args:
        model: the model's :class:`ObjectSize`, or ``None``.
        size: ``TileOptions.object_size``.
        path: the input, for messages.

    Raises:
        BiounetError: naming ``path``, as :func:`given_scale`.
    """
    size = chosen_size(model, size)
    if size is None:
        return 1.0, None
    try:
        scale = given_scale(model, size)
    except BiounetError as exc:
        raise BiounetError(str(exc), path) from exc
    return None if scale is None else (scale, float(size))


def scale_for(model: ObjectSize | None, diameter: float) -> float:
    """The factor that resizes objects of ``diameter`` pixels (a size given by the user) to the model's median.

    Args:
        model: the model's :class:`ObjectSize`.
        diameter: the objects' diameter in the image's pixels.

    Raises:
        BiounetError: for a model without a recorded size, a diameter that is not positive, or one more than
            ``MAX_SCALE["given"]`` off the model's.
    """
    size = _recorded(model)
    if not math.isfinite(diameter) or diameter <= 0:
        raise BiounetError(f"object size must be a positive number of pixels or 'auto', got {diameter}")
    scale = size.diameter / diameter
    limit = MAX_SCALE["given"]
    if not 1 / limit <= scale <= limit:
        raise BiounetError(f"objects of {diameter:g} px are more than {limit:g}x off the model's "
                           f"{size.diameter:.1f} px; give their size within {size.diameter / limit:.1f}.."
                           f"{size.diameter * limit:.0f} px")
    return scale


def auto_scale(model: ObjectSize | None, found: float) -> float:
    """The factor for an image whose objects a pass measured at ``found`` pixels: 1 for objects the model
    segments best as they are (:func:`keeps`), else the factor that brings them to its median (as
    ``--object-size`` does), at most ``MAX_SCALE["auto"]`` either way.

    Args:
        model: the model's :class:`ObjectSize`.
        found: the median equivalent diameter of the objects found, in the image's pixels.

    Raises:
        BiounetError: for a model without a recorded size.
    """
    size = _recorded(model)
    if keeps(size, found):
        return 1.0
    limit = MAX_SCALE[AUTO]
    return float(min(max(size.diameter / found, 1 / limit), limit))


def measured(model: ObjectSize, found: float | None, coarse: float | None) -> float | None:
    """The objects' size ``"auto"`` goes by, from the median diameters found at full size and at
    :data:`PROBE` (in the image's pixels either; ``None`` where nothing was found): the probe's when the full
    size found nothing, or pieces of a size the model knows (:func:`knows`) and the probe objects at least
    :data:`LARGER_AT_PROBE` times larger, of a size it knows there; else the full size's.

    Args:
        model: the model's :class:`ObjectSize`.
        found: the full-size pass's median diameter.
        coarse: the probe pass's.
    """
    if coarse is None or not knows(model, coarse * PROBE):
        return found
    if found is None or (knows(model, found) and coarse > found * LARGER_AT_PROBE):
        return coarse
    return found


def keeps(model: ObjectSize, diameter: float) -> bool:
    """Whether ``auto`` leaves objects of ``diameter`` pixels at full size: from the smallest size the model
    knows (:attr:`ObjectSize.known`) up to :data:`SHRINK_ABOVE` times its median."""
    return model.known[0] <= diameter <= model.diameter * SHRINK_ABOVE


def knows(model: ObjectSize, diameter: float) -> bool:
    """Whether objects of ``diameter`` pixels are of a size the model knows (:attr:`ObjectSize.known`)."""
    low, high = model.known
    return low <= diameter <= high


def given_scale(model: ObjectSize | None, size: float | str) -> float | None:
    """The factor for an object size as ``TileOptions.object_size`` holds it: ``None`` for ``"auto"`` (each
    array's own), checked all the same, so that a bad size fails before anything is predicted.

    Raises:
        BiounetError: as :func:`scale_for`, or for a size that is neither a number nor ``"auto"``.
    """
    if size == AUTO:
        _recorded(model)
        return None
    try:
        diameter = float(size)
    except (TypeError, ValueError):
        raise BiounetError(f"object size must be a number of pixels or 'auto', got {size!r}") from None
    return scale_for(model, diameter)


def _recorded(model: ObjectSize | None) -> ObjectSize:
    if model is None:
        raise BiounetError("the model records no object size, so it cannot rescale images to it; models trained "
                           "by this biounet version record it (biounet info shows it)")
    return model


def object_size_from_pixel_size(model: ObjectSize | None, pixel_size: float) -> float:
    """The model's objects' diameter in the pixels of an image whose pixel size is ``pixel_size``.

    Args:
        model: the model's :class:`ObjectSize`; it must know its training images' pixel size.
        pixel_size: the image's pixel size, in the unit of the model's training files.

    Raises:
        BiounetError: for a model that does not know its pixel size, or a pixel size that is not positive.
    """
    if model is None or model.physical is None:
        raise BiounetError("the model does not know the pixel size of its training images (their files were not "
                           "calibrated); give --object-size in pixels instead")
    if not math.isfinite(pixel_size) or pixel_size <= 0:
        raise BiounetError(f"pixel size must be positive, got {pixel_size}")
    return model.physical / pixel_size


def scaled_shape(shape: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """A spatial shape resized by ``scale``, each axis rounded and at least 1."""
    return tuple(max(1, round(n * scale)) for n in shape)


def resize(array: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A channels-first array ``(C, *S)`` resampled to ``(C, *shape)`` as float32 (see the module's notes).

    Args:
        array: the image or probabilities, channels first.
        shape: the spatial shape wanted.
    """
    values = np.asarray(array, np.float32)
    source = tuple(int(n) for n in values.shape[1:])
    shape = tuple(int(n) for n in shape)
    if source == shape:
        return values
    return resample(values, (0,) * len(shape), source, shape, (0,) * len(shape), shape)


# scipy.ndimage's Gaussian reaches int(4 sigma + 0.5) pixels either side (its default truncate of 4).
_TRUNCATE = 4.0


def _axis(source: int, target: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """For target pixels ``start..stop`` of an axis resized from ``source`` to ``target`` pixels: the two source
    pixels each interpolates (mirrored at the ends, as scipy.ndimage's ``mirror`` mode), the weight of the
    second, and the anti-aliasing Gaussian's sigma (skimage's ``(factor - 1) / 2`` when shrinking)."""
    factor = source / target
    # Pixel areas aligned: target pixel j's centre is at source coordinate (j + 0.5) * factor - 0.5.
    x = (np.arange(start, stop, dtype=np.float64) + 0.5) * factor - 0.5
    first = np.floor(x)
    weight = (x - first).astype(np.float32)
    first = first.astype(np.int64)
    return _mirror(first, source), _mirror(first + 1, source), weight, max(0.0, (factor - 1) / 2)


def _mirror(index: np.ndarray, n: int) -> np.ndarray:
    """Indices outside ``0..n-1`` reflected about the end pixels' centres (-1 -> 1, n -> n - 2)."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def needed(source: tuple[int, ...], shape: tuple[int, ...], start: tuple[int, ...],
           stop: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """The box of the source, ``(lo, hi)`` per spatial axis, that :func:`resample` reads to make the target
    pixels ``start..stop`` of a resize from ``source`` to ``shape``: the pixels interpolated, and the
    anti-aliasing Gaussian's reach around them.

    Args:
        source: the spatial shape resized.
        shape: the spatial shape it is resized to.
        start: the region's first target pixel per axis.
        stop: one past its last target pixel per axis.
    """
    box = []
    for n, m, a, b in zip(source, shape, start, stop, strict=True):
        if n == m:
            box.append((a, b))
            continue
        first, second, _, sigma = _axis(n, m, a, b)
        reach = int(_TRUNCATE * sigma + 0.5) if sigma > 0 else 0
        box.append((max(0, int(min(first.min(), second.min())) - reach),
                    min(n, int(max(first.max(), second.max())) + 1 + reach)))
    return tuple(box)


def resample(window: np.ndarray, origin: tuple[int, ...], source: tuple[int, ...], shape: tuple[int, ...],
             start: tuple[int, ...], stop: tuple[int, ...]) -> np.ndarray:
    """The target pixels ``start..stop`` of a ``(C, *source)`` array resized to ``(C, *shape)``, computed from a
    window of it: equal to the same region of the whole array resized (:func:`resize`).

    Args:
        window: ``(C, *spatial)`` values of the source from ``origin`` on, holding at least :func:`needed`'s box.
        origin: the window's first source pixel per axis.
        source: the whole source's spatial shape.
        shape: the spatial shape it is resized to.
        start: the region's first target pixel per axis.
        stop: one past its last target pixel per axis.

    Returns:
        ``(C, *(stop - start))`` float32.
    """
    values = np.asarray(window, np.float32)
    axes = [_axis(n, m, a, b) if n != m else None for n, m, a, b in zip(source, shape, start, stop, strict=True)]
    sigmas = [0.0] + [0.0 if axis is None else axis[3] for axis in axes]
    if any(sigmas):
        # A Gaussian's value at a pixel depends only on pixels within its reach, which the window holds for every
        # pixel interpolated (needed()), and on the mirrored edge where the window reaches the source's edge: so
        # a window's values there equal the whole array's.
        values = ndimage.gaussian_filter(values, sigmas, mode="mirror", truncate=_TRUNCATE)
    for dim, (axis, o) in enumerate(zip(axes, origin, strict=True)):
        if axis is None:
            values = np.take(values, np.arange(start[dim], stop[dim]) - o, axis=dim + 1)
            continue
        first, second, weight, _ = axis
        spread = (-1,) + (1,) * (len(shape) - dim - 1)
        weight = weight.reshape(spread)
        values = (np.take(values, first - o, axis=dim + 1) * (1 - weight)
                  + np.take(values, second - o, axis=dim + 1) * weight)
    return np.ascontiguousarray(values, np.float32)


def nearest_indices(source: int, target: int, start: int, stop: int) -> np.ndarray:
    """For target pixels ``start..stop`` of an axis resized from ``source`` to ``target`` pixels, the source pixel
    each takes by nearest neighbour: the one its centre falls in (pixel areas aligned, as :func:`resize`)."""
    centres = (np.arange(start, stop, dtype=np.float64) + 0.5) * (source / target)
    return np.minimum(np.floor(centres).astype(np.int64), source - 1)


def nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Labels ``(*S)`` resized to ``shape`` by nearest neighbour (:func:`nearest_indices` on every axis): objects
    found on an enlarged image's grid, brought back onto the image's.

    Args:
        labels: the labels, spatial axes only.
        shape: the spatial shape wanted.
    """
    picks = [nearest_indices(n, m, 0, m) for n, m in zip(labels.shape, shape, strict=True)]
    return np.asarray(labels[np.ix_(*picks)])


class Rescaled:
    """An image ``(C, *S)`` resized to ``(C, *shape)``, read region by region: each read resamples only the
    window of the image it needs (:func:`needed`), so a block of a rescaled slide equals the same block of the
    whole slide resized, and only that window is in memory.

    Args:
        image: ``(C, *S)`` array-like with basic slicing (an :class:`~biounet.io.items.ItemView`, NumPy).
        shape: the spatial shape it is resized to.
    """

    def __init__(self, image: Any, shape: tuple[int, ...]) -> None:
        self.image = image
        self.source: tuple[int, ...] = tuple(int(n) for n in image.shape[1:])
        self.shape: tuple[int, ...] = (int(image.shape[0]), *(int(n) for n in shape))
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: tuple[Any, ...]) -> np.ndarray:
        """``view[channels, *spatial]`` with unit-step slices."""
        channel, spatial = key[0], tuple(key[1:]) + (slice(None),) * (self.ndim - len(key))
        bounds = [s.indices(n) for s, n in zip(spatial, self.shape[1:], strict=True)]
        if any(step != 1 for _, _, step in bounds):
            raise ValueError("a rescaled image is read with unit-step slices")
        start, stop = tuple(a for a, _, _ in bounds), tuple(max(a, b) for a, b, _ in bounds)
        box = needed(self.source, self.shape[1:], start, stop)
        window = self.image[(slice(None),) + tuple(slice(lo, hi) for lo, hi in box)]
        resampled: np.ndarray = resample(window, tuple(lo for lo, _ in box), self.source, self.shape[1:], start, stop)
        return resampled[channel]
