"""Test-time augmentation: predict under symmetry transforms, undo each, and average.

In 2D the eight transforms are the dihedral group (four rotations by 90 degrees, each with and without a
flip); Ronneberger et al. averaged over rotated versions. In 3D, and for non-square 2D tiles, the group is
the flips of every subset of spatial axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Transform:
    """A transform of (N, C, *spatial) tensors: ``k`` quarter turns in the first two spatial axes after
    flipping ``flip`` axes. ``inverse`` undoes ``forward`` on the network's output."""

    flip: tuple[int, ...]
    quarter_turns: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flip:
            x = torch.flip(x, self.flip)
        if self.quarter_turns:
            x = torch.rot90(x, self.quarter_turns, dims=(-2, -1))
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.quarter_turns:
            y = torch.rot90(y, -self.quarter_turns, dims=(-2, -1))
        if self.flip:
            y = torch.flip(y, self.flip)
        return y


def transforms(spatial_dims: int, rotations: bool) -> list[Transform]:
    """The TTA group: 8 dihedral transforms in 2D when ``rotations``; otherwise all axis flips."""
    axes = tuple(range(-spatial_dims, 0))
    if spatial_dims == 2 and rotations:
        return [Transform(flip, k) for k in range(4) for flip in ((), (-1,))]
    flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    return [Transform(tuple(f)) for f in flips]


def averaged(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             group: list[Transform]) -> torch.Tensor:
    """Mean over ``group`` of ``inverse(fn(forward(x)))``."""
    total: torch.Tensor | None = None
    for t in group:
        y = t.inverse(fn(t.forward(x)))
        total = y if total is None else total + y
    assert total is not None
    return total / len(group)
