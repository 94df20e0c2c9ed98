"""Overlap-tile prediction of images and volumes of any size with a U-Net."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from biounet.errors import BiounetError
from biounet.geometry import BoxCache, read_mirrored
from biounet.infer.blending import Blender
from biounet.infer.blocks import Block, block_tiles
from biounet.infer.devices import parameter_device, prepare_model, resolve_device
from biounet.infer.tiling import Tile, plan_tiles
from biounet.infer.tta import Transform, averaged, transforms
from biounet.io.axes import StackPlan
from biounet.io.items import ItemView
from biounet.models.checkpoint import Checkpoint
from biounet.models.config import UNetConfig
from biounet.models.normalization import Normalization
from biounet.models.outputs import logits_to_probabilities
from biounet.models.symmetry import TTA
from biounet.models.unet import UNet, prediction_layout

__all__ = ["DEFAULT_TILE", "TileOptions", "TilePredictor", "checked_input", "predict"]

# Larger tiles waste less of the valid network's halo (388^2 of 572^2 input pixels are output at the
# paper's tile, 516^2 of 700^2 at ours), but beyond ~700 px the feature maps outgrow the CPU caches and the
# time per output pixel rises again (measured: base 16, 0.85 us at 572, 0.71 at 700, 1.10 at 1036).
# Tiles shrink for smaller images.
DEFAULT_TILE = {2: 700, 3: 132}


@dataclass(frozen=True)
class TileOptions:
    """How a model is run over an image: tile size, batch size, test-time augmentation, device and the size of
    the image's objects.

    The same settings go from ``biounet predict``, the napari widget and the library's
    :func:`~biounet.infer.files.predict_files` down to every :class:`TilePredictor`, in one piece.

    Attributes:
        tile: network input size per axis (an int for all axes); rounded to a valid size and shrunk for
            small images. Default 700 in 2D (output 516 for a depth-4 valid model), 132 in 3D.
        batch_size: tiles per forward pass; default 1 on the CPU (larger batches only spill the caches
            there) and 4 on a GPU.
        tta: average over the transforms the model was trained to ignore (the 8 rotations/flips in 2D, the
            flips of all axes in 3D, fewer where its augmentation left some out), each undone first;
            ``None`` does what the checkpoint says (its :class:`~biounet.models.symmetry.TTA`, chosen on
            the validation images when it was trained), which is off for a bare :class:`UNet`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``, or ``None`` for the device the model's
            parameters are on (the CPU for a loaded checkpoint). A string, not a ``torch.device``: it is
            what the CLI and the widget hold, and a :class:`~biounet.infer.out_of_core.BlockJob` carrying
            it stays plain data, picklable for Dask and hashable for its per-process cache; it is checked
            and turned into a device (:func:`~biounet.infer.devices.resolve_device`) where a model is placed.
        object_size: the diameter of the image's objects in its pixels: the image is rescaled so that they
            are the size the model was trained on, and the result back (:mod:`biounet.infer.rescale`);
            ``"auto"`` estimates it from a first pass; ``"none"`` predicts the image as it is; ``None`` does
            what the model records (:attr:`~biounet.models.object_size.ObjectSize.estimate`: ``"auto"``, or as
            it is). Taken by :func:`~biounet.infer.stack.segment_array` (files and napari layers) and
            :func:`~biounet.infer.out_of_core.predict_to_store`; the tile-level functions
            here predict the image they are given.
    """

    tile: int | tuple[int, ...] | None = None
    batch_size: int | None = None
    tta: bool | None = None
    device: str | None = None
    object_size: float | str | None = None


def predict(
    model: UNet | Checkpoint,
    image: Any,
    *,
    tile: int | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    overlap: float = 0.25,
    tta: bool | None = None,
    normalization: Normalization | None = None,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    device: str | torch.device | None = None,
    out: Any = None,
    progress: bool = False,
    on_tiles: Callable[[int, int], None] | None = None,
) -> Any:
    """Per-class probabilities for an image of any size, by overlap-tile prediction.

    Args:
        model: a :class:`UNet`, or a :class:`Checkpoint` (whose normalisation and test-time augmentation
            are then the defaults). It is left as it is: inference runs on a prepared copy, so a model in
            training keeps its mode, device, memory layout and layers.
        image: array-like ``(C, *spatial)``, or ``(*spatial)`` for one channel; NumPy, zarr, h5py and
            memory maps work. Only one tile's worth is read at a time.
        tile: see :class:`TileOptions`.
        batch_size: see :class:`TileOptions`.
        overlap: fraction of overlap between tiles of ``same`` models, which are blended with a Gaussian
            importance map. ``valid`` models need no overlap: their tiles abut and the result equals one
            pass over the whole mirror-padded image.
        tta: see :class:`TileOptions`.
        normalization: applied tile by tile with statistics of the whole image; ``None`` uses the
            checkpoint's when ``model`` is one, else feeds the image as it is (already normalised).
        stats: the normalisation's statistics (``normalization.fit`` of another array: the image before it was
            rescaled, say); by default fitted on ``image``.
        device: see :class:`TileOptions`; a ``torch.device`` is taken too.
        out: where to write, any array-like of shape ``(classes, *spatial)`` and float dtype; by default a
            new float32 NumPy array. With blending it is zeroed first and accumulated into.
        progress: show a progress bar over tiles.
        on_tiles: called after every batch of tiles with (tiles done, tiles in all), e.g. by a GUI's
            progress bar; an exception raised in it stops the prediction (a cancel button).

    Returns:
        ``out``, holding probabilities (softmax over classes; sigmoid for one output channel, and per
        channel for a foreground/distance model: see :mod:`biounet.models.outputs`).
    """
    if isinstance(model, Checkpoint):
        normalization = normalization or model.normalization
    image = checked_input(image, _network(model).config)
    options = TileOptions(tile, batch_size, tta, None if device is None else str(device))
    predictor = TilePredictor(model, tuple(int(s) for s in image.shape[1:]), options, overlap=overlap)
    out = _checked_output(out, (predictor.classes, *predictor.plan.image_shape),
                          zeroed=predictor.plan.blend)
    normalization = normalization or Normalization("none")
    stats = normalization.fit(image) if stats is None else stats
    predictor.run(image, out, normalization, stats, progress=progress, on_tiles=on_tiles)
    return out


class TilePredictor:
    """A model made ready to predict images of one shape tile by tile, whole or one block at a time.

    Args:
        model: the network, or a checkpoint (whose test-time augmentation ``options.tta=None`` then
            follows); left as it is (inference runs on a prepared copy).
        image_shape: the spatial shape of the images it will predict.
        options: tile, batch size, TTA and device.
        overlap: see :func:`predict`.

    Attributes:
        plan: the whole image's tile plan; blocks (:mod:`biounet.infer.blocks`) are cut from it.
        classes: output channels.
    """

    def __init__(self, model: UNet | Checkpoint, image_shape: tuple[int, ...], options: TileOptions = TileOptions(),
                 *, overlap: float = 0.25) -> None:
        tta = model.tta if isinstance(model, Checkpoint) else TTA()
        model = _network(model)
        config = model.config
        use_tta = tta.enabled if options.tta is None else options.tta
        symmetry = tta.symmetry if use_tta else "none"
        # Quarter turns need square tiles; 2D TTA plans them.
        square = symmetry in ("dihedral", "turns") and config.spatial_dims == 2
        self.plan = plan_tiles(config, image_shape, _tile_shape(options.tile, config.spatial_dims), overlap,
                               square=square)
        self.classes = config.out_channels
        self.device = parameter_device(model) if options.device is None else resolve_device(options.device)
        self.batch_size = options.batch_size or (1 if self.device.type == "cpu" else 4)
        self._forward = _forward(prepare_model(model, self.device), transforms(config.spatial_dims, symmetry, square))
        self._blender = Blender(self.plan) if self.plan.blend else None

    def run(self, image: Any, out: Any, normalization: Normalization, stats: tuple[np.ndarray, np.ndarray],
            block: Block | None = None, progress: bool = False,
            on_tiles: Callable[[int, int], None] | None = None) -> None:
        """Writes the probabilities of ``block`` (the whole image when ``None``) into ``out``.

        Args:
            image: ``(C, *spatial)`` array-like of the planned shape; only the tiles' regions are read.
            out: ``(classes, *block.shape)`` array-like; for blended (``same``) models it must hold zeros.
            normalization: applied per tile with ``stats``.
            stats: ``normalization.fit`` of the whole image, so that every block is normalised alike.
            block: a block of :func:`~biounet.infer.blocks.plan_blocks` for this plan, or ``None``.
            progress: show a progress bar over tiles.
            on_tiles: see :func:`predict`.
        """
        if block is None:
            tiles, origin = list(self.plan), (0,) * len(self.plan.image_shape)
        else:
            tiles, origin = block_tiles(self.plan, block), block.start
            # A block's tiles overlap by their halos: its input is read once, not chunk by chunk per tile.
            image = BoxCache.for_regions(image, [list(zip(t.input_start, t.input_stop, strict=True))
                                                 for t in tiles])
        done = 0
        with torch.inference_mode(), tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress,
                                          leave=False) as bar:
            for chunk, inputs in _tile_batches(image, tiles, self.batch_size, normalization, stats):
                probabilities = self._forward(torch.from_numpy(inputs).to(self.device, non_blocking=True))
                for t, p in zip(chunk, probabilities.float().cpu().numpy(), strict=True):
                    _write_tile(out, origin, t, p, self._blender)
                bar.update(len(chunk))
                done += len(chunk)
                if on_tiles is not None:
                    on_tiles(done, len(tiles))


def checked_input(image: Any, config: UNetConfig) -> Any:
    """``image`` as ``(C, *spatial)``, checked against the model; a missing channel axis is added per read."""
    dims = config.spatial_dims
    if image.ndim == dims:  # one channel: the axis is added per read, not by reading the array whole
        image = ItemView(image, StackPlan(tuple(int(n) for n in image.shape), "ZYX"[-dims:], dims), ())
    if image.ndim != dims + 1 or image.shape[0] != config.in_channels:
        raise BiounetError(
            f"image of shape {tuple(image.shape)} does not fit a model with {config.in_channels} channel(s) "
            f"and {dims} spatial dimensions; expected (C={config.in_channels}, {', '.join('*' * dims)})"
        )
    if min(int(s) for s in image.shape[1:]) < 1:
        raise BiounetError(f"image of shape {tuple(image.shape)} is empty")
    return image


def _tile_shape(tile: int | tuple[int, ...] | None, dims: int) -> tuple[int, ...]:
    if tile is None:
        tile = DEFAULT_TILE[dims]
    return tile if isinstance(tile, tuple) else (tile,) * dims


def _checked_output(out: Any, shape: tuple[int, ...], zeroed: bool) -> Any:
    """A new float32 array of ``shape``, or ``out`` checked to have it (and zeroed to accumulate into)."""
    if out is None:
        return np.zeros(shape, np.float32)
    if tuple(out.shape) != shape:
        raise BiounetError(f"output array has shape {tuple(out.shape)}, expected {shape}")
    if zeroed:
        out[...] = 0
    return out


def _network(model: UNet | Checkpoint) -> UNet:
    return model.model if isinstance(model, Checkpoint) else model


def _forward(model: UNet, group: list[Transform]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Probabilities for a batch of input tiles, averaged over the test-time transforms in ``group``."""
    dims = model.config.spatial_dims
    memory_format = prediction_layout(dims)

    def run(batch: torch.Tensor) -> torch.Tensor:
        return logits_to_probabilities(model(batch.contiguous(memory_format=memory_format)), model.config.output)

    if len(group) == 1:
        return run
    return lambda batch: averaged(run, batch, group)


