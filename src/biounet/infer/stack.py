"""Predicting what a file or an array holds, item by item: each plane of a stack for a 2D model, each
volume of a time series for a 3D model, exactly as a file holding only that item would be predicted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from biounet.data.targets import instances_from_classes
from biounet.errors import BiounetError
from biounet.infer.instances import by_first_pixel, instances_from_probabilities
from biounet.infer.predict import TileOptions, checked_input, predict
from biounet.infer.rescale import PROBE, auto_scale, knows, measured, nearest, planned_scale, resize, scaled_shape
from biounet.io.axes import StackPlan
from biounet.io.channels import can_match, match_channels
from biounet.models.checkpoint import Checkpoint
from biounet.models.object_size import median_diameter
from biounet.models.outputs import probabilities_to_mask


@dataclass(frozen=True)
class Segmented:
    """What :func:`segment_array` found in one stored array.

    Attributes:
        probs: ``(classes, *plan.out_shape)`` float32 probabilities, on the array's own grid.
        mask: their ``plan.out_shape`` class indices.
        ids: the object ids in :func:`stack_instances`'s items-first order; ``None`` when not asked for.
        scale: the factor the items were resized by for the model (1.0: as they are).
        object_size: the objects' diameter in the array's pixels: the one given (the scale was chosen for
            it), or the one ``"auto"`` measured on the pass it kept; ``None`` when no size was given.
        fine: where the items were enlarged for the model (``scale > 1``) and their objects found, the
            ``(classes, *batch_shape, *scaled spatial shape)`` probabilities on the enlarged grid (items first)
            that the objects were found on (:func:`stack_instances`); else ``None``.
    """

    probs: np.ndarray
    mask: np.ndarray
    ids: np.ndarray | None
    scale: float = 1.0
    object_size: float | None = None
    fine: np.ndarray | None = None


def segment_array(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, *,
                  options: TileOptions = TileOptions(), instances: bool = True,
                  on_progress: Callable[[float], None] | None = None) -> Segmented:
    """One stored array segmented as ``biounet predict`` segments a file holding it: the step that files
    (:mod:`biounet.infer.files`) and napari layers share.

    No ``options.object_size`` is the model's default (:func:`~biounet.infer.rescale.chosen_size`). With one, the
    items are rescaled so that objects of that size become the model's
    (:mod:`biounet.infer.rescale`), one factor for the whole array. ``"auto"`` predicts the array as it is
    and at half its size (:data:`~biounet.infer.rescale.PROBE`), and measures the median equivalent diameter
    of the objects found (an instance model's, or the connected components of a semantic model's classes):
    the full-size pass's, or the half-size pass's when its objects are larger (at a size the model knows
    there), since objects larger than any the model knows are split into pieces at full size
    (:func:`~biounet.infer.rescale.measured`). Objects from the
    smallest size the model knows to a little above its median (:func:`~biounet.infer.rescale.keeps`) keep the
    full-size pass; others are predicted again rescaled to its median (:func:`~biounet.infer.rescale.auto_scale`).

    Args:
        checkpoint: the model, its normalisation, its instance parameters and the size of its objects.
        array: the array as stored.
        plan: how ``array`` is split into items (:func:`~biounet.io.axes.plan_stack`).
        path: the input, for messages.
        options: tile, batch size, TTA, device and object size.
        instances: whether to find the objects (:func:`stack_instances`).
        on_progress: see :func:`predict_stack`.

    Raises:
        BiounetError: for channels the model cannot take, an array it cannot predict, or an object size
            it cannot rescale to.
    """
    check_channels(plan, checkpoint.config.in_channels, path)
    planned = planned_scale(checkpoint.object_size, options.object_size, path)
    if planned is None:
        return _auto(checkpoint, array, plan, path, options, instances, on_progress)
    scale, size = planned
    return replace(_segment(checkpoint, array, plan, path, options, scale, instances, on_progress), object_size=size)


def _auto(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, options: TileOptions,
          instances: bool, on_progress: Callable[[float], None] | None) -> Segmented:
    """``object_size="auto"`` (see :func:`segment_array`)."""
    model = checkpoint.object_size
    assert model is not None  # given_scale refused a model without one
    first = _segment(checkpoint, array, plan, path, options, 1.0, True, _share(on_progress, 0.0, 0.4))
    probe = _segment(checkpoint, array, plan, path, options, PROBE, True, _share(on_progress, 0.4, 0.5))
    found = measured(model, _median_diameter(first, plan), _median_diameter(probe, plan))
    scale = 1.0 if found is None else auto_scale(model, found)
    if scale == 1.0:  # also when nothing was found to measure: the array stays as it is
        if on_progress is not None:
            on_progress(1.0)
        return replace(first, object_size=found, ids=first.ids if instances else None)
    second = _segment(checkpoint, array, plan, path, options, scale, True, _share(on_progress, 0.5, 1.0))
    # The size reported is measured on this pass, which saw the objects at the model's own size: 36 px discs
    # measured 31.1 px at full size (rescaled by 0.63 all the same) and 35.8 px here.
    again = _median_diameter(second, plan)
    if again is not None and not knows(model, again * scale):
        # The rescaled pass's objects are still of no size the model knows: the size was misread (a single
        # large nucleus in pieces at full size, enlarged 2.3x, came out as 219 specks), so the image is
        # taken as it is.
        return replace(first, object_size=found, ids=first.ids if instances else None)
    return replace(second, object_size=found if again is None else again, ids=second.ids if instances else None)


def _median_diameter(found: Segmented, plan: StackPlan) -> float | None:
    """The median equivalent diameter of a pass's objects, item by item (a stack's objects are the discs of
    each plane, not balls of the whole stack); ``None`` if it found none."""
    if found.ids is None:
        return None
    return median_diameter([found.ids[index] for index in np.ndindex(*plan.batch_shape)])


def _segment(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, options: TileOptions,
             scale: float, instances: bool, on_progress: Callable[[float], None] | None) -> Segmented:
    """One pass: probabilities at ``scale``, back on the array's grid, their mask and objects (found on the finer
    of the two grids: the array's, or the model's where the items were enlarged for it, :func:`_enlarged`)."""
    if instances and scale > 1.0:
        return _enlarged(checkpoint, array, plan, path, options, scale, on_progress)
    probs = predict_stack(checkpoint, array, plan, path, options=options, scale=scale, on_progress=on_progress)
    mask = probabilities_to_mask(probs, checkpoint.config.output)
    if not instances:
        return Segmented(probs, mask, None, scale)
    return Segmented(probs, mask, stack_instances(checkpoint, probs, mask, plan, scale), scale)


def _enlarged(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, options: TileOptions,
              scale: float, on_progress: Callable[[float], None] | None) -> Segmented:
    """A pass over items enlarged by ``scale`` for the model, their objects found on the enlarged grid
    (:func:`stack_instances` with ``fine``)."""
    config = checkpoint.model.config
    stacked = np.zeros((config.out_channels, *plan.batch_shape, *plan.spatial_shape), np.float32)
    fine = np.zeros((config.out_channels, *plan.batch_shape, *scaled_shape(plan.spatial_shape, scale)), np.float32)
    for index, probs in _predicted_items(checkpoint, array, plan, path, options, scale, on_progress, stacked):
        fine[_item(index)] = probs
        stacked[_item(index)] = resize(probs, plan.spatial_shape)
    probs = plan.to_stored_order(stacked)
    mask = probabilities_to_mask(probs, checkpoint.config.output)
    return Segmented(probs, mask, stack_instances(checkpoint, probs, mask, plan, scale, fine), scale, fine=fine)


def _share(on_progress: Callable[[float], None] | None, low: float,
           high: float) -> Callable[[float], None] | None:
    """``on_progress`` for a pass that covers ``low..high`` of the work."""
    if on_progress is None:
        return None
    report = on_progress
    return lambda fraction: report(low + fraction * (high - low))


def predict_stack(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, *,
                  options: TileOptions = TileOptions(), scale: float = 1.0,
                  on_progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Probabilities for every item of a stored array (each plane of a stack for a 2D model), in its order.

    Each item is predicted exactly as a file holding only that item would be, normalisation included.

    Args:
        checkpoint: the model and its normalisation.
        array: the array as stored.
        plan: how ``array`` is split into ``(C, *spatial)`` items (:func:`~biounet.io.axes.plan_stack`).
        path: the input, for messages.
        options: tile, batch size, TTA and device (its object size is :func:`segment_array`'s).
        scale: the factor each item is resized by before prediction; its probabilities are resized back.
        on_progress: called with the fraction done (0..1) after every batch of tiles; an exception raised in
            it stops the prediction.

    Returns:
        ``(classes, *plan.out_shape)`` float32 probabilities.
    """
    config = checkpoint.model.config
    stacked = np.zeros((config.out_channels, *plan.batch_shape, *plan.spatial_shape), np.float32)
    for index, probs in _predicted_items(checkpoint, array, plan, path, options, scale, on_progress, stacked):
        if scale != 1.0:
            stacked[_item(index)] = resize(probs, plan.spatial_shape)
    return plan.to_stored_order(stacked)


