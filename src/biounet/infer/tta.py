"""Test-time augmentation: predict under symmetry transforms, undo each, and average.

Only over the transforms the model was trained to ignore (its checkpoint's
:class:`~biounet.models.symmetry.TTA` symmetry): averaging a model trained without flips over flipped
predictions swaps classes that differ by side. In 2D the full group is the dihedral one (four quarter turns,
each with and without a flip); Ronneberger et al. averaged over rotated versions. In 3D it is the flips of
every subset of axes (nnU-Net's mirroring); turns in the image plane alone give the half turn there.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from biounet.models.symmetry import Symmetry


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


def transforms(spatial_dims: int, symmetry: Symmetry = "dihedral", square: bool = True) -> list[Transform]:
    """The TTA group of ``symmetry``, the identity first.

    Args:
        spatial_dims: 2 or 3.
        symmetry: ``dihedral``, ``flips``, ``turns`` or ``none`` (see :mod:`biounet.models.symmetry`).
        square: whether the tiles are square in the last two axes, so that quarter turns keep their shape
            (2D TTA plans square tiles); otherwise turns are the half turn only.
    """
    axes = tuple(range(-spatial_dims, 0))
    quarters = spatial_dims == 2 and square
    if symmetry == "none":
        return [Transform(())]
    if symmetry == "turns":
        return [Transform((), k) for k in range(4)] if quarters else [Transform(()), Transform((-2, -1))]
    if symmetry == "dihedral" and quarters:
        return [Transform(flip, k) for k in range(4) for flip in ((), (-1,))]
    return [Transform(tuple(c)) for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def averaged(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             group: list[Transform]) -> torch.Tensor:
    """Mean over ``group`` of ``inverse(fn(forward(x)))``."""
    total: torch.Tensor | None = None
    for t in group:
        y = t.inverse(fn(t.forward(x)))
        total = y if total is None else total + y
    assert total is not None
    return total / len(group)
