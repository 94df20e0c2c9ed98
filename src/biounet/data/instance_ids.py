"""Cells as an instance map: from a class map by connected components, and separating touching cells.

The border weight of the U-Net paper needs background between neighbouring cells. Binary labels such as
ISBI 2012 already draw a membrane between cells, so their cells are the connected components of the
foreground. Instance labels often let cells touch; those contact pixels are turned into background first.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.measure import label

from biounet.errors import BiounetError


def instances_from_classes(classes: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Labels the connected regions of each foreground class as distinct cells.

    Regions of different classes get different ids even where they touch; background (0) stays 0.

    Args:
        classes: integer or bool class map, 0 = background.
        connectivity: neighbours that join a region, as in ``skimage.measure.label``: 1 = faces only
            (4-connectivity in 2D, 6 in 3D) up to ``classes.ndim`` = faces, edges and corners.
    """
    classes = np.asarray(classes)
    if not (np.issubdtype(classes.dtype, np.integer) or classes.dtype == bool):
        raise BiounetError(f"class map must be integer or bool, got {classes.dtype}")
    if not 1 <= connectivity <= classes.ndim:
        raise BiounetError(f"connectivity must be 1..{classes.ndim} for a {classes.ndim}D map, got {connectivity}")
    return label(classes, background=0, connectivity=connectivity)  # type: ignore[no-untyped-call]


def _contact_pixels(instances: np.ndarray) -> np.ndarray:
    """Pixels of a cell that have a pixel of a different cell among their neighbours (faces, edges, corners)."""
    instances = np.asarray(instances)
    foreground = instances > 0
    if not foreground.any():
        return np.zeros(instances.shape, bool)
    # The largest and smallest cell id around each pixel; background must not count as the smallest, so it is
    # raised to the largest id, which can never be below a pixel's own id.
    largest = ndimage.maximum_filter(instances, size=3, mode="nearest")
    smallest = ndimage.minimum_filter(np.where(foreground, instances, instances.max()), size=3, mode="nearest")
    return foreground & ((largest != instances) | (smallest != instances))


def separate_touching(instances: np.ndarray) -> np.ndarray:
    """Turns the pixels where two different cells touch into background.

    Both sides of a contact are cleared (the rule is symmetric, so the result does not depend on the ids),
    leaving a background gap of about 2 px between formerly touching cells. Neighbours include diagonals,
    so afterwards no two cells are adjacent under any connectivity. Applying it twice changes nothing more.

    Args:
        instances: integer instance map, 0 = background, a distinct id per cell.

    Returns:
        A copy of ``instances`` with the contact pixels set to 0.
    """
    instances = np.asarray(instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise BiounetError(f"instance map must be integer, got {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise BiounetError("instance map has negative ids")
    separated = instances.copy()
    separated[_contact_pixels(instances)] = 0
    return separated