def _predicted_items(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, options: TileOptions,
                     scale: float, on_progress: Callable[[float], None] | None,
                     stacked: np.ndarray) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """Each item's index and ``(classes, *spatial)`` probabilities at ``scale`` (see :func:`predict_stack`); at
    scale 1 they are predicted straight into ``stacked`` (items first)."""
    count = int(np.prod(plan.batch_shape, dtype=np.int64))
    items = tqdm(plan.items(array), total=count, desc="slices", unit="slice", disable=count < 2, leave=False)
    shape = scaled_shape(plan.spatial_shape, scale)
    for number, (index, item) in enumerate(items):
        image = match_channels(item, checkpoint.config.in_channels, path)
        region = _item(index)
        try:
            # The statistics are the item's as it is, at any scale: every pass of "auto" sees the same
            # intensities, and out-of-core prediction, which never holds a rescaled item whole, fits the same.
            stats = None if scale == 1.0 else checkpoint.normalization.fit(checked_input(image, checkpoint.config))
            image = image if scale == 1.0 else resize(image, shape)
            out = stacked[region] if scale == 1.0 else None
            probs = predict(checkpoint, image, tile=options.tile, batch_size=options.batch_size, tta=options.tta,
                            normalization=checkpoint.normalization, stats=stats, device=options.device,
                            progress=count < 2, out=out, on_tiles=_item_progress(on_progress, number, count))
        except BiounetError as exc:
            raise BiounetError(str(exc), path) from exc
        yield tuple(index), probs


