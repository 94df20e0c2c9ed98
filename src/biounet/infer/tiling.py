"""Tiling arithmetic for overlap-tile prediction: where tiles go and how mirrored context is read.

Pure functions of shapes, no torch. For a ``valid`` U-Net each output tile is predicted from an input tile
that extends ``halo/2`` pixels beyond it on each side; outside the image that context is the image mirrored
at its border (Ronneberger et al. 2015, Fig. 2). Tile starts are multiples of the network's pooling
stride, so every tile sees the same pooling grid as one pass over the whole mirrored image and the tiled
result equals that pass. For a ``same`` U-Net, tiles overlap and are blended (see ``blending.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from biounet.models.config import Shape, UNetConfig


@dataclass(frozen=True)
class Tile:
    """One tile: the output region it fills and the input region it reads (image coordinates)."""

    output_start: Shape
    output_stop: Shape
    input_start: Shape
    input_stop: Shape

    def output_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.output_start, self.output_stop, strict=True))


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go.

    Attributes:
        image_shape: spatial shape of the image.
        input_tile: spatial shape of each network input.
        output_tile: spatial shape of each network output.
        starts: per axis, the output start of each tile row/column.
        blend: whether overlapping outputs are blended (``same`` models) or written (``valid`` models).
    """

    image_shape: Shape
    input_tile: Shape
    output_tile: Shape
    starts: tuple[tuple[int, ...], ...]
    blend: bool

    @property
    def offset(self) -> Shape:
        """Input start minus output start per axis (minus half the halo for valid models)."""
        return tuple((o - i) // 2 for i, o in zip(self.input_tile, self.output_tile, strict=True))

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def __iter__(self) -> Iterator[Tile]:
        for start in itertools.product(*self.starts):
            in_start = tuple(s + off for s, off in zip(start, self.offset, strict=True))
            yield Tile(
                output_start=tuple(start),
                output_stop=tuple(min(s + o, n) for s, o, n in zip(start, self.output_tile, self.image_shape,
                                                                     strict=True)),
                input_start=in_start,
                input_stop=tuple(s + i for s, i in zip(in_start, self.input_tile, strict=True)),
            )


def plan_tiles(config: UNetConfig, image_shape: Shape, tile: Shape, overlap: float = 0.25,
               square: bool = False) -> TilePlan:
    """Places tiles over an image of spatial shape ``image_shape``.

    Args:
        config: the model's architecture, which fixes valid sizes, the halo and the pooling stride.
        image_shape: spatial shape of the image; any size, also smaller than one tile.
        tile: wanted network input size per axis; rounded up to a valid size, and shrunk where the image
            needs less.
        overlap: for ``same`` models, the fraction by which neighbouring tiles overlap (0 <= overlap < 1).
            Valid models need no overlap: their tiles abut exactly.
        square: force equal tile sizes on all axes (needed for rotation test-time augmentation).
    """
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    align = config.alignment
    if config.padding == "valid":
        # The tile's output must span at least one pooling stride, and need not exceed the image.
        wanted = config.valid_input_shape(tile, min_output=align)
        enough = config.input_shape_for_output(tuple(math.ceil(n / a) * a for n, a in zip(image_shape, align,
                                                                                          strict=True)))
        input_tile = tuple(min(w, e) for w, e in zip(wanted, enough, strict=True))
    else:
        # Instance norm needs more than one value per channel: the deepest level may not be a single pixel, as
        # the smallest tile of an image of a few pixels would make it (the mirrored context fills the rest).
        least = 2 if config.norm == "instance" else 1
        input_tile = config.valid_input_shape(tuple(max(min(t, n), least * a)
                                                    for t, n, a in zip(tile, image_shape, align, strict=True)))
    if square:
        input_tile = (max(input_tile),) * len(input_tile)
    output_tile = config.output_shape(input_tile)
    starts = []
    for n, o, a in zip(image_shape, output_tile, align, strict=True):
        if config.padding == "valid":
            step = (o // a) * a
            count = 1 + math.ceil(max(n - o, 0) / step)
            starts.append(tuple(k * step for k in range(count)))
        else:
            step = max(1, int(o * (1.0 - overlap)))
            count = 1 + math.ceil(max(n - o, 0) / step)
            # Spread the tiles evenly with the last one flush with the image end (as nnU-Net does).
            starts.append(tuple(round(v) for v in np.linspace(0, max(n - o, 0), count)))
    return TilePlan(tuple(image_shape), input_tile, output_tile, tuple(starts), config.padding == "same")
