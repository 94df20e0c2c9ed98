"""Predictions written block by block into a zarr store, with a record of the blocks that are done.

``<stem>.zarr`` (zarr format 2, readable by zarr 2 and 3, napari and Fiji's n5/zarr readers) holds:

- ``prob/0``: the class probabilities, ``(T, C, Z, Y, X)`` with the axes the input has (OME-Zarr 0.4
  order: time, channel, space), float32, float16, or uint8 (``round(255 p)``);
- ``mask/0``: the class indices, ``(T, Z, Y, X)`` likewise, uint8 (uint16 beyond 256 classes); for a
  foreground/distance model, its foreground above 0.5;
- ``blocks``: the completion record, one uint8 per (item, block), set to 1 after the block's data.

``prob`` and ``mask`` are OME-Zarr images (``multiscales`` with the axes and the input's voxel size as the
scale). Their chunks never straddle a block, so blocks written at once by different processes never touch
the same chunk, and the record is one chunk per block for the same reason. A block whose process died while
writing it is not marked, and is written again when the same command is run again: the store's ``biounet``
attribute holds the job (input, model, settings); a store from a different job is replaced.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError
from biounet.infer.blocks import Block
from biounet.models.config import OutputKind
from biounet.models.outputs import probabilities_to_mask
from biounet.optional import optional_import

PROB_DTYPES = ("float32", "float16", "uint8")
# Chunks of at most this edge (per spatial axis, in 2D; its cube root's worth in 3D): viewers fetch a screen
# without decoding a whole block.
_CHUNK_VALUES = 1024 * 1024


@dataclass(frozen=True)
class StoreLayout:
    """What a prediction store holds, in the canonical order (time, then space).

    Attributes:
        batch_axes: letters of the axes iterated over (``T``, ``Z`` of a stack for a 2D model), in TZ order.
        spatial_axes: the model's spatial axes (``YX`` or ``ZYX``).
        batch_shape: their sizes.
        spatial_shape: their sizes.
        classes: probability channels.
        block_shape: the block grid's block size.
        spacing: the voxel size of each batch and spatial axis (1 for time).
        output: the model's ``UNetConfig.output``, which says how the mask comes from the probabilities.
    """

    batch_axes: str
    spatial_axes: str
    batch_shape: tuple[int, ...]
    spatial_shape: tuple[int, ...]
    classes: int
    block_shape: tuple[int, ...]
    spacing: tuple[float, ...]
    output: OutputKind = "classes"

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.spatial_shape, self.block_shape, strict=True))


class PredictionStore:
    """A ``<stem>.zarr`` prediction store, created or resumed by :meth:`open`, attached to by workers.

    Args:
        path: the store.
        layout: what it holds.
        prob_dtype: one of :data:`PROB_DTYPES`.
    """

    def __init__(self, path: Path, layout: StoreLayout, prob_dtype: str) -> None:
        self.path, self.layout, self.prob_dtype = path, layout, prob_dtype
        zarr = optional_import("zarr", "writing .zarr outputs", path)
        root = zarr.open_group(str(path), mode="r+")
        self._prob, self._mask, self._done = root["prob/0"], root["mask/0"], root["blocks"]

    @classmethod
    def open(cls, path: Path, layout: StoreLayout, prob_dtype: str, job: dict[str, Any]) -> PredictionStore:
        """The store at ``path``: resumed if it was made for the same ``job``, else created anew.

        Args:
            path: ``<stem>.zarr``.
            layout: what it holds.
            prob_dtype: one of :data:`PROB_DTYPES`.
            job: what makes the output (input, its shape, model digest, tile, TTA, ...), all JSON values.

        Raises:
            BiounetError: naming ``path``, if something other than a prediction store is there: it is never
                replaced (it may be the input itself, or any user's file or folder).
        """
        if prob_dtype not in PROB_DTYPES:
            raise BiounetError(f"unknown probability dtype {prob_dtype!r}; use {', '.join(PROB_DTYPES)}")
        zarr = optional_import("zarr", "writing .zarr outputs", path)
        record = {"job": job, "prob_dtype": prob_dtype, "block_shape": list(layout.block_shape)}
        if path.exists():
            try:
                found = zarr.open_group(str(path), mode="r").attrs.get("biounet")
            except Exception:
                found = None
            if found == record:
                return cls(path, layout, prob_dtype)
            if not _is_prediction_store(path):
                raise BiounetError("exists and is not a biounet prediction store, which is all an output may "
                                   "replace; choose another output", path)
            shutil.rmtree(path)
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        _create_image(root, "prob", (*_time(layout), layout.classes, *_space(layout)),
                      (*(1 for _ in _time(layout)), layout.classes, *_chunks(layout)), prob_dtype,
                      *_axes_and_scale(layout, channel=True))
        mask_dtype = "uint8" if layout.classes <= 256 else "uint16"
        _create_image(root, "mask", (*_time(layout), *_space(layout)), (*(1 for _ in _time(layout)),
                      *_chunks(layout)), mask_dtype, *_axes_and_scale(layout, channel=False))
        grid = (*layout.batch_shape, *layout.grid)
        _create_array(root, "blocks", grid, (1,) * len(grid), "uint8")
        root.attrs["biounet"] = record  # last: a store without it is an unfinished creation, made again
        return cls(path, layout, prob_dtype)

    def pending(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """``(item index, block index)`` of every block not yet written, items in order."""
        done = np.asarray(self._done[...])
        nb = len(self.layout.batch_shape)
        return [(tuple(int(i) for i in index[:nb]), tuple(int(i) for i in index[nb:]))
                for index in np.argwhere(done == 0)]

    def write(self, item: tuple[int, ...], block: Block, probabilities: np.ndarray) -> None:
        """Stores one block's ``(classes, *block.shape)`` probabilities and mask, then marks it done.

        Args:
            item: the block's item, an index into ``layout.batch_shape`` (canonical order).
            block: the block.
            probabilities: float32 probabilities of the block.
        """
        mask = probabilities_to_mask(probabilities, self.layout.output)
        prob = _quantised(probabilities, self.prob_dtype)
        space = block.slices()
        prob_key, mask_key = self._keys(item, space)
        self._prob[prob_key] = prob
        self._mask[mask_key] = mask.astype(self._mask.dtype)
        self._done[tuple(item) + tuple(block.index)] = 1

    def read(self, item: tuple[int, ...], space: tuple[slice, ...]) -> np.ndarray:
        """A region's ``(classes, *region)`` float32 probabilities, as written (a uint8 store's scaled back).

        Args:
            item: an index into ``layout.batch_shape`` (canonical order).
            space: the region, a slice per spatial axis.
        """
        return dequantised(self._prob[self._keys(item, space)[0]])

    def _keys(self, item: tuple[int, ...], space: tuple[slice, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Where a block goes in ``prob`` and ``mask``: time, (channel,) then Z of a stack and the block."""
        layout = self.layout
        values = dict(zip(layout.batch_axes, item, strict=True))
        time = (values["T"],) if "T" in values else ()
        stack_z = (values["Z"],) if "Z" in values else ()
        return (*time, slice(None), *stack_z, *space), (*time, *stack_z, *space)


