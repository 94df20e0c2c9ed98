"""Predicting what a file or an array holds, item by item: each plane of a stack for a 2D model, each
volume of a time series for a 3D model, exactly as a file holding only that item would be predicted."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from biounet.data.targets import instances_from_classes
from biounet.errors import BiounetError
from biounet.infer.instances import instances_from_probabilities
from biounet.infer.predict import TileOptions, predict
from biounet.io.axes import StackPlan
from biounet.io.channels import match_channels
from biounet.models.checkpoint import Checkpoint
from biounet.models.outputs import probabilities_to_mask


def segment_array(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, *,
                  options: TileOptions = TileOptions(), instances: bool = True,
                  on_progress: Callable[[float], None] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One stored array segmented as ``biounet predict`` segments a file holding it: the step that files
    (:mod:`biounet.infer.files`) and napari layers share.

    Args:
        checkpoint: the model, its normalisation and its instance parameters.
        array: the array as stored.
        plan: how ``array`` is split into items (:func:`~biounet.io.axes.plan_stack`).
        path: the input, for messages.
        options: tile, batch size, TTA and device.
        instances: whether to find the objects (:func:`stack_instances`).
        on_progress: see :func:`predict_stack`.

    Returns:
        ``(probs, mask, ids)``: ``(classes, *plan.out_shape)`` float32 probabilities, their ``plan.out_shape``
        class indices, and the object ids in :func:`stack_instances`'s items-first order (``None`` without
        ``instances``).

    Raises:
        BiounetError: for channels the model cannot take, or an array it cannot predict.
    """
    check_channels(plan, checkpoint.config.in_channels, path)
    probs = predict_stack(checkpoint, array, plan, path, options=options, on_progress=on_progress)
    mask = probabilities_to_mask(probs, checkpoint.config.output)
    return probs, mask, stack_instances(checkpoint, probs, mask, plan) if instances else None


def predict_stack(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, *,
                  options: TileOptions = TileOptions(),
                  on_progress: Callable[[float], None] | None = None) -> np.ndarray:
    """Probabilities for every item of a stored array (each plane of a stack for a 2D model), in its order.

    Each item is predicted exactly as a file holding only that item would be, normalisation included.

    Args:
        checkpoint: the model and its normalisation.
        array: the array as stored.
        plan: how ``array`` is split into ``(C, *spatial)`` items (:func:`~biounet.io.axes.plan_stack`).
        path: the input, for messages.
        options: tile, batch size, TTA and device.
        on_progress: called with the fraction done (0..1) after every batch of tiles; an exception raised in
            it stops the prediction.

    Returns:
        ``(classes, *plan.out_shape)`` float32 probabilities.
    """
    config = checkpoint.model.config
    stacked = np.zeros((config.out_channels, *plan.batch_shape, *plan.spatial_shape), np.float32)
    count = int(np.prod(plan.batch_shape, dtype=np.int64))
    items = tqdm(plan.items(array), total=count, desc="slices", unit="slice", disable=count < 2, leave=False)
    for number, (index, item) in enumerate(items):
        image = match_channels(item, config.in_channels, path)
        region: tuple[slice | int, ...] = (slice(None), *index)
        try:
            predict(checkpoint, image, tile=options.tile, batch_size=options.batch_size, tta=options.tta,
                    normalization=checkpoint.normalization, device=options.device, progress=count < 2,
                    out=stacked[region], on_tiles=_item_progress(on_progress, number, count))
        except BiounetError as exc:
            raise BiounetError(str(exc), path) from exc
    return plan.to_stored_order(stacked)


def stack_instances(checkpoint: Checkpoint, probs: np.ndarray, mask: np.ndarray, plan: StackPlan) -> np.ndarray:
    """Object ids for every item (plane, or volume of a time series) of a prediction, unique over all items.

    An instance model's objects come from its probabilities (:func:`instances_from_probabilities` with the
    checkpoint's parameters); a semantic model's are the connected components of each class of its mask.
    Each item is split on its own, as a file holding only it would be, and its ids are offset past those of
    the items before it.

    Args:
        checkpoint: the model, and its instance parameters if it has them.
        probs: ``(classes, *plan.out_shape)`` probabilities, as :func:`predict_stack` gives them.
        mask: ``plan.out_shape`` class indices of ``probs``.
        plan: the stack's :class:`~biounet.io.axes.StackPlan`.

    Returns:
        ``int32`` ids of shape ``(*plan.batch_shape, *plan.spatial_shape)`` (items first; back to the stored
        order with ``plan.to_stored_order(ids[None])[0]``).

    Raises:
        BiounetError: if the stack has more objects than ``int32`` ids can number.
    """
    prob_items, mask_items = items_first(probs, plan), items_first(mask[None], plan)[0]
    ids = np.zeros(mask_items.shape, np.int32)
    offset, limit = 0, int(np.iinfo(np.int32).max)
    for index in np.ndindex(*plan.batch_shape):
        if checkpoint.instances is not None:
            region: tuple[slice | int, ...] = (slice(None), *index)
            item = instances_from_probabilities(prob_items[region], checkpoint.instances, checkpoint.config.output)
        else:
            item = instances_from_classes(mask_items[index])
        count = int(item.max(initial=0))  # both number their objects 1..count
        if offset + count > limit:
            raise BiounetError(f"more than {limit} objects in one stack")
        ids[index] = np.where(item > 0, item + offset, 0)
        offset += count
    return ids


def items_first(stored: np.ndarray, plan: StackPlan) -> np.ndarray:
    """``(K, *plan.out_shape)`` moved to ``(K, *batch_shape, *spatial_shape)``: the inverse of ``to_stored_order``."""
    inner = plan.batch_axes + plan.spatial_axes
    return np.transpose(stored, (0, *(1 + plan.out_axes.index(a) for a in inner)))


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
    if have != want and not (want == 1 and have in (3, 4)) and not (want == 3 and have in (1, 4)):
        raise BiounetError(f"image has {have} channel(s) (axes {plan.axes.replace('-', '')}) but the model "
                           f"expects {want}; if the file's axes are not these, give them with --axes", path)
