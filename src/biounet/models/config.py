"""The U-Net's typed configuration and the pure shape arithmetic that follows from it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from biounet.configs import from_dict
from biounet.errors import BiounetError

Padding = Literal["valid", "same"]
Norm = Literal["none", "batch", "instance", "group"]
Upsample = Literal["deconv", "interp"]
Widen = Literal["after_pool", "before_pool"]
Block = Literal["plain", "residual"]
# What the logits mean (see biounet.models.outputs): class scores, or foreground and distance (two sigmoids).
OutputKind = Literal["classes", "distance"]
OUTPUT_KINDS = ("classes", "distance")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net (Ronneberger et al. 2015; Cicek et al. 2016 for ``spatial_dims=3``).

    Every level of the contracting path has two 3x3(x3) convolutions followed by a 2x2(x2) max-pool; the
    expanding path mirrors it with an up-sampling step, concatenation with the (cropped) skip, and two
    convolutions. A final 1x1 convolution maps to ``out_channels`` logits. With ``block="residual"`` the
    contracting path is nnU-Net's residual encoder (ResEnc, Isensee et al. 2024) instead: ``encoder_blocks``
    residual blocks per level, the expanding path unchanged.

    Args:
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: image channels.
        out_channels: classes (logits per pixel); 1 means a single sigmoid output.
        base_channels: feature channels of the first convolution.
        depth: number of poolings (4 in the paper, 3 in the 3D U-Net paper).
        padding: ``"valid"`` convolutions (the paper: output smaller than input) or ``"same"``.
        norm: normalisation after each convolution: none (the paper), batch (3D U-Net), instance, group.
        dropout: drop probability at the end of the contracting path (the paper uses 0.5); 0 disables.
        upsample: ``"deconv"`` (up-convolution with kernel = stride = pooling size, the paper) or
            ``"interp"`` (interpolation + 1x1 conv; nearest-neighbour for valid models so that tiles stay
            exact, (tri)linear for same models).
        widen: where channels double. ``"after_pool"`` (U-Net): the first convolution after each pooling
            doubles them and the up-sampling step halves them. ``"before_pool"`` (3D U-Net): the second
            convolution of each level doubles them, "to avoid bottlenecks", and the up-sampling step
            keeps them.
        pool_sizes: pooling factor per level and axis (``depth`` entries of ``spatial_dims`` ints); the
            default pools by 2 everywhere. Anisotropic stacks (e.g. EM with 10x coarser z) use 1 along z
            on the first levels. Up-sampling mirrors it.
        kernel_sizes: convolution kernel per level and axis (``depth + 1`` entries, the last for the
            bottom; odd ints); default 3 everywhere. The expanding path reuses its level's kernel.
        block: the unit of the contracting path and the bottom. ``"plain"``: two conv-norm-ReLU (the
            paper). ``"residual"``: residual blocks (He et al. 2016, as nnU-Net's ``BasicBlockD``): two
            conv-norm with a ReLU between, added to the block's input (a 1x1 conv + norm where the channels
            change; centre-cropped when valid), then ReLU.
        encoder_blocks: residual blocks per contracting level, the bottom included (``depth + 1``
            positive ints; default 1 each); needs ``block="residual"``. nnU-Net's ResEnc presets use
            ``(1, 3, 4, 6, 6, 6, ...)``. Each block has two convolutions, so a valid model's halo grows
            with the count.
        deep_supervision: auxiliary 1x1-conv heads on the expanding path's lower-resolution levels (1, 2,
            ...; fewer than ``depth``), whose logits :meth:`UNet.forward_deep` returns for training with
            deep supervision (nnU-Net); 0: none. ``forward`` and inference never use them.
        output: what the logits mean, and so how they become probabilities
            (:func:`~biounet.models.outputs.logits_to_probabilities`). ``classes``: class scores, a softmax
            over the channels (a sigmoid for one channel). ``distance``: two independent sigmoids, the
            foreground probability and each object pixel's distance to its object's boundary normalised to
            [0, 1] (:func:`~biounet.data.targets.distance_target`); needs ``out_channels = 2``. Checkpoints
            written before this setting existed read as ``classes``.
    """

    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 2
    base_channels: int = 64
    depth: int = 4
    padding: Padding = "valid"
    norm: Norm = "none"
    dropout: float = 0.0
    upsample: Upsample = "deconv"
    widen: Widen = "after_pool"
    pool_sizes: tuple[Shape, ...] | None = None
    kernel_sizes: tuple[Shape, ...] | None = None
    block: Block = "plain"
    encoder_blocks: tuple[int, ...] | None = None
    deep_supervision: int = 0
    output: OutputKind = "classes"

    def __post_init__(self) -> None:
        checks = [
            (self.spatial_dims in (2, 3), "spatial_dims must be 2 or 3"),
            (self.in_channels >= 1, "in_channels must be >= 1"),
            (self.out_channels >= 1, "out_channels must be >= 1"),
            (self.base_channels >= 1, "base_channels must be >= 1"),
            (self.depth >= 0, "depth must be >= 0"),
            (self.padding in ("valid", "same"), "padding must be 'valid' or 'same'"),
            (self.norm in ("none", "batch", "instance", "group"), "norm must be none|batch|instance|group"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.upsample in ("deconv", "interp"), "upsample must be 'deconv' or 'interp'"),
            (self.widen in ("after_pool", "before_pool"), "widen must be 'after_pool' or 'before_pool'"),
            (self.block in ("plain", "residual"), "block must be 'plain' or 'residual'"),
            (self.encoder_blocks is None or self.block == "residual", "encoder_blocks needs block 'residual'"),
            (type(self.deep_supervision) is int and 0 <= self.deep_supervision < max(self.depth, 1),
             f"deep_supervision must be an int from 0 to depth - 1 = {max(self.depth - 1, 0)}"),
            (self.output in OUTPUT_KINDS, "output must be 'classes' or 'distance'"),
            (self.output != "distance" or self.out_channels == 2,
             "output 'distance' needs out_channels = 2 (foreground and distance)"),
        ]
        for ok, message in checks:
            if not ok:
                raise BiounetError(f"invalid model config: {message}")
        if self.norm == "group" and self.base_channels % 8:
            raise BiounetError("invalid model config: group norm needs base_channels divisible by 8")
        for name, levels, odd in (("pool_sizes", self.depth, False), ("kernel_sizes", self.depth + 1, True)):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                value = tuple(tuple(int(v) for v in level) for level in value)
            except (TypeError, ValueError):
                raise BiounetError(f"invalid model config: {name} must be a list of lists of ints") from None
            sizes = [v for level in value for v in level]
            if (len(value) != levels or any(len(level) != self.spatial_dims for level in value)
                    or min(sizes, default=1) < 1 or (odd and any(v % 2 == 0 for v in sizes))):
                kind = "odd positive" if odd else "positive"
                raise BiounetError(f"invalid model config: {name} must have {levels} entries of "
                                   f"{self.spatial_dims} {kind} ints, got {value}")
            object.__setattr__(self, name, value)
        if self.encoder_blocks is not None:
            try:
                blocks = tuple(int(b) for b in self.encoder_blocks)
            except (TypeError, ValueError):
                raise BiounetError("invalid model config: encoder_blocks must be a list of ints") from None
            if len(blocks) != self.depth + 1 or min(blocks) < 1:
                raise BiounetError(f"invalid model config: encoder_blocks must have {self.depth + 1} positive "
                                   f"ints (one per level and the bottom), got {blocks}")
            object.__setattr__(self, "encoder_blocks", blocks)

    @classmethod
    def paper(cls) -> UNetConfig:
        """The configuration of Ronneberger et al. (2015): 572x572 -> 388x388, 31,030,658 parameters."""
        return cls(dropout=0.5)

    @classmethod
    def paper_3d(cls) -> UNetConfig:
        """The configuration of Cicek et al. (2016): 132x132x116 -> 44x44x28, batch norm, 3 classes."""
        return cls(spatial_dims=3, out_channels=3, base_channels=32, depth=3, norm="batch", widen="before_pool")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Builds a config from a plain dict (YAML), rejecting unknown keys by name."""
        return from_dict(cls, data, "model config")

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (nested lists), ready for ``yaml.safe_dump``."""
        data = asdict(self)
        for name in ("pool_sizes", "kernel_sizes"):
            if data[name] is not None:
                data[name] = [list(level) for level in data[name]]
        if data["encoder_blocks"] is not None:
            data["encoder_blocks"] = list(data["encoder_blocks"])
        return data

    # -- widths and sizes per level ----------------------------------------------------------------------

    @property
    def pools(self) -> tuple[Shape, ...]:
        """Pooling factor per level and axis, defaults filled in."""
        return self.pool_sizes or ((2,) * self.spatial_dims,) * self.depth

    @property
    def kernels(self) -> tuple[Shape, ...]:
        """Convolution kernel per level (the last: the bottom) and axis, defaults filled in."""
        return self.kernel_sizes or ((3,) * self.spatial_dims,) * (self.depth + 1)

    @property
    def blocks(self) -> tuple[int, ...]:
        """Blocks per contracting level (the last: the bottom), defaults filled in; 1 for a plain model."""
        return self.encoder_blocks or (1,) * (self.depth + 1)

    def encoder_channels(self, level: int) -> tuple[int, int]:
        """Output channels of the two convolutions of contracting level ``level`` (``depth``: the bottom)."""
        first = self.base_channels << level
        return (first, 2 * first) if self.widen == "before_pool" else (first, first)

    def up_channels(self, level: int) -> int:
        """Channels the up-sampling step hands to expanding level ``level``."""
        below = self.encoder_channels(level + 1)[1]
        return below if self.widen == "before_pool" else below // 2

    def channels(self, level: int) -> int:
        """Feature channels that contracting level ``level`` passes on (its skip connection)."""
        return self.encoder_channels(level)[1]

    # -- shape arithmetic ------------------------------------------------------------------------------

    @property
    def alignment(self) -> Shape:
        """Product of the pooling factors per axis: the stride of the network's pooling grid."""
        return tuple(math.prod(level[axis] for level in self.pools) for axis in range(self.spatial_dims))

    def output_shape(self, input_shape: Shape) -> Shape:
        """The logits' spatial shape for an input of spatial shape ``input_shape``.

        Raises:
            BiounetError: if the input is not valid (a pooling would see a size it does not divide, or a
                size drops to zero); ``valid_input_shape`` gives the nearest valid one.
        """
        shape = self._check_dims(input_shape)
        return tuple(self._output_size(s, axis) for axis, s in enumerate(shape))

    @property
    def deep_output_strides(self) -> tuple[Shape, ...]:
        """Input pixels per output pixel and axis of each output of :meth:`UNet.forward_deep`: 1 for the
        full-resolution logits, then the product of the poolings above each auxiliary head's level."""
        return tuple(tuple(math.prod(p[axis] for p in self.pools[:level]) for axis in range(self.spatial_dims))
                     for level in range(self.deep_supervision + 1))

    def deep_output_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """The spatial shapes of :meth:`UNet.forward_deep`'s outputs, full resolution first.

        The output at expanding level ``l`` (stride ``deep_output_strides[l]``) covers ``shape * stride``
        input pixels centred on the input's centre: every convolution and crop of the network is symmetric
        and every pooling divides its input.

        Raises:
            BiounetError: as :meth:`output_shape`.
        """
        shape = self._check_dims(input_shape)
        self.output_shape(shape)  # the error for an invalid input; valid there means valid at every level
        return tuple(tuple(self._output_size(s, axis, level) for axis, s in enumerate(shape))
                     for level in range(self.deep_supervision + 1))

    def is_valid_input(self, input_shape: Shape) -> bool:
        """Whether ``input_shape`` gives an output (every pooling sees an even size, nothing shrinks to 0)."""
        try:
            self.output_shape(input_shape)
        except BiounetError:
            return False
        return True

    def valid_input_shape(self, wanted: Shape, min_output: int | Shape = 1) -> Shape:
        """The smallest valid input shape >= ``wanted`` (per axis) whose output has >= ``min_output`` px
        (one number for all axes, or one per axis)."""
        shape = self._check_dims(wanted)
        least = self._per_axis(min_output)
        pairs = enumerate(zip(shape, least, strict=True))
        return tuple(self._valid_size(max(int(s), 1), m, axis) for axis, (s, m) in pairs)

    def input_shape_for_output(self, output_shape: Shape) -> Shape:
        """The smallest valid input shape whose output covers at least ``output_shape``."""
        shape = self._check_dims(output_shape)
        return tuple(self._valid_size(max(int(s), 1) + h, int(s), axis)
                     for axis, (s, h) in enumerate(zip(shape, self.halo_size(), strict=True)))

    def halo_size(self) -> Shape:
        """Input pixels per axis that the network consumes beyond its output (184 for the paper, 0 for same)."""
        halo = []
        for axis in range(self.spatial_dims):
            size = self._valid_size(1, 1, axis)
            halo.append(size - self._output_size(size, axis))
        return tuple(halo)

    def _per_axis(self, value: int | Shape) -> Shape:
        if isinstance(value, int):
            return (value,) * self.spatial_dims
        return self._check_dims(value)

    def _check_dims(self, shape: Shape) -> Shape:
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.spatial_dims:
            raise BiounetError(f"expected a {self.spatial_dims}D spatial shape, got {shape}")
        return shape

    def _output_size(self, size: int, axis: int, level: int = 0) -> int:
        out = self._output_size_or_none(size, axis, level)
        if out is None:
            nearest = self._valid_size(max(size, 1), 1, axis)
            raise BiounetError(
                f"input size {size} is not valid along axis {axis} for this U-Net ({self.padding} padding, "
                f"depth {self.depth}); the nearest valid size above is {nearest}"
            )
        return out

    def _output_size_or_none(self, size: int, axis: int, level: int = 0) -> int | None:
        """The size along ``axis`` at the end of expanding level ``level`` (0: the output), or None."""
        valid = self.padding == "valid"
        # Two convolutions per block, each losing kernel - 1 pixels when valid; the contracting path has
        # `blocks` blocks per level, the expanding path one.
        shrink = [2 * (k[axis] - 1) if valid else 0 for k in self.kernels]
        down_shrink = [s * b for s, b in zip(shrink, self.blocks, strict=True)]
        pools = [p[axis] for p in self.pools]
        for at in range(self.depth):
            size -= down_shrink[at]
            if size < pools[at] or size % pools[at]:
                return None
            size //= pools[at]
        size -= down_shrink[self.depth]
        if size < 1:
            return None
        for at in reversed(range(level, self.depth)):
            size = size * pools[at] - shrink[at]
            if size < 1:
                return None
        return size

    def _valid_size(self, wanted: int, min_output: int, axis: int) -> int:
        # Valid sizes recur every `alignment` pixels and outputs grow with the input, so this ends.
        size = wanted
        while True:
            out = self._output_size_or_none(size, axis)
            if out is not None and out >= min_output:
                return size
            size += 1
