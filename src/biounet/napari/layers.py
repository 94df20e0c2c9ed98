"""Between napari layers and biounet: which axis of a layer's data is which, segmenting it, and turning a
corrected Labels layer into a training pair. No Qt here, so that all of it is tested without a viewer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage

from biounet.errors import BiounetError
from biounet.infer.devices import resolve_device
from biounet.infer.predict import TileOptions
from biounet.infer.stack import segment_array, stack_instances
from biounet.io.axes import StackPlan, plan_stack
from biounet.models.checkpoint import Checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.outputs import foreground_probability, probabilities_to_mask

# The value written where a training label is not annotated (``labels.ignore`` of the run).
IGNORE = -1
# Around each corrected pixel, this many pixels of the model's own result are trained on as well: the
# context that tells the network where a painted object ends.
CONTEXT = 4
ORIGINAL = "biounet_original"
"""Key of a Segment result's ``layer.metadata`` holding the labels as the model made them."""


def layer_axes(shape: tuple[int, ...], rgb: bool, spatial_dims: int, in_channels: int) -> str:
    """The axes (``TZCYX`` letters) of an image layer's data, as napari shows it.

    napari has no axis names: the last two axes are Y and X (then the colour channels of an RGB layer). A 3D
    model takes the axis before them as Z; a 2D model predicts the leading axes plane by plane. A first
    axis as long as a multi-channel model's inputs is taken for the channels.

    Args:
        shape: the layer's data shape.
        rgb: whether napari shows the layer as RGB(A) (channels last).
        spatial_dims: the model's.
        in_channels: the model's.

    Raises:
        BiounetError: for data with fewer axes than the model needs, or more than T, Z, C, Y, X.
    """
    inner = "YXC" if rgb else "YX"
    leading = len(shape) - len(inner)
    channels_first = not rgb and in_channels > 1 and leading >= 1 and shape[0] == in_channels
    rest = leading - channels_first
    named = ("C" if channels_first else "") + "TZ"[max(0, 2 - rest):]
    if rest < spatial_dims - 2 or len(named) != leading:
        raise BiounetError(f"a layer of shape {tuple(shape)}{' (RGB)' if rgb else ''} does not fit a "
                           f"{spatial_dims}D model: expected {'(Z, Y, X)' if spatial_dims == 3 else '(Y, X)'}, "
                           "with time and stack axes before them")
    return named + inner


@dataclass
class Segmentation:
    """A model's result for an image layer, in the layer's own axes (without its channels).

    Attributes:
        probability: float32 probability of the foreground (1 - P(background)) per pixel.
        labels: object ids (an instance model's objects) or class indices (a semantic model's mask).
        instances: whether ``labels`` holds object ids.
        axes: the layer's axes (:func:`layer_axes`), channels included.
        classes: the model's ``(C, *stored)`` probabilities, kept to re-split them into objects
            (:func:`resplit`).
        plan: how the layer's data was split into items.
        scale: the factor the data was resized by for the model (``TileOptions.object_size``).
        object_size: the objects' diameter in the layer's pixels that ``scale`` was chosen for (given or
            estimated); ``None`` without an object size.
        fine: the probabilities on the enlarged grid that an enlarging ``scale``'s objects were found on
            (:attr:`~biounet.infer.stack.Segmented.fine`), kept to re-split them; ``None`` otherwise.
    """

    probability: np.ndarray
    labels: np.ndarray
    instances: bool
    axes: str
    classes: np.ndarray | None = None
    plan: StackPlan | None = None
    scale: float = 1.0
    object_size: float | None = None
    fine: np.ndarray | None = None


def segment(checkpoint: Checkpoint, data: Any, rgb: bool, *, options: TileOptions = TileOptions(),
            instances: InstanceParams | None = None,
            on_progress: Callable[[float], None] | None = None) -> Segmentation:
    """Segments an image layer's data exactly as ``biounet predict`` segments a file holding it.

    Args:
        checkpoint: the model.
        data: the layer's data (any array-like; read whole).
        rgb: whether the layer is RGB(A).
        options: tile, batch size, TTA and device (``None``: the CPU).
        instances: an instance model's post-processing instead of the checkpoint's.
        on_progress: called with the fraction done; an exception raised in it stops the job.

    Raises:
        BiounetError: for data that does not fit the model.
    """
    # Checked before reading anything; a GPU is used only when asked for.
    options = dataclasses.replace(options, device=str(resolve_device(options.device)))
    config = checkpoint.config
    if instances is not None and checkpoint.instances is not None:
        checkpoint = dataclasses.replace(checkpoint, instances=instances)
    array = np.asarray(data)
    axes = layer_axes(array.shape, rgb, config.spatial_dims, config.in_channels)
    plan = plan_stack(axes, array.shape, config.spatial_dims, config.in_channels)
    found = segment_array(checkpoint, array, plan, Path("layer"), options=options,
                          instances=checkpoint.instances is not None, on_progress=on_progress)
    probs, mask, ids = found.probs, found.mask, found.ids
    labels = mask if ids is None else plan.to_stored_order(ids[None])[0]
    foreground = foreground_probability(probs, config.output)
    # The layer's own axes (without channels), the singletons the plan dropped included.
    shape = tuple(n for a, n in zip(axes, array.shape, strict=True) if a != "C")
    return Segmentation(foreground.astype(np.float32, copy=False).reshape(shape), labels.reshape(shape),
                        checkpoint.instances is not None, axes, probs, plan, found.scale, found.object_size,
                        found.fine)