def _is_prediction_store(path: Path) -> bool:
    """Whether ``path`` is a folder holding a zarr 2 group of a prediction store's members (or fewer, as a
    creation that did not finish leaves)."""
    members = {"prob", "mask", "blocks", "instances", ".zgroup", ".zattrs"}
    try:
        return (path / ".zgroup").is_file() and {p.name for p in path.iterdir()} <= members
    except OSError:
        return False


def _time(layout: StoreLayout) -> tuple[int, ...]:
    return layout.batch_shape[:1] if layout.batch_axes.startswith("T") else ()


def _space(layout: StoreLayout) -> tuple[int, ...]:
    """Sizes of the space axes: a stack's Z, then the model's spatial axes."""
    stack_z = layout.batch_shape[layout.batch_axes.index("Z"):][:1] if "Z" in layout.batch_axes else ()
    return (*stack_z, *layout.spatial_shape)


def _chunks(layout: StoreLayout) -> tuple[int, ...]:
    """Chunks of the space axes: one plane of a stack, and an even division of the block per axis."""
    stack_z = (1,) if "Z" in layout.batch_axes else ()
    edge = max(16, round(_CHUNK_VALUES ** (1 / len(layout.block_shape))))
    chunks = []
    for b in layout.block_shape:
        parts = -(-b // edge)
        while b % parts:
            parts += 1
        chunks.append(b // parts)
    return (*stack_z, *chunks)


def _axes_and_scale(layout: StoreLayout, channel: bool) -> tuple[list[dict[str, str]], list[float]]:
    """OME-Zarr axes (time, channel, then space: a stack's Z and the model's axes) and their scale."""
    sizes = dict(zip(layout.batch_axes + layout.spatial_axes, layout.spacing, strict=True))
    letters = ("T" if layout.batch_axes.startswith("T") else "") + ("C" if channel else "") + \
        ("Z" if "Z" in layout.batch_axes else "") + layout.spatial_axes
    kinds = {"T": "time", "C": "channel"}
    axes = [{"name": a.lower(), "type": kinds.get(a, "space")} for a in letters]
    return axes, [1.0 if a in kinds else float(sizes[a]) for a in letters]


def _create_image(root: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
                  axes: list[dict[str, str]], scale: list[float]) -> None:
    group = root.create_group(name)
    _create_array(group, "0", shape, chunks, dtype)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
    }]


def _create_array(group: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str) -> Any:
    # zarr 3 names it create_array; zarr 2 create_dataset (deprecated in 3).
    create = getattr(group, "create_array", None) or group.create_dataset
    return create(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)


def _quantised(probabilities: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)
    return probabilities.astype(dtype)


def dequantised(stored: np.ndarray) -> np.ndarray:
    """Probabilities read from a store's ``prob/0`` as float32: a uint8 store's ``round(255 p)`` scaled back."""
    values = np.asarray(stored)
    return values / np.float32(255.0) if values.dtype == np.uint8 else values.astype(np.float32, copy=False)


def create_image_like(root: Any, name: str, like: str, dtype: str) -> Any:
    """A new OME-Zarr image ``name/0`` in ``root`` with the shape, chunks, axes and scale of ``like/0``
    (replacing an earlier ``name``), zeros of ``dtype``."""
    source = root[f"{like}/0"]
    if name in root:
        del root[name]
    scales = [dict(s, name=name) for s in root[like].attrs["multiscales"]]
    group = root.create_group(name)
    array = _create_array(group, "0", tuple(source.shape), tuple(source.chunks), dtype)
    group.attrs["multiscales"] = scales
    return array
