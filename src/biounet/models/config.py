"""The U-Net's typed configuration and the pure shape arithmetic that follows from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from biounet.configs import from_dict
from biounet.errors import BiounetError

Padding = Literal["valid", "same"]
Norm = Literal["none", "batch", "instance", "group"]
Upsample = Literal["deconv", "interp"]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a U-Net (Ronneberger et al. 2015; Cicek et al. 2016 for ``spatial_dims=3``).

    Every level of the contracting path has two 3x3(x3) convolutions followed by a 2x2(x2) max-pool; the
    expanding path mirrors it with an up-sampling step that halves the channels, concatenation with the
    (cropped) skip, and two convolutions. A final 1x1 convolution maps to ``out_channels`` logits.

    Args:
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: image channels.
        out_channels: classes (logits per pixel); 1 means a single sigmoid output.
        base_channels: feature channels at the first level; doubled at each pooling.
        depth: number of poolings (4 in the paper).
        padding: ``"valid"`` convolutions (the paper: output smaller than input) or ``"same"``.
        norm: normalisation after each convolution: none (the paper), batch (3D U-Net), instance, group.
        dropout: drop probability at the end of the contracting path (the paper uses 0.5); 0 disables.
        upsample: ``"deconv"`` (2x2 up-convolution, the paper) or ``"interp"`` (interpolation + 1x1 conv;
            nearest-neighbour for valid models so that tiles stay exact, (tri)linear for same models).
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
        ]
        for ok, message in checks:
            if not ok:
                raise BiounetError(f"invalid model config: {message}")
        if self.norm == "group" and self.base_channels % 8:
            raise BiounetError("invalid model config: group norm needs base_channels divisible by 8")

    @classmethod
    def paper(cls) -> UNetConfig:
        """The configuration of Ronneberger et al. (2015): 572x572 -> 388x388, 31,030,658 parameters."""
        return cls(dropout=0.5)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Builds a config from a plain dict (YAML), rejecting unknown keys by name."""
        return from_dict(cls, data, "model config")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- shape arithmetic ------------------------------------------------------------------------------

    @property
    def shrink_per_conv(self) -> int:
        """Pixels lost per axis by one 3x3 convolution."""
        return 2 if self.padding == "valid" else 0

    @property
    def alignment(self) -> int:
        """Product of the pooling factors: the stride of the network's pooling grid."""
        return 1 << self.depth

    def channels(self, level: int) -> int:
        return self.base_channels << level

    def output_shape(self, input_shape: Shape) -> Shape:
        """The logits' spatial shape for an input of spatial shape ``input_shape``.

        Raises:
            BiounetError: if the input is not valid (a pooling would see an odd size, or a size drops
                to zero); ``valid_input_shape`` gives the nearest valid one.
        """
        shape = self._check_dims(input_shape)
        return tuple(self._output_size(s) for s in shape)

    def is_valid_input(self, input_shape: Shape) -> bool:
        try:
            self.output_shape(input_shape)
        except BiounetError:
            return False
        return True

    def valid_input_shape(self, wanted: Shape, min_output: int = 1) -> Shape:
        """The smallest valid input shape >= ``wanted`` (per axis) whose output has >= ``min_output`` px."""
        shape = self._check_dims(wanted)
        return tuple(self._valid_size(max(int(s), 1), min_output) for s in shape)

    def input_shape_for_output(self, output_shape: Shape) -> Shape:
        """The smallest valid input shape whose output covers at least ``output_shape``."""
        shape = self._check_dims(output_shape)
        return tuple(self._valid_size(max(int(s), 1) + self.halo_size(), int(s)) for s in shape)

    def halo_size(self) -> int:
        """Input pixels per axis that the network consumes beyond its output (184 for the paper, 0 for same)."""
        size = self._valid_size(1, 1)
        return size - self._output_size(size)

    def _check_dims(self, shape: Shape) -> Shape:
        shape = tuple(int(s) for s in shape)
        if len(shape) != self.spatial_dims:
            raise BiounetError(f"expected a {self.spatial_dims}D spatial shape, got {shape}")
        return shape

    def _output_size(self, size: int) -> int:
        out = self._output_size_or_none(size)
        if out is None:
            nearest = self._valid_size(max(size, 1), 1)
            raise BiounetError(
                f"input size {size} is not valid for this U-Net ({self.padding} padding, depth {self.depth}); "
                f"the nearest valid size above is {nearest}"
            )
        return out

    def _output_size_or_none(self, size: int) -> int | None:
        shrink = 2 * self.shrink_per_conv
        for _ in range(self.depth):
            size -= shrink
            if size < 2 or size % 2:
                return None
            size //= 2
        size -= shrink
        if size < 1:
            return None
        for _ in range(self.depth):
            size = size * 2 - shrink
            if size < 1:
                return None
        return size

    def _valid_size(self, wanted: int, min_output: int) -> int:
        # Valid sizes recur every `alignment` pixels and outputs grow with the input, so this ends.
        size = wanted
        while True:
            out = self._output_size_or_none(size)
            if out is not None and out >= min_output:
                return size
            size += 1
