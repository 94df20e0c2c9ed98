"""Elastic deformation as in Ronneberger et al. (2015): random displacement vectors on a coarse grid,
interpolated to a smooth per-pixel displacement field.

Drawing the control vectors and interpolating them are separate so that the interpolation (bicubic here)
can be swapped, e.g. for B-splines in 3D, without changing what is drawn.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def control_displacements(batch: int, spatial_dims: int, points: int, sigma: torch.Tensor | float,
                          generator: torch.Generator) -> torch.Tensor:
    """Random displacement vectors ``(N, dims, points, ..., points)`` on a coarse grid, in pixels.

    Args:
        batch: number of samples ``N``.
        spatial_dims: 2 or 3.
        points: control points per axis (the paper: 3).
        sigma: standard deviation of each vector component (the paper: 10 px); a scalar or ``(N,)``.
        generator: source of randomness; the result lies on its device.
    """
    shape = (batch, spatial_dims, *([points] * spatial_dims))
    vectors = torch.randn(shape, generator=generator, device=generator.device)
    sigma = torch.as_tensor(sigma, dtype=vectors.dtype, device=vectors.device)
    return vectors * sigma.reshape(-1, *([1] * (vectors.ndim - 1)))


def dense_displacements(control: torch.Tensor, spatial_shape: tuple[int, ...]) -> torch.Tensor:
    """Per-pixel displacements ``(N, dims, *S)`` interpolated from control vectors on a coarse grid.

    The control points sit at the corners and evenly between them (``align_corners=True``), so the field
    equals the control vectors there. 2D uses bicubic interpolation, as the paper; 3D trilinear, since
    torch has no tricubic.

    Args:
        control: ``(N, dims, *grid)`` from :func:`control_displacements`.
        spatial_shape: ``S``, the patch shape.
    """
    mode = "bicubic" if len(spatial_shape) == 2 else "trilinear"
    return F.interpolate(control, size=spatial_shape, mode=mode, align_corners=True)
