"""Deep supervision (nnU-Net): a loss on each of the U-Net's outputs, each against the target at its resolution.

:meth:`biounet.models.unet.UNet.forward_deep` returns the full-resolution logits and those of auxiliary heads
on lower expanding levels. Output ``l`` has stride ``s_l`` (``UNetConfig.deep_output_strides``) and covers
``shape_l * s_l`` input pixels centred on the input's centre: every convolution and crop of the network is
symmetric and every pooling divides its input. So its target is the training patch (as large as the input
tile, centred on it) centre-cropped to that footprint, then one pixel per ``s_l`` block: the block's centre,
or for an even stride the pixel just past it, which is what nearest-neighbour resizing (``nearest-exact``)
and nnU-Net's order-0 downsampling of the segmentation pick. Sampling (rather than averaging) keeps every
value a class id or the ignore value, so ignored pixels stay ignored at every level; the weight map is
sampled at the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from biounet.errors import BiounetError
from biounet.models.config import Shape


def deep_supervision_weights(outputs: int) -> tuple[float, ...]:
    """nnU-Net's weights for ``outputs`` outputs, full resolution first: ``1 / 2^l``, normalised to sum 1.

    nnU-Net also gives its lowest-resolution output weight 0, because it puts a head on every expanding
    level, the one just above the bottom included. Here the number of heads is chosen
    (``UNetConfig.deep_supervision``), so every head asked for counts; ``deep_supervision = depth - 2``
    gives nnU-Net's set of weighted outputs.

    Args:
        outputs: the full-resolution output and the auxiliary heads, ``>= 1``.
    """
    if outputs < 1:
        raise BiounetError(f"deep supervision needs at least one output, got {outputs}")
    raw = [0.5**level for level in range(outputs)]
    return tuple(w / sum(raw) for w in raw)


def downsample_target(target: torch.Tensor, shape: Shape, stride: Shape) -> torch.Tensor:
    """The pixels of ``target`` that an output of spatial ``shape`` and ``stride`` is trained on.

    Args:
        target: ``(N, *S)`` labels or weights of the whole patch, centred on the network's input.
        shape: the output's spatial shape.
        stride: input pixels per output pixel, per axis.

    Returns:
        ``(N, *shape)``: from the centre ``shape * stride`` of ``target``, the pixel at offset
        ``stride // 2`` of every ``stride`` block (a strided view, values unchanged).

    Raises:
        BiounetError: if ``target`` is smaller than the footprint, or not centred on it (an odd margin).
    """
    if target.ndim != len(shape) + 1 or len(stride) != len(shape):
        raise BiounetError(f"target of shape {tuple(target.shape)} for an output of spatial shape {tuple(shape)} "
                           f"and stride {tuple(stride)}")
    region: list[slice] = [slice(None)]
    for have, size, step in zip(target.shape[1:], shape, stride, strict=True):
        margin = have - size * step
        if margin < 0 or margin % 2:
            raise BiounetError(f"a target of spatial shape {tuple(target.shape[1:])} does not centre the footprint "
                               f"{tuple(s * t for s, t in zip(shape, stride, strict=True))} of an output of shape "
                               f"{tuple(shape)} and stride {tuple(stride)}")
        start = margin // 2 + step // 2
        region.append(slice(start, start + size * step, step))
    return target[tuple(region)]


class DeepSupervisionLoss(nn.Module):
    """A weighted sum of ``loss`` over the outputs of :meth:`~biounet.models.unet.UNet.forward_deep`.

    Args:
        loss: ``loss(logits, target, weight) -> scalar``, e.g. from :func:`~biounet.losses.build_loss`.
        strides: each output's stride (``UNetConfig.deep_output_strides``), full resolution first.
        weights: each output's weight; default :func:`deep_supervision_weights`.
    """

    def __init__(self, loss: nn.Module, strides: Sequence[Shape], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.strides = tuple(tuple(int(s) for s in stride) for stride in strides)
        self.weights = tuple(float(w) for w in weights) if weights is not None else \
            deep_supervision_weights(len(self.strides))
        if len(self.weights) != len(self.strides):
            raise BiounetError(f"{len(self.weights)} deep supervision weights for {len(self.strides)} outputs")

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor,
                weight: torch.Tensor | None = None, *maps: torch.Tensor) -> torch.Tensor:
        """The scalar loss.

        Args:
            outputs: ``(N, C, *shape_l)`` logits, full resolution first (``forward_deep``'s list).
            target: ``(N, *S)`` class ids (or the ignore value) of the whole patch the input was, at least
                as large as every output's footprint and centred on it.
            weight: ``(N, *S)`` weight map of the same patch, or None.
            maps: further ``(N, *S)`` per-pixel targets of the same patch that ``loss`` takes after the weight
                (a distance model's distance map), sampled as the target is.
        """
        if len(outputs) != len(self.strides):
            raise BiounetError(f"{len(outputs)} outputs for a deep supervision loss of {len(self.strides)}")
        total = torch.zeros((), device=outputs[0].device, dtype=outputs[0].dtype)
        for logits, stride, factor in zip(outputs, self.strides, self.weights, strict=True):
            shape = tuple(logits.shape[2:])
            level_weight = downsample_target(weight, shape, stride) if weight is not None else None
            level_maps = [downsample_target(m, shape, stride) for m in maps]
            total = total + factor * self.loss(logits, downsample_target(target, shape, stride), level_weight,
                                               *level_maps)
        return total