def stack_instances(checkpoint: Checkpoint, probs: np.ndarray, mask: np.ndarray, plan: StackPlan,
                    scale: float = 1.0, fine: np.ndarray | None = None) -> np.ndarray:
    """Object ids for every item (plane, or volume of a time series) of a prediction, unique over all items.

    An instance model's objects come from its probabilities (:func:`instances_from_probabilities` with the
    checkpoint's parameters); a semantic model's are the connected components of each class of its mask.
    Each item is split on its own, as a file holding only it would be, and its ids are offset past those of
    the items before it.

    Items enlarged for the model (``scale > 1``) are split on the enlarged grid, from ``fine``, where the model
    saw the objects at its own size and its probabilities are finer than the array's grid can hold, and their
    objects brought back by nearest neighbour (:func:`~biounet.infer.rescale.nearest`). Split instead from the
    probabilities resized back, the one-pixel gaps between touching small nuclei blur away and they merge: on
    the 55 held-out images of ``benchmarks/bench_generalist.py --validation`` shown at half size, accuracy@0.5
    0.721 that way and 0.749 this way (on the 31 of them that auto enlarged, 0.666 and 0.710).

    Args:
        checkpoint: the model, and its instance parameters if it has them.
        probs: ``(classes, *plan.out_shape)`` probabilities, as :func:`predict_stack` gives them.
        mask: ``plan.out_shape`` class indices of ``probs``.
        plan: the stack's :class:`~biounet.io.axes.StackPlan`.
        scale: the factor the items were resized by for the model (the post-processing's sizes are the
            model's pixels: :func:`instances_from_probabilities`).
        fine: for an enlarging ``scale``, the probabilities on the enlarged grid, items first
            (:attr:`Segmented.fine`); then ``probs`` and ``mask`` are not read.

    Returns:
        ``int32`` ids of shape ``(*plan.batch_shape, *plan.spatial_shape)`` (items first; back to the stored
        order with ``plan.to_stored_order(ids[None])[0]``).

    Raises:
        BiounetError: if the stack has more objects than ``int32`` ids can number.
    """
    numbered = _Numbered(plan)
    if fine is not None:
        for index in np.ndindex(*plan.batch_shape):
            item = fine[_item(index)]
            found = item_objects(checkpoint, item, probabilities_to_mask(item, checkpoint.config.output))
            numbered.add(index, by_first_pixel(nearest(found, plan.spatial_shape)))
        return numbered.ids
    prob_items, mask_items = items_first(probs, plan), items_first(mask[None], plan)[0]
    for index in np.ndindex(*plan.batch_shape):
        numbered.add(index, item_objects(checkpoint, prob_items[_item(index)], mask_items[index], scale))
    return numbered.ids