def _tile_batches(image: Any, tiles: list[Tile], batch_size: int, normalization: Normalization,
                  stats: tuple[np.ndarray, np.ndarray]) -> Iterator[tuple[list[Tile], np.ndarray]]:
    """Batches of tiles with their normalised, mirror-padded input regions, read one batch at a time."""
    for first in range(0, len(tiles), batch_size):
        chunk = tiles[first:first + batch_size]
        inputs = np.stack([
            normalization.apply(read_mirrored(image, list(zip(t.input_start, t.input_stop, strict=True))), *stats)
            for t in chunk
        ])
        if not np.isfinite(inputs).all():
            raise BiounetError("image contains NaN or infinite values")
        yield chunk, inputs


def _write_tile(out: Any, origin: tuple[int, ...], tile: Tile, probabilities: np.ndarray,
                blender: Blender | None) -> None:
    """Writes the part of a tile's output that lies in ``out`` (whose first pixel is ``origin`` in image
    coordinates), or adds it weighted when blending."""
    lo = [max(a, o) for a, o in zip(tile.output_start, origin, strict=True)]
    hi = [min(b, o + n) for b, o, n in zip(tile.output_stop, origin, out.shape[1:], strict=True)]
    if any(a >= b for a, b in zip(lo, hi, strict=True)):
        return
    local = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, tile.output_start, strict=True))
    region = (slice(None), *(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin, strict=True)))
    crop = probabilities[(slice(None),) + local]
    if blender is None:
        out[region] = crop
    else:
        out[region] = out[region] + crop * blender.weights(tile)[local]
