"""Instance labels as three classes, background / interior / boundary: what an instance model learns.

Touching objects of one class cannot be told apart by a foreground mask; their boundary can. Each object's
boundary is its pixels that have a pixel of another label (background or another object) among their face
neighbours: ``skimage.segmentation.find_boundaries(mode="inner", connectivity=1)``. That is one pixel at the
object's outer edge and two where two objects touch (one on each side), and one voxel along each axis in
3D, so a coarse z-spacing is not dilated further. The rest of the object is its interior, from which
post-processing (:mod:`biounet.infer.instances`) grows the objects back over the boundary.

An object too small or too thin to keep an interior pixel would vanish from the seeds; its pixels that
touch no other object are interior instead, so that every object keeps a seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import find_boundaries

from biounet.errors import BiounetError

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
CLASS_NAMES = ("background", "interior", "boundary")


def boundary_classes(instances: np.ndarray) -> np.ndarray:
    """The three-class target of an instance map: 0 background, 1 interior, 2 boundary.

    Args:
        instances: integer instance map, 0 = background, a distinct id per object; objects may touch.

    Returns:
        int64 class map of the same shape.
    """
    instances = np.asarray(instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise BiounetError(f"instance map must be integer, got {instances.dtype}")
    foreground = instances > 0
    boundary = find_boundaries(instances, connectivity=1, mode="inner") & foreground  # type: ignore[no-untyped-call]
    classes = np.where(boundary, BOUNDARY, np.where(foreground, INTERIOR, BACKGROUND)).astype(np.int64)
    interior_count = ndimage.sum_labels(classes == INTERIOR, instances, index=np.unique(instances[foreground]))
    lost = np.unique(instances[foreground])[np.asarray(interior_count) == 0]
    if lost.size:
        # Pixels of a lost object with no face neighbour from another object become its seed.
        other = _touches_other_object(instances)
        rescue = np.isin(instances, lost) & ~other
        classes[rescue] = INTERIOR
    return classes


def _touches_other_object(instances: np.ndarray) -> np.ndarray:
    """Object pixels with a face neighbour that belongs to a different object (not background)."""
    touching = np.zeros(instances.shape, bool)
    for axis in range(instances.ndim):
        for shift in (1, -1):
            neighbour = np.roll(instances, shift, axis=axis)
            # np.roll wraps around: the wrapped row is not a neighbour.
            edge = [slice(None)] * instances.ndim
            edge[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
            neighbour[tuple(edge)] = 0
            touching |= (neighbour > 0) & (neighbour != instances) & (instances > 0)
    return touching
