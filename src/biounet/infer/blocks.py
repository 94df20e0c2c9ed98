"""Blocks of the output that can be predicted anywhere, in any order, and still equal one whole prediction.

Out-of-core and cluster prediction split the output into a grid of blocks. A block is predicted from the
tiles of the *whole image's* tile plan that overlap it (:func:`block_tiles`), each tile's output
clipped to the block. A ``valid`` model's tiles abut, and the block size is rounded to whole tile steps,
so every tile starts in exactly one block and nothing is computed twice. A ``same`` model's tiles overlap
and are blended with weights normalised over the whole plan, so a tile on a block border is computed by
both blocks and each keeps its share; the sum at every pixel runs over the same tiles in the same order as
in one whole pass, so the block result equals it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

from biounet.infer.tiling import Tile, TilePlan
from biounet.models.config import Shape

# Default block edge in output pixels/voxels: blocks of ~2048^2 or ~256^3 hold 16 M values per class, a few
# hundred MB for a worker with its tiles, and an 8192^2 image still gives 16 blocks to share out.
DEFAULT_BLOCK = {2: 2048, 3: 256}


@dataclass(frozen=True)
class Block:
    """One block of the output.

    Attributes:
        index: the block's position in the grid.
        start: first output pixel per spatial axis.
        stop: one past the last output pixel per spatial axis.
    """

    index: tuple[int, ...]
    start: Shape
    stop: Shape

    @property
    def shape(self) -> Shape:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))


@dataclass(frozen=True)
class BlockGrid:
    """An output grid cut into blocks.

    Attributes:
        image_shape: the output's spatial shape.
        block_shape: block size per spatial axis (the last block of an axis may be smaller).
    """

    image_shape: Shape
    block_shape: Shape

    @property
    def grid(self) -> Shape:
        """Number of blocks per axis."""
        return tuple(math.ceil(n / b) for n, b in zip(self.image_shape, self.block_shape, strict=True))

    def __len__(self) -> int:
        return math.prod(self.grid)

    def __iter__(self) -> Iterator[Block]:
        for index in itertools.product(*(range(g) for g in self.grid)):
            yield self.block(index)

    def block(self, index: tuple[int, ...]) -> Block:
        start = tuple(i * b for i, b in zip(index, self.block_shape, strict=True))
        stop = tuple(min(s + b, n) for s, b, n in zip(start, self.block_shape, self.image_shape, strict=True))
        return Block(tuple(index), start, stop)


def block_tiles(plan: TilePlan, block: Block) -> list[Tile]:
    """The tiles of ``plan`` whose output survives in ``block`` (any region of the output), in the plan's order.

    Blended tiles: every one overlapping it. Abutting (valid) tiles: a later tile overwrites an earlier one
    where they meet (a valid tile's output may reach a few pixels past the next tile's start, which that tile
    overwrites in a whole pass too), so a tile counts where its output before the next tile's start meets the
    block; for a block of :func:`plan_blocks` those are the tiles starting in it.
    """
    keep = []
    for starts, o, n, lo, hi in zip(plan.starts, plan.output_tile, plan.image_shape, block.start, block.stop,
                                    strict=True):
        ordered = sorted(set(starts))
        ends = [min(s + o, n) if plan.blend else min(s + o, n, after)
                for s, after in zip(ordered, [*ordered[1:], n], strict=True)]
        keep.append({s for s, end in zip(ordered, ends, strict=True) if max(s, lo) < min(end, hi)})
    return [t for t in plan if all(s in k for s, k in zip(t.output_start, keep, strict=True))]


def plan_blocks(plan: TilePlan, block: int | Shape | None = None) -> BlockGrid:
    """Cuts a tile plan's output into blocks.

    Args:
        plan: the whole image's tile plan (:func:`~biounet.infer.tiling.plan_tiles`).
        block: wanted block size per axis (an int for all axes); default :data:`DEFAULT_BLOCK`. For a
            ``valid`` model it is rounded to whole tile steps, so that no tile is shared by two blocks.
    """
    wanted = _wanted(block, len(plan.image_shape))
    shape = []
    for want, starts, out, n in zip(wanted, plan.starts, plan.output_tile, plan.image_shape, strict=True):
        if want >= n:  # one block along this axis (also when given a grid's clipped size back)
            shape.append(n)
            continue
        if not plan.blend:
            step = starts[1] - starts[0] if len(starts) > 1 else out
            want = max(1, round(want / step)) * step
        shape.append(min(want, n))
    return BlockGrid(plan.image_shape, tuple(shape))


def resampled_blocks(image_shape: Shape, block: int | Shape | None = None) -> BlockGrid:
    """Cuts an output that is resampled from a prediction at another scale into blocks: of the size wanted,
    since no tile grid runs through it (see :mod:`biounet.infer.out_of_core`).

    Args:
        image_shape: the output's spatial shape.
        block: as :func:`plan_blocks`'s.
    """
    wanted = _wanted(block, len(image_shape))
    return BlockGrid(tuple(image_shape), tuple(min(w, n) for w, n in zip(wanted, image_shape, strict=True)))


def _wanted(block: int | Shape | None, dims: int) -> Shape:
    wanted = (DEFAULT_BLOCK[dims] if block is None else block,) * dims if not isinstance(block, tuple) else block
    if len(wanted) != dims or min(wanted) < 1:
        raise ValueError(f"block must be {dims} positive sizes, got {block}")
    return wanted
