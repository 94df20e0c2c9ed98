"""Elastic deformation: random displacement vectors on a coarse control grid, interpolated to a smooth
per-pixel displacement field.

Two schemes, after the two papers:

- Ronneberger et al. (2015), 2D: ``points`` x ``points`` control vectors spanning the patch (3 x 3, sigma
  10 px), interpolated bicubically, so the field equals the vectors at the control points.
- Cicek et al. (2016), 3D: control vectors on a grid with a fixed ``spacing`` (32 voxels, sigma 4), extended
  by one point beyond each end, and a cubic B-spline field (which approximates rather than interpolates the
  vectors and is twice continuously differentiable). Used whenever a spacing is given, and in 3D always,
  since torch has no tricubic interpolation; without a spacing the grid then spans the patch.

Drawing the control vectors and interpolating them are separate so that the parameters are drawn once and
applied to image, label and weight map alike.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def control_grid_shape(spatial_shape: tuple[int, ...], points: int, spacing: float) -> tuple[int, ...]:
    """Control points per axis for a patch of ``spatial_shape``.

    Args:
        spatial_shape: the patch shape ``S``.
        points: control points spanning each axis (used when ``spacing`` is 0).
        spacing: control point spacing in pixels for the B-spline scheme; 0 for ``points``.
    """
    if spacing > 0:
        return tuple(math.ceil((s - 1) / spacing) + 3 for s in spatial_shape)
    if len(spatial_shape) == 3:
        return (points + 2,) * 3
    return (points,) * len(spatial_shape)


def control_displacements(batch: int, grid_shape: tuple[int, ...], sigma: torch.Tensor | float,
                          generator: torch.Generator) -> torch.Tensor:
    """Random displacement vectors ``(N, dims, *grid_shape)`` on a coarse grid, in pixels.

    Args:
        batch: number of samples ``N``.
        grid_shape: control points per axis, from :func:`control_grid_shape`.
        sigma: standard deviation of each vector component; a scalar or ``(N,)``.
        generator: source of randomness; the result lies on its device.
    """
    shape = (batch, len(grid_shape), *grid_shape)
    vectors = torch.randn(shape, generator=generator, device=generator.device)
    sigma = torch.as_tensor(sigma, dtype=vectors.dtype, device=vectors.device)
    return vectors * sigma.reshape(-1, *([1] * (vectors.ndim - 1)))


def dense_displacements(control: torch.Tensor, spatial_shape: tuple[int, ...], spacing: float = 0.0) -> torch.Tensor:
    """Per-pixel displacements ``(N, dims, *S)`` from control vectors ``(N, dims, *grid)``.

    Args:
        control: from :func:`control_displacements`, on a grid from :func:`control_grid_shape` with the
            same ``spacing``.
        spatial_shape: ``S``, the patch shape.
        spacing: the B-spline control spacing in pixels, or 0 for a grid spanning the patch.
    """
    if spacing <= 0 and len(spatial_shape) == 2:
        # Control points at the corners and evenly between them: the field equals the vectors there.
        return F.interpolate(control, size=spatial_shape, mode="bicubic", align_corners=True)
    field = control
    for axis, size in enumerate(spatial_shape):
        points = control.shape[2 + axis]
        step = spacing if spacing > 0 else (size - 1) / max(points - 3, 1)
        basis = bspline_basis(size, points, step, control.device, control.dtype)
        # Contract this axis' control points into pixels; the new axis lands last, so after all axes the
        # spatial order is restored.
        field = torch.tensordot(field, basis, dims=([2], [1]))
    return field


def bspline_basis(size: int, points: int, spacing: float, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(size, points)`` weights of uniform cubic B-splines: pixel ``x`` reads control point ``k``, which
    sits at ``(k - 1) * spacing``, with weight ``B3(x / spacing + 1 - k)``; each row sums to 1.
    """
    x = torch.arange(size, device=device, dtype=torch.float64)[:, None] / spacing + 1.0
    t = (x - torch.arange(points, device=device, dtype=torch.float64)[None, :]).abs()
    inner = 2.0 / 3.0 - t**2 + t**3 / 2.0
    outer = (2.0 - t).clamp(min=0.0) ** 3 / 6.0
    return torch.where(t < 1.0, inner, outer).to(dtype)
