"""Sparse annotation (Cicek et al. 2016): a label volume annotated only on a few orthogonal slices.

The 3D U-Net trains from such labels with weight 0 on every unannotated voxel. :func:`sparsify` makes one
from a dense label, so that the effect of annotating only ``k`` slices per axis can be measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biounet.errors import BiounetError


def slice_positions(size: int, count: int) -> list[int]:
    """``count`` evenly spaced interior slice indices along an axis of ``size`` (all of them if fewer)."""
    if count >= size:
        return list(range(size))
    # Interior points of an even split, so no slice sits on the (often empty) border of a crop.
    return sorted({round(float(p)) for p in np.linspace(0, size - 1, count + 2)[1:-1]})


def sparsify(label: np.ndarray, slices_per_axis: int | Sequence[int] = 3, ignore: int = 255) -> np.ndarray:
    """Keeps ``slices_per_axis`` evenly spaced slices per axis of a dense label; the rest becomes ``ignore``.

    A voxel stays annotated when it lies on a kept slice of any axis (orthogonal planes, as annotators
    draw them). Train with ``labels.ignore`` set to the same value.

    Args:
        label: dense label of any number of spatial axes.
        slices_per_axis: slices kept along each axis: one number for all, or one per axis (0 keeps none
            along that axis).
        ignore: the value for unannotated voxels; it must not be a label value already, and the result's
            dtype widens if needed to hold it.

    Raises:
        BiounetError: if ``ignore`` already occurs in ``label`` or a count is negative.
    """
    counts = [slices_per_axis] * label.ndim if isinstance(slices_per_axis, int) else list(slices_per_axis)
    if len(counts) != label.ndim or min(counts, default=0) < 0:
        raise BiounetError(f"slices_per_axis needs {label.ndim} counts >= 0, got {slices_per_axis}")
    if np.any(label == ignore):
        raise BiounetError(f"the ignore value {ignore} already occurs in the label")
    keep = np.zeros(label.shape, bool)
    for axis, count in enumerate(counts):
        index: list[slice | list[int]] = [slice(None)] * label.ndim
        index[axis] = slice_positions(label.shape[axis], count)
        keep[tuple(index)] = True
    dtype = np.result_type(label.dtype, np.min_scalar_type(ignore))
    return np.where(keep, label, np.asarray(ignore, dtype)).astype(dtype)
