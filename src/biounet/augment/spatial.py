"""One sampling grid for all spatial transforms, and resampling with it.

Coordinates are in pixels of the patch, axis order of the tensor (``(y, x)`` or ``(z, y, x)``). Output
pixel ``p`` reads the input at ``matrix @ (p - c) + c + offset + displacement(p)``, with ``c`` the patch
centre. ``align_corners=True`` puts the normalised coordinates -1 and 1 on the centres of the border
pixels, so a flip or a quarter turn maps pixel centres onto pixel centres and ``reflection`` padding mirrors
about the border pixels (NumPy's ``reflect``), as the overlap-tile prediction does.
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
from torch.nn import functional as F


def rotation_planes(spatial_dims: int) -> list[tuple[int, int]]:
    """The planes ``(i, j)``, ``i < j``, of the spatial axes that rotations act in (1 in 2D, 3 in 3D)."""
    return list(itertools.combinations(range(spatial_dims), 2))


def rotation_matrix(degrees: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Sampling matrices ``(N, dims, dims)`` for one angle per sample and plane.

    A positive angle in plane ``(i, j)`` turns the content like ``torch.rot90(x, 1, dims=(i, j))``; the
    planes are composed in the order of :func:`rotation_planes`.

    Args:
        degrees: ``(N, len(rotation_planes(spatial_dims)))`` angles in degrees.
        spatial_dims: 2 or 3.
    """
    radians = torch.deg2rad(degrees)
    cos, sin = torch.cos(radians), torch.sin(radians)
    eye = torch.eye(spatial_dims, dtype=degrees.dtype, device=degrees.device)
    matrix = eye.expand(degrees.shape[0], -1, -1)
    for k, (i, j) in enumerate(rotation_planes(spatial_dims)):
        plane = eye.repeat(degrees.shape[0], 1, 1)
        plane[:, i, i], plane[:, i, j] = cos[:, k], sin[:, k]
        plane[:, j, i], plane[:, j, j] = -sin[:, k], cos[:, k]
        matrix = matrix @ plane
    return matrix


def sampling_grid(spatial_shape: tuple[int, ...], matrix: torch.Tensor, offset: torch.Tensor,
                  displacement: torch.Tensor | None = None) -> torch.Tensor:
    """The ``grid_sample`` grid ``(N, *S, dims)`` of the transform described in the module docstring.

    Args:
        spatial_shape: ``S``, every size >= 2.
        matrix: ``(N, dims, dims)`` linear part, in pixels.
        offset: ``(N, dims)`` translation in pixels.
        displacement: optional ``(N, dims, *S)`` per-pixel displacement in pixels (elastic deformation).
    """
    batch, dims = offset.shape
    half = torch.tensor([(s - 1) / 2 for s in spatial_shape], dtype=matrix.dtype, device=matrix.device)
    # The same map in normalised coordinates u = (p - c) / half, which is what affine_grid speaks.
    linear = matrix * half[None, None, :] / half[None, :, None]
    shift = offset / half
    # grid_sample wants the last spatial axis first (x, y, z).
    theta = torch.cat([linear.flip(1, 2), shift.flip(1)[:, :, None]], dim=2)
    grid = F.affine_grid(theta, [batch, 1, *spatial_shape], align_corners=True)
    if displacement is not None:
        scaled = displacement / half.view(1, dims, *([1] * dims))
        grid = grid + scaled.flip(1).movedim(1, -1)
    return grid


def resample(x: torch.Tensor, grid: torch.Tensor, mode: Literal["bilinear", "nearest"]) -> torch.Tensor:
    """``x`` ``(N, C, *S_in)`` read at ``grid`` ``(N, *S, dims)``, mirrored beyond its border.

    Args:
        x: floating-point tensor.
        grid: from :func:`sampling_grid`.
        mode: ``bilinear`` (trilinear in 3D) for images and weights, ``nearest`` for class maps.
    """
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="reflection", align_corners=True)

