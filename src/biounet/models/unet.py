"""The U-Net, one class for 2D and 3D, valid or same padding. ``forward`` returns logits."""

from __future__ import annotations

import math
from typing import Any

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
        if self.mode == "deconv":
            out: torch.Tensor = self.conv(x)
            return out
        align = None if self.interp == "nearest" else False
        x = F.interpolate(x, scale_factor=self.factor, mode=self.interp, align_corners=align)
        out = self.conv(x)
        return out


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

    ``forward`` maps ``(N, in_channels, *S)`` to logits ``(N, out_channels, *config.output_shape(S))``.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        pool_cls = nn.MaxPool2d if config.spatial_dims == 2 else nn.MaxPool3d
        self.pools = nn.ModuleList(pool_cls(p) for p in config.pools)
        self.down = nn.ModuleList()
        in_ch = config.in_channels
        for level in range(config.depth):
            self.down.append(ConvBlock(config, in_ch, config.encoder_channels(level), config.kernels[level]))
            in_ch = config.channels(level)
        self.bottom = ConvBlock(config, in_ch, config.encoder_channels(config.depth), config.kernels[config.depth])
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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation: weights ~ N(0, 2/N) with N the incoming connections of one unit; zero bias."""
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

    def output_shape(self, input_shape: Shape) -> Shape:
        """Spatial output shape for a spatial input shape; see :meth:`UNetConfig.output_shape`."""
        return self.config.output_shape(input_shape)

    def valid_input_shape(self, wanted: Shape) -> Shape:
        """The smallest valid spatial input shape >= ``wanted``."""
        return self.config.valid_input_shape(wanted)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        last = self.config.depth - 1
        for level, (block, pool) in enumerate(zip(self.down, self.pools, strict=True)):
            x = block(x)
            if level == last:
                x = self.dropout(x)
            skips.append(x)
            x = pool(x)
        x = self.dropout(self.bottom(x))
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips), strict=True):
            x = up(x)
            x = block(torch.cat([center_crop(skip, tuple(x.shape[2:])), x], dim=1))
        logits: torch.Tensor = self.head(x)
        return logits
