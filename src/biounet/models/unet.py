"""The U-Net, one class for 2D and 3D, valid or same padding, plain or residual encoder. ``forward`` returns
logits; ``forward_deep`` adds the auxiliary heads' for deep supervision."""

from __future__ import annotations

import math
from typing import Any, Literal, overload

import torch
from torch import nn
from torch.nn import functional as F

from biounet.models.config import Shape, UNetConfig


def _conv(config: UNetConfig, in_ch: int, out_ch: int, kernel: Shape) -> nn.Module:
    conv_cls: Any = nn.Conv2d if config.spatial_dims == 2 else nn.Conv3d
    pad = tuple(k // 2 for k in kernel) if config.padding == "same" else 0
    # A bias before a normalisation layer is redundant: the normalisation subtracts it again.
    return conv_cls(in_ch, out_ch, kernel, padding=pad, bias=config.norm == "none")


def _norm(config: UNetConfig, channels: int) -> nn.Module:
    dims = config.spatial_dims
    if config.norm == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    if config.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True) if dims == 2 else nn.InstanceNorm3d(channels, affine=True)
    if config.norm == "group":
        return nn.GroupNorm(min(32, channels // 8), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two (conv -> norm -> ReLU) layers, the unit of every U-Net level."""

    def __init__(self, config: UNetConfig, in_ch: int, widths: tuple[int, int], kernel: Shape) -> None:
        layers: list[nn.Module] = []
        for ch_in, ch_out in ((in_ch, widths[0]), (widths[0], widths[1])):
            layers += [_conv(config, ch_in, ch_out, kernel), _norm(config, ch_out), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """conv -> norm -> ReLU -> conv -> norm, plus the input, then ReLU (nnU-Net's ``BasicBlockD`` at stride 1).

    The input joins as it is, or through a 1x1 conv + norm where the channels change; a valid block's
    convolutions shrink the map by ``2 * (kernel - 1)``, so the input is centre-cropped to it first (each
    convolution loses ``(kernel - 1) / 2`` pixels on either side, so the crop keeps the pixels aligned).
    """

    def __init__(self, config: UNetConfig, in_ch: int, widths: tuple[int, int], kernel: Shape) -> None:
        super().__init__()
        self.conv1, self.norm1 = _conv(config, in_ch, widths[0], kernel), _norm(config, widths[0])
        self.conv2, self.norm2 = _conv(config, widths[0], widths[1], kernel), _norm(config, widths[1])
        self.skip: nn.Module = nn.Identity() if in_ch == widths[1] else nn.Sequential(
            _conv(config, in_ch, widths[1], (1,) * config.spatial_dims), _norm(config, widths[1]))
        self.relu = nn.ReLU(inplace=True)

    def zero_branch(self) -> None:
        """Makes the block start as its skip path (Goyal et al. 2017; Fixup, Zhang et al. 2019): zeroes the
        scale of the last norm, or the last convolution's weights without a norm.

        Without it, He-initialised branches each add their input's variance again: without a norm the
        activations would double in variance per block (2^20 over nnU-Net's (1, 3, 4, 6, 6) encoder).
        """
        scale = getattr(self.norm2, "weight", None)
        weight = scale if isinstance(scale, nn.Parameter) else self.conv2.weight
        assert isinstance(weight, torch.Tensor)
        nn.init.zeros_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output: two conv-norm with a ReLU between, plus the (centre-cropped) input."""
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        # Cropped before the projection: the same result, without projecting pixels the sum drops.
        out = out + self.skip(center_crop(x, tuple(out.shape[2:])))
        result: torch.Tensor = self.relu(out)
        return result


def _encoder_block(config: UNetConfig, in_ch: int, level: int) -> nn.Module:
    """The blocks of contracting level ``level`` (``depth``: the bottom)."""
    widths, kernel = config.encoder_channels(level), config.kernels[level]
    if config.block == "plain":
        return ConvBlock(config, in_ch, widths, kernel)
    # The first block changes the channels as a plain level does; the others keep them.
    channels = [in_ch] + [widths[1]] * (config.blocks[level] - 1)
    return nn.Sequential(*(ResidualBlock(config, ch, widths if i == 0 else (widths[1], widths[1]), kernel)
                           for i, ch in enumerate(channels)))


class Up(nn.Module):
    """Undoes one pooling: up-convolution (kernel = stride = pooling size), or interpolation + 1x1 conv."""

    def __init__(self, config: UNetConfig, in_ch: int, out_ch: int, factor: Shape) -> None:
        super().__init__()
        dims = config.spatial_dims
        self.mode = config.upsample
        self.factor = tuple(float(f) for f in factor)
        if self.mode == "deconv":
            transpose_cls: Any = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
            self.conv: nn.Module = transpose_cls(in_ch, out_ch, kernel_size=factor, stride=factor)
        else:
            self.conv = _conv(config, in_ch, out_ch, (1,) * dims)
        # (Bi/tri)linear interpolation clamps at the map's edge, so in a valid network tile borders would
        # differ from the whole-image pass; nearest-neighbour keeps every output exact.
        self.interp = "nearest" if config.padding == "valid" else ("bilinear" if dims == 2 else "trilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` upsampled by the pooling factor to ``out_ch`` channels (up-convolution, or interpolation + 1x1)."""
        if self.mode == "deconv":
            out: torch.Tensor = self.conv(x)
            return out
        align = None if self.interp == "nearest" else False
        x = F.interpolate(x, scale_factor=self.factor, mode=self.interp, align_corners=align)
        out = self.conv(x)
        return out


def prediction_layout(spatial_dims: int) -> torch.memory_format:
    """The memory format a network predicts in: channels-last, whose forward passes oneDNN runs faster on
    the CPU (training 2D models chooses differently, see :class:`~biounet.training.trainer.Trainer`)."""
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def center_crop(x: torch.Tensor, spatial: Shape) -> torch.Tensor:
    """Crops the trailing spatial axes of ``x`` symmetrically to ``spatial`` (the paper's skip crop)."""
    slices: list[slice] = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], spatial, strict=True):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015) and 3D U-Net (Cicek et al., MICCAI 2016).

    Args:
        config: the architecture; see :class:`UNetConfig`. ``UNet(UNetConfig.paper())`` is the paper's
            network (23 convolution layers, 572x572 -> 388x388, 31,030,658 parameters).

    ``forward`` maps ``(N, in_channels, *S)`` to logits ``(N, out_channels, *config.output_shape(S))``;
    :meth:`forward_deep` also returns the auxiliary heads' logits (``config.deep_supervision`` of them).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        pool_cls = nn.MaxPool2d if config.spatial_dims == 2 else nn.MaxPool3d
        self.pools = nn.ModuleList(pool_cls(p) for p in config.pools)
        self.down = nn.ModuleList()
        in_ch = config.in_channels
        for level in range(config.depth):
            self.down.append(_encoder_block(config, in_ch, level))
            in_ch = config.channels(level)
        self.bottom = _encoder_block(config, in_ch, config.depth)
        drop_cls = nn.Dropout2d if config.spatial_dims == 2 else nn.Dropout3d
        # The paper's "drop-out layers at the end of the contracting path": after the deepest two blocks.
        self.dropout = drop_cls(config.dropout) if config.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(config.depth)):
            up_ch, skip_ch = config.up_channels(level), config.channels(level)
            self.ups.append(Up(config, config.channels(level + 1), up_ch, config.pools[level]))
            self.up_blocks.append(ConvBlock(config, up_ch + skip_ch, (skip_ch, skip_ch), config.kernels[level]))
        head_cls = nn.Conv2d if config.spatial_dims == 2 else nn.Conv3d
        self.head = head_cls(config.channels(0), config.out_channels, kernel_size=1)
        # Empty without deep supervision, so a plain model's state dict keeps its keys.
        self.aux_heads = nn.ModuleList(head_cls(config.channels(level), config.out_channels, kernel_size=1)
                                       for level in range(1, config.deep_supervision + 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation: weights ~ N(0, 2/N) with N the incoming connections of one unit; zero bias.
        Residual branches then start at zero (:meth:`ResidualBlock.zero_branch`)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                fan_in = module.in_channels * math.prod(module.kernel_size)
            elif isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose3d):
                # With stride == kernel every output unit sees one position of each input channel.
                fan_in = module.in_channels * math.prod(module.kernel_size) // math.prod(module.stride)
            else:
                continue
            nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, ResidualBlock):
                module.zero_branch()

    def output_shape(self, input_shape: Shape) -> Shape:
        """Spatial output shape for a spatial input shape; see :meth:`UNetConfig.output_shape`."""
        return self.config.output_shape(input_shape)

    def valid_input_shape(self, wanted: Shape) -> Shape:
        """The smallest valid spatial input shape >= ``wanted``."""
        return self.config.valid_input_shape(wanted)

    @overload
    def forward(self, x: torch.Tensor, deep: Literal[False] = False) -> torch.Tensor: ...

    @overload
    def forward(self, x: torch.Tensor, deep: Literal[True]) -> list[torch.Tensor]: ...

    def forward(self, x: torch.Tensor, deep: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """The logits; with ``deep``, :meth:`forward_deep`'s list (the form a wrapper such as DDP, which
        only runs ``forward``, can ask for)."""
        outputs = self._outputs(x, self.config.deep_supervision if deep else 0)
        return outputs if deep else outputs[0]

    def forward_deep(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The logits and, for deep supervision, each auxiliary head's at its level's resolution.

        Args:
            x: ``(N, in_channels, *S)``.

        Returns:
            ``config.deep_supervision + 1`` tensors ``(N, out_channels, *shape)``, the shapes
            ``config.deep_output_shapes(S)``: the full-resolution logits (``forward(x)``) first, then expanding
            level 1, 2, ... Level ``l``'s output covers its shape times ``config.deep_output_strides[l]``
            input pixels, centred on the input's centre.
        """
        outputs: list[torch.Tensor] = self(x, deep=True)
        return outputs

    def _outputs(self, x: torch.Tensor, heads: int) -> list[torch.Tensor]:
        """The head's logits, then those of the first ``heads`` auxiliary heads."""
        skips: list[torch.Tensor] = []
        last = self.config.depth - 1
        for level, (block, pool) in enumerate(zip(self.down, self.pools, strict=True)):
            x = block(x)
            if level == last:
                x = self.dropout(x)
            skips.append(x)
            x = pool(x)
        x = self.dropout(self.bottom(x))
        aux: list[torch.Tensor] = []
        for level, up, block, skip in zip(reversed(range(self.config.depth)), self.ups, self.up_blocks,
                                          reversed(skips), strict=True):
            x = up(x)
            x = block(torch.cat([center_crop(skip, tuple(x.shape[2:])), x], dim=1))
            if 1 <= level <= heads:
                aux.insert(0, self.aux_heads[level - 1](x))
        logits: torch.Tensor = self.head(x)
        return [logits, *aux]