def items_first(stored: np.ndarray, plan: StackPlan) -> np.ndarray:
    """``(K, *plan.out_shape)`` moved to ``(K, *batch_shape, *spatial_shape)``: the inverse of ``to_stored_order``."""
    inner = plan.batch_axes + plan.spatial_axes
    return np.transpose(stored, (0, *(1 + plan.out_axes.index(a) for a in inner)))


def _item(index: tuple[int, ...]) -> tuple[slice | int, ...]:
    """The region of an item's channels in an items-first array."""
    return (slice(None), *index)


def item_objects(checkpoint: Checkpoint, probs: np.ndarray, mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """One item's object ids, numbered 1..n: an instance model's from its ``(classes, *S)`` probabilities
    (:func:`instances_from_probabilities` with the checkpoint's parameters), a semantic model's the connected
    components of each class of its ``mask``; ``scale`` as for :func:`stack_instances`."""
    if checkpoint.instances is not None:
        return instances_from_probabilities(probs, checkpoint.instances, checkpoint.config.output, scale)
    return instances_from_classes(mask)


class _Numbered:
    """The object ids of a stack's items (items first), each item's numbered on past those of the items before."""

    def __init__(self, plan: StackPlan) -> None:
        self.ids = np.zeros((*plan.batch_shape, *plan.spatial_shape), np.int32)
        self.offset = 0

    def add(self, index: tuple[int, ...], item: np.ndarray) -> None:
        """Stores one item's ids, numbered 1..count.

        Raises:
            BiounetError: if the stack has more objects than ``int32`` ids can number.
        """
        count, limit = int(item.max(initial=0)), int(np.iinfo(np.int32).max)
        if self.offset + count > limit:
            raise BiounetError(f"more than {limit} objects in one stack")
        self.ids[index] = np.where(item > 0, item + self.offset, 0)
        self.offset += count


def _item_progress(on_progress: Callable[[float], None] | None, item: int,
                   items: int) -> Callable[[int, int], None] | None:
    """Turns one item's (tiles done, tiles) into the fraction of the whole stack done."""
    if on_progress is None:
        return None
    report = on_progress
    return lambda done, total: report((item + done / total) / items)


def check_channels(plan: StackPlan, want: int, path: Path | None) -> None:
    """Fails early for channel counts that :func:`match_channels` cannot adapt."""
    have = plan.channels
    if not can_match(have, want):
        raise BiounetError(f"image has {have} channel(s) (axes {plan.axes.replace('-', '')}) but the model "
                           f"expects {want}; segment one of them with --channel N (from 0), or if the file's axes "
                           "are not these, give them with --axes", path)
