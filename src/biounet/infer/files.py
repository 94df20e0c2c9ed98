"""Files in, outputs out: the workflow behind ``biounet predict``.

:func:`predict_files` checks every input first (readable, axes, channels, which outputs its format can
hold), so that a bad file fails before anything is written. Then each input goes one of two ways:

- tiff (NIfTI for NIfTI inputs): the file is read whole, segmented item by item
  (:func:`~biounet.infer.stack.segment_array`, the step napari layers use too) and its outputs written
  beside each other: ``<stem>_prob``, ``<stem>_mask``, ``<stem>_instances``, ``<stem>_objects.csv``;
- zarr: the input is read region by region and predicted block by block into ``<stem>.zarr``
  (:func:`~biounet.infer.out_of_core.predict_to_store`, in this process or on Dask), then its objects are
  found block by block (:func:`~biounet.infer.instances.instances_to_store`). ``out_format="auto"`` takes
  this way for probabilities of :data:`ZARR_FROM_BYTES` or more.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from biounet.errors import BiounetError
from biounet.infer.devices import resolve_device
from biounet.infer.instances import instances_to_store, nearest_instances
from biounet.infer.objects import object_table, write_object_table
from biounet.infer.out_of_core import predict_to_store
from biounet.infer.predict import TileOptions
from biounet.infer.rescale import object_size_from_pixel_size, planned_scale
from biounet.infer.stack import check_channels, segment_array
from biounet.io.axes import StackPlan, plan_stack
from biounet.io.channels import channels_note
from biounet.io.files import DEAD_LINK, expand_inputs, file_stem, is_dead_link
from biounet.io.readers import image_meta
from biounet.io.stored import probe_stored, read_stored
from biounet.io.writers import write_instances, write_prediction
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.pretrained import resolve_model

OUTPUTS = ("prob", "mask", "instances", "objects")
"""What :func:`predict_files` can write per input, in the order it writes them."""
# Probabilities (float32) from this size on are written to zarr by out_format "auto".
ZARR_FROM_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class Written:
    """What :func:`predict_files` wrote for one input.

    Attributes:
        input: the input, as listed from the arguments.
        paths: the files written, in :data:`OUTPUTS` order; for a zarr output, the store alone.
        blocks: for a zarr output, ``(blocks computed now, blocks in all)``; ``None`` for files.
        objects: for a zarr output with instances, the number of objects in ``instances/0``.
        skipped: outputs of the model's default set that the output format does not hold (the objects table
            of a zarr output).
        scale: the factor the image was resized by for the model (1.0: as it is).
        object_size: the objects' diameter in the image's pixels that ``scale`` was chosen for (given, or
            estimated by ``"auto"``); ``None`` without an object size.
        note: what the user should know of how the input was read (separate channels read as a colour
            picture: :func:`~biounet.io.channels.channels_note`), or ``None``.
    """

    input: Path
    paths: tuple[Path, ...]
    blocks: tuple[int, int] | None = None
    objects: int | None = None
    skipped: tuple[str, ...] = ()
    scale: float = 1.0
    object_size: float | None = None
    note: str | None = None


def predict_files(model: str | Path, inputs: Sequence[str | Path], out: str | Path, *,
                  outputs: Sequence[str] | None = None, options: TileOptions = TileOptions(),
                  axes: str | None = None, channel: int | None = None, out_format: str = "auto",
                  prob_dtype: str = "float32", block: int | None = None, dask: str | None = None,
                  pixel_size: float | None = None,
                  progress: bool = True, on_written: Callable[[Written], None] | None = None) -> list[Written]:
    """Segments image files with a model and writes the outputs of each (what ``biounet predict`` does).

    Args:
        model: a checkpoint file (``.pt``, or a ``.zip`` package made by ``biounet export``) or a shipped
            model's name. A file rather than a loaded checkpoint: out-of-core workers load it themselves.
        inputs: files, folders, globs, or ``FILE.h5:DATASET`` / ``STORE.zarr:ARRAY``
            (:func:`~biounet.io.files.expand_inputs`).
        out: the output folder; for a zarr output of a single input, ``OUT.zarr`` names the store itself.
        outputs: some of :data:`OUTPUTS`; default all four for an instance model, ``prob`` and ``mask``
            otherwise.
        options: tile, batch size, TTA, device (``None``: the CPU) and the inputs' object size in pixels
            (or ``"auto"``), which rescales them to the size of the model's objects; ``None`` is the model's
            default (``"auto"`` for the shipped ``nuclei``), ``"none"`` the inputs as they are.
        axes: the inputs' axes in stored order, for files whose metadata is missing or wrong.
        channel: segment only this channel of each input (from 0; e.g. the nuclear stain of a
            fluorescence image of several), as an image of one channel.
        out_format: ``tiff``, ``zarr`` or ``auto`` (zarr from :data:`ZARR_FROM_BYTES` of probabilities).
        prob_dtype: zarr outputs' probability dtype: ``float32``, ``float16`` or ``uint8``.
        block: zarr outputs' block edge in output pixels/voxels (default 2048 in 2D, 256 in 3D).
        dask: compute zarr outputs' blocks on Dask: ``local:N`` or a scheduler's address.
        pixel_size: the inputs' pixel size in the unit of the model's training files, instead of an object
            size: the objects are taken to be as large physically as the model's.
        progress: show progress bars.
        on_written: called with each input's :class:`Written` as soon as it is done.

    Returns:
        Per input, in order, what was written.

    Raises:
        BiounetError: for a bad model, device, output name or input; nothing is written then.
    """
    # Checked before reading anything; a GPU is used only when asked for.
    options = replace(options, device=str(resolve_device(options.device)))
    model_path = resolve_model(model)
    checkpoint = load_checkpoint(model_path)
    if pixel_size is not None:
        if options.object_size is not None:
            raise BiounetError("give an object size or a pixel size, not both")
        options = replace(options, object_size=object_size_from_pixel_size(checkpoint.object_size, pixel_size))
    planned_scale(checkpoint.object_size, options.object_size)  # a bad size fails before anything is written
    run = _Run(model_path, checkpoint, _chosen(outputs), options, axes, channel, prob_dtype, block, dask, progress)
    out = Path(out)
    files = expand_inputs([str(i) for i in inputs])
    probed = {path: run.probe(path, out_format) for path in files}
    formats = {path: chosen for path, (chosen, _) in probed.items()}
    if dask is not None and "zarr" not in formats.values():
        raise BiounetError("--dask computes zarr outputs: add --out-format zarr")
    single_store = out.suffix.lower() == ".zarr" and len(files) == 1 and formats[files[0]] == "zarr"
    if not single_store:
        if is_dead_link(out):
            raise BiounetError(f"the output folder is {DEAD_LINK}", out)
        if out.exists() and not out.is_dir():
            raise BiounetError("the output folder is a file", out)
        out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(files, desc="images", unit="img", disable=not progress or len(files) < 2):
        if formats[path] == "tiff":
            written.append(run.to_files(path, out))
        else:
            written.append(run.to_store(path, out if single_store else out / f"{file_stem(path)}.zarr"))
        written[-1] = replace(written[-1], note=probed[path][1])
        if on_written is not None:
            on_written(written[-1])
    return written


@dataclass(frozen=True)
class _Run:
    """One :func:`predict_files` call's model and settings, applied to each input."""

    model_path: Path
    checkpoint: Checkpoint
    chosen: tuple[str, ...] | None  # None: the model's defaults
    options: TileOptions
    axes: str | None
    channel: int | None
    prob_dtype: str
    block: int | None
    dask: str | None
    progress: bool

    @property
    def outputs(self) -> tuple[str, ...]:
        if self.chosen is not None:
            return self.chosen
        return OUTPUTS if self.checkpoint.instances is not None else ("prob", "mask")

    def probe(self, path: Path, wanted: str) -> tuple[str, str | None]:
        """``tiff`` or ``zarr`` for ``path``, after checking that the model can read it, and a note on how it
        reads its channels (:func:`~biounet.io.channels.channels_note`)."""
        config = self.checkpoint.config
        stored = probe_stored(path, config.spatial_dims, self.axes)
        plan = plan_stack(stored.axes, stored.shape, config.spatial_dims, config.in_channels, path, self.channel)
        check_channels(plan, config.in_channels, path)
        chosen = _out_format(wanted, plan, config.out_channels)
        if chosen == "zarr":
            self.check_zarr_outputs(path)
        return chosen, channels_note(stored.colour, plan.channels, config.in_channels)

    def check_zarr_outputs(self, path: Path) -> None:
        """Fails for outputs a zarr store does not hold (prob and mask always, instances for instance models
        and models of one or two classes)."""
        if "objects" in (self.chosen or ()):
            raise BiounetError("zarr outputs hold prob, mask and instances; objects need --out-format tiff", path)
        if "instances" in (self.chosen or ()) and self.checkpoint.instances is None \
                and self.checkpoint.config.out_channels > 2:
            raise BiounetError("zarr instances are made for instance models and models of one or two classes; "
                               "use --out-format tiff for the components of each class", path)

    def to_store(self, path: Path, store: Path) -> Written:
        """Predicts ``path`` block by block into ``store``, then its objects if they are wanted.

        An input enlarged for the model has its objects found on the enlarged grid, as in memory
        (:func:`~biounet.infer.stack.stack_instances`): from the model's own prediction there, a second store in
        a temporary folder beside ``store`` (float32, ``scale**2`` times the pixels) that ``store`` is resampled
        from, brought back by nearest neighbour (:func:`~biounet.infer.instances.nearest_instances`).
        """
        wanted = "instances" in self.outputs
        params, output = self.checkpoint.instances, self.checkpoint.config.output
        store.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{store.name}-", dir=store.parent) as tmp:
            fine = Path(tmp) / "enlarged.zarr" if wanted else None
            run = predict_to_store(path, self.model_path, store, axes=self.axes, channel=self.channel,
                                   options=self.options, prob_dtype=self.prob_dtype, block=self.block,
                                   scheduler=self.dask, progress=self.progress, fine=fine)
            objects = None
            if fine is not None and run.scale > 1.0:
                instances_to_store(fine, params, output)
                objects = nearest_instances(fine, store)
            elif wanted:
                # The post-processing's sizes are the model's pixels; the store is on the input's grid.
                objects = instances_to_store(store, params, output, run.scale)
        skipped = ("objects",) if self.chosen is None and "objects" in self.outputs else ()
        return Written(path, (store,), (run.computed, run.total), objects, skipped, run.scale, run.object_size)

    def to_files(self, path: Path, out: Path) -> Written:
        """Reads ``path`` whole, segments it and writes its outputs into ``out``."""
        config = self.checkpoint.config
        array, stored = read_stored(path, config.spatial_dims, self.axes)
        plan = plan_stack(stored.axes, stored.shape, config.spatial_dims, config.in_channels, path, self.channel)
        outputs = self.outputs
        found = segment_array(self.checkpoint, array, plan, path, options=self.options,
                              instances="instances" in outputs or "objects" in outputs)
        probs, mask, ids = found.probs, found.mask, found.ids
        meta = image_meta(path, stored, plan)
        stem = file_stem(path)
        maps = [o for o in outputs if o in ("prob", "mask")]
        written = write_prediction(out, stem, probs, mask, meta, plan.out_axes, maps) if maps else []
        if ids is not None and "instances" in outputs:
            written.append(write_instances(out, stem, plan.to_stored_order(ids[None])[0], meta, plan.out_axes))
        if ids is not None and "objects" in outputs:
            # Items first: the objects table measures each plane of a stack on its own.
            sizes = dict(zip(plan.axes, stored.spacing, strict=True))
            table = object_table(ids, _raw_items(array, plan, config.in_channels),
                                 tuple(sizes[a] for a in plan.spatial_axes), plan.batch_axes)
            written.append(out / f"{stem}_objects.csv")
            write_object_table(written[-1], table)
        return Written(path, tuple(written), scale=found.scale, object_size=found.object_size)


