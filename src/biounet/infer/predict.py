"""Overlap-tile prediction of images and volumes of any size with a U-Net."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from biounet.errors import BiounetError
from biounet.geometry import read_mirrored
from biounet.infer.blending import Blender
from biounet.infer.fusion import fold_batch_norm, has_foldable_batch_norm
from biounet.infer.tiling import plan_tiles
from biounet.infer.tta import averaged, transforms
from biounet.models.normalization import Normalization
from biounet.models.unet import UNet

# Larger tiles waste less of the valid network's halo (388^2 of 572^2 input pixels are output at the
# paper's tile, 516^2 of 700^2 at ours), but beyond ~700 px the feature maps outgrow the CPU caches and the
# time per output pixel rises again (measured: base 16, 0.85 us at 572, 0.71 at 700, 1.10 at 1036).
# Tiles shrink for smaller images.
DEFAULT_TILE = {2: 700, 3: 132}


def logits_to_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes, or a sigmoid for single-output models."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when it is available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BiounetError("--device cuda was asked for, but no CUDA device is available")
    return resolved


def prepare_model(model: UNet, device: torch.device) -> UNet:
    """The model for inference on ``device``: eval mode, channels-last (oneDNN/cuDNN's fastest layout), and
    batch norms folded into their convolutions (in a copy, so a model being trained keeps its layers)."""
    model.eval()
    if has_foldable_batch_norm(model):
        model = fold_batch_norm(model)  # type: ignore[assignment]
    memory_format = torch.channels_last if model.config.spatial_dims == 2 else torch.channels_last_3d
    model.to(device=device)
    model.to(memory_format=memory_format)  # type: ignore[call-overload]
    return model


def predict(
    model: UNet,
    image: Any,
    *,
    tile: int | tuple[int, ...] | None = None,
    batch_size: int | None = None,
    overlap: float = 0.25,
    tta: bool = False,
    normalization: Normalization | None = None,
    device: str | torch.device | None = None,
    out: Any = None,
    progress: bool = False,
) -> Any:
    """Per-class probabilities for an image of any size, by overlap-tile prediction.

    Args:
        model: a :class:`UNet`; it is put in eval mode on ``device``.
        image: array-like ``(C, *spatial)``, or ``(*spatial)`` for one channel; NumPy, zarr, h5py and
            memory maps work. Only one tile's worth is read at a time.
        tile: network input size per axis (an int for all axes); rounded to a valid size and shrunk
            for small images. Default 700 in 2D (output 516 for a depth-4 valid model), 132 in 3D.
        batch_size: tiles per forward pass; default 1 on the CPU (larger batches only spill the caches
            there) and 4 on a GPU.
        overlap: fraction of overlap between tiles of ``same`` models, which are blended with a Gaussian
            importance map. ``valid`` models need no overlap: their tiles abut and the result equals one
            pass over the whole mirror-padded image.
        tta: average over the 8 rotations/flips in 2D (the flips of all axes in 3D), each undone first.
        normalization: applied tile by tile with statistics of the whole image; ``None`` feeds the
            image as it is (it must then already be normalised).
        device: ``"cpu"``, ``"cuda"``, a torch device, or ``None`` for CUDA when available.
        out: where to write, any array-like of shape ``(classes, *spatial)`` and float dtype; by default a
            new float32 NumPy array. With blending it is zeroed first and accumulated into.
        progress: show a progress bar over tiles.

    Returns:
        ``out``, holding probabilities (softmax over classes; sigmoid for one output channel).
    """
    config = model.config
    dims = config.spatial_dims
    if image.ndim == dims:
        image = image[None]
    if image.ndim != dims + 1 or image.shape[0] != config.in_channels:
        raise BiounetError(
            f"image of shape {tuple(image.shape)} does not fit a model with {config.in_channels} channel(s) "
            f"and {dims} spatial dimensions; expected (C={config.in_channels}, {', '.join('*' * dims)})"
        )
    spatial = tuple(int(s) for s in image.shape[1:])
    if min(spatial) < 1:
        raise BiounetError(f"image of shape {tuple(image.shape)} is empty")
    if tile is None:
        tile = DEFAULT_TILE[dims]
    tile_shape = tile if isinstance(tile, tuple) else (tile,) * dims
    plan = plan_tiles(config, spatial, tile_shape, overlap, square=tta and dims == 2)
    if out is None:
        out = np.zeros((config.out_channels, *spatial), np.float32)
    elif tuple(out.shape) != (config.out_channels, *spatial):
        raise BiounetError(f"output array has shape {tuple(out.shape)}, expected "
                           f"{(config.out_channels, *spatial)}")
    elif plan.blend:
        out[...] = 0

    torch_device = resolve_device(device)
    if batch_size is None:
        batch_size = 1 if torch_device.type == "cpu" else 4
    model = prepare_model(model, torch_device)
    norm = normalization or Normalization("none")
    stats = norm.fit(image)
    group = transforms(dims, rotations=True) if tta else []
    blender = Blender(plan) if plan.blend else None
    memory_format = torch.channels_last if dims == 2 else torch.channels_last_3d

    def run(batch: torch.Tensor) -> torch.Tensor:
        return logits_to_probabilities(model(batch.contiguous(memory_format=memory_format)))

    tiles = list(plan)
    bar = tqdm(total=len(tiles), desc="tiles", unit="tile", disable=not progress, leave=False)
    with torch.inference_mode():
        for first in range(0, len(tiles), batch_size):
            chunk = tiles[first:first + batch_size]
            inputs = np.stack([
                norm.apply(read_mirrored(image, list(zip(t.input_start, t.input_stop, strict=True))), *stats)
                for t in chunk
            ])
            _check_finite(inputs)
            batch = torch.from_numpy(inputs).to(torch_device, non_blocking=True)
            probs = averaged(run, batch, group) if group else run(batch)
            probs_np = probs.float().cpu().numpy()
            for t, p in zip(chunk, probs_np, strict=True):
                region = (slice(None), *t.output_slices())
                extent = tuple(slice(0, b - a) for a, b in zip(t.output_start, t.output_stop, strict=True))
                crop = p[(slice(None),) + extent]
                if blender is None:
                    out[region] = crop
                else:
                    out[region] = out[region] + crop * blender.weights(t)
            bar.update(len(chunk))
    bar.close()
    return out


def _check_finite(inputs: np.ndarray) -> None:
    if not np.isfinite(inputs).all():
        raise BiounetError("image contains NaN or infinite values")


def probabilities_to_mask(probabilities: np.ndarray) -> np.ndarray:
    """Class indices from ``(C, *spatial)`` probabilities: argmax, or > 0.5 for a single channel."""
    if probabilities.shape[0] == 1:
        return (probabilities[0] > 0.5).astype(np.uint8)
    mask = np.argmax(probabilities, axis=0)
    return mask.astype(np.uint8 if probabilities.shape[0] <= 256 else np.uint16)