def resplit(result: Segmentation, checkpoint: Checkpoint, params: InstanceParams) -> np.ndarray:
    """An instance model's objects with other post-processing settings, from the probabilities it already
    gave (no second prediction): the labels :func:`segment` would give with ``instances=params``.

    Args:
        result: a :func:`segment` result of ``checkpoint``, an instance model.
        checkpoint: the model that made it.
        params: the seed, foreground and minimum size to split by.

    Raises:
        BiounetError: for a result without probabilities or of a model without objects.
    """
    if result.classes is None or result.plan is None or checkpoint.instances is None:
        raise BiounetError("only an instance model's result can be split into objects again")
    # The sizes are the model's pixels, as the checkpoint's are; the result was made at its scale.
    tuned = dataclasses.replace(checkpoint, instances=params)
    mask = probabilities_to_mask(result.classes, checkpoint.config.output)
    ids = stack_instances(tuned, result.classes, mask, result.plan, result.scale, result.fine)
    return result.plan.to_stored_order(ids[None])[0].reshape(result.labels.shape)


def annotated(labels: np.ndarray, original: np.ndarray | None) -> np.ndarray:
    """Which pixels of a Labels layer are annotations to train on.

    A layer that a Segment run made (``original`` is what the model gave) counts where it was corrected,
    plus :data:`CONTEXT` pixels around each correction; unpainted pixels are not annotated. Any other layer
    is annotated everywhere (0 is background), as a mask drawn by hand is.

    Args:
        labels: the layer's values now.
        original: the model's result it started from, or ``None``.

    Raises:
        BiounetError: for a corrected layer whose shape no longer matches its original.
    """
    if original is None:
        return np.ones(labels.shape, bool)
    if original.shape != labels.shape:
        raise BiounetError(f"the labels' shape {labels.shape} differs from the segmentation they correct "
                           f"{original.shape}")
    changed = labels != original
    return ndimage.binary_dilation(changed, iterations=CONTEXT) if changed.any() else changed


def training_label(labels: np.ndarray, original: np.ndarray | None) -> np.ndarray:
    """A Labels layer as a training label: its values where annotated (:func:`annotated`), else
    :data:`IGNORE`; int32."""
    out = np.asarray(labels).astype(np.int32)
    out[~annotated(out, original)] = IGNORE
    return out


def write_training_pairs(folder: Path, name: str, image: Any, rgb: bool, label: np.ndarray, spatial_dims: int,
                         in_channels: int) -> tuple[Path, Path, int]:
    """Writes an image layer and its training label as TIFF pairs in ``folder/images`` and ``folder/labels``.

    A stack for a 2D model gives one pair per plane that holds annotations.

    Args:
        folder: where the ``images`` and ``labels`` folders go (made if missing).
        name: the file stem.
        image: the image layer's data.
        rgb: whether the layer is RGB(A).
        label: :func:`training_label` of the Labels layer, the image's shape without its channels.
        spatial_dims: the model's.
        in_channels: the model's.

    Returns:
        The images and labels folders and the number of pairs written.

    Raises:
        BiounetError: if the label's shape does not fit the image, or nothing is annotated.
    """
    array = np.asarray(image)
    axes = layer_axes(array.shape, rgb, spatial_dims, in_channels)
    spatial = tuple(n for a, n in zip(axes, array.shape, strict=True) if a != "C")
    if tuple(label.shape) != spatial:
        raise BiounetError(f"the labels' shape {tuple(label.shape)} does not fit the image's {spatial}")
    # Items first, channels last: each item is one file (Y, X[, C]) or (Z, Y, X[, C]).
    inner = ("ZYX" if spatial_dims == 3 else "YX") + ("C" if "C" in axes else "")
    batch = [a for a in axes if a not in inner]
    image_items = np.transpose(array, [axes.index(a) for a in batch + list(inner)])
    label_axes = axes.replace("C", "")
    label_items = np.transpose(label, [label_axes.index(a) for a in batch + [a for a in inner if a != "C"]])
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    count = 0
    for index in np.ndindex(*image_items.shape[:len(batch)]):
        if not (label_items[index] != IGNORE).any():
            continue
        stem = name + "".join(f"_{a.lower()}{i}" for a, i in zip(batch, index, strict=True))
        item = np.ascontiguousarray(image_items[index])
        if "C" in inner:
            photometric = "rgb" if item.shape[-1] in (3, 4) and item.dtype == np.uint8 else "minisblack"
            metadata = {"axes": inner.replace("C", "S") if photometric == "rgb" else inner}
            tifffile.imwrite(images / f"{stem}.tif", item, photometric=photometric, metadata=metadata)
        else:
            tifffile.imwrite(images / f"{stem}.tif", item, metadata={"axes": inner})
        tifffile.imwrite(labels / f"{stem}.tif", label_items[index].astype(np.int32),
                         metadata={"axes": inner.replace("C", "")})
        count += 1
    if not count:
        raise BiounetError("nothing to train on: no pixel of the labels is annotated (paint corrections on a "
                           "Segment result, or use a fully drawn Labels layer)")
    return images, labels, count