def _chosen(outputs: Sequence[str] | None) -> tuple[str, ...] | None:
    """``outputs`` in :data:`OUTPUTS` order, checked; ``None`` stays (the model's defaults)."""
    if outputs is None:
        return None
    unknown = sorted(set(outputs) - set(OUTPUTS))
    if unknown or not outputs:
        raise BiounetError(f"outputs must be some of {', '.join(OUTPUTS)}, got {', '.join(outputs) or 'none'}")
    return tuple(o for o in OUTPUTS if o in outputs)


def _out_format(wanted: str, plan: StackPlan, classes: int) -> str:
    """``tiff`` or ``zarr`` for ``wanted``: ``auto`` is zarr from :data:`ZARR_FROM_BYTES` of probabilities."""
    if wanted not in ("auto", "tiff", "zarr"):
        raise BiounetError(f"unknown output format {wanted!r}; use auto, tiff or zarr")
    if wanted != "auto":
        return wanted
    values = classes * int(np.prod(plan.out_shape, dtype=np.int64))
    return "zarr" if values * 4 >= ZARR_FROM_BYTES else "tiff"


def _raw_items(array: np.ndarray, plan: StackPlan, in_channels: int) -> np.ndarray:
    """The stored image as ``(C, *plan.batch_shape, *plan.spatial_shape)``, intensities untouched.

    Channels are the file's, all of them where the model segments one (``plan.channel``), except that a
    fourth channel that the model takes for alpha (RGBA for a 1- or 3-channel model, see
    :func:`~biounet.io.channels.match_channels`) is left out.
    """
    alpha = plan.channel is None and plan.channels == 4 and in_channels in (1, 3)
    plan = replace(plan, channel=None)
    channels = 3 if alpha else plan.channels
    raw = np.empty((channels, *plan.batch_shape, *plan.spatial_shape), array.dtype)
    for index, item in plan.items(array):
        region: tuple[slice | int, ...] = (slice(None), *index)
        raw[region] = item[:channels]
    return raw
