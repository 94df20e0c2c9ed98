"""A label's training targets: classes with boundaries, distances to them, cells as instance ids, and the
U-Net border weights.

Three steps turn a label into what the loss sees, in this module's order (the distance target is the
alternative to the first):

**Boundary classes** (background / interior / boundary, what an instance model learns). Touching objects of
one class cannot be told apart by a foreground mask; their boundary can. Each object's boundary is its
pixels that have a pixel of another label (background or another object) among their face neighbours:
``skimage.segmentation.find_boundaries(mode="inner", connectivity=1)``. That is one pixel at the object's
outer edge and two where two objects touch (one on each side), and one voxel along each axis in 3D, so a
coarse z-spacing is not dilated further. The rest of the object is its interior, from which
post-processing (:mod:`biounet.infer.instances`) grows the objects back over the boundary. An object too
small or too thin to keep an interior pixel would vanish from the seeds; its pixels that touch no other
object are interior instead, so that every object keeps a seed.

**The distance target** (foreground / distance, the other way an instance model can learn objects): each
object pixel's Euclidean distance to its object's boundary pixels (those of the boundary class above),
divided by the object's largest, so that small and large objects all peak at 1 in their middle
(:func:`distance_target`). Background and boundaries are 0, both sides of a contact between two objects
included. A smooth ramp is easier to fit than a one-pixel class, and the seeds and the watershed of
post-processing come from the distance itself. The image's edge is not a boundary: an object cut by it
keeps rising towards the edge, as the mirrored context that prediction feeds the network there continues
it.

**Cells as an instance map**, from a class map by connected components, and separating touching cells. The
border weight needs background between neighbouring cells. Binary labels such as ISBI 2012 already draw a
membrane between cells, so their cells are the connected components of the foreground. Instance labels
often let cells touch; those contact pixels are turned into background first.

**The U-Net paper's pixel weight map**: class balance plus a border term between neighbouring cells.

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))        (Ronneberger et al. 2015, eq. 2)

w_c balances the class frequencies; d1 and d2 are the distances from x to the nearest and the
second-nearest cell. The border term is added on background (class 0) pixels only, as in the paper's
Fig. 3d: it makes the thin background gaps between cells weigh most, which forces the network to learn the
separating borders. Inside a cell d1 = 0, and a border term there would only blur the cell's own edge.
The term is below ``w0 * exp(-18)`` (1.5e-8 w0) once d1 + d2 > 6 sigma, so it is set to exactly 0 there.
That is what makes the map fast: a cell's distances matter only within 6 sigma of it, so each cell's
distance transform is computed in its bounding box grown by 6 sigma rather than over the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage import measure
from skimage.segmentation import find_boundaries, relabel_sequential

from biounet.errors import BiounetError

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
CLASS_NAMES = ("background", "interior", "boundary")
# The channels of a model trained on the distance target.
DISTANCE_NAMES = ("foreground", "distance")
# What an instance label becomes for the network: boundary classes, or foreground and distance.
InstanceTarget = Literal["boundary", "distance"]
INSTANCE_TARGETS = ("boundary", "distance")
ClassWeights = Literal["balanced"] | Sequence[float] | None

_CUTOFF_SIGMAS = 6.0


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


def distance_target(instances: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Each object pixel's distance to its object's boundary, normalised per object to a maximum of 1.

    An object's boundary is what :func:`boundary_classes` makes its boundary class: its pixels with a face
    neighbour of another label (background or another object). They are 0, and every other pixel of the
    object holds its Euclidean distance to the nearest of them, divided by the object's largest, so its
    deepest pixel is 1. Both sides of a contact between two objects are 0: a watershed flooding the
    negated distance reaches each side through its own object only, whatever the two objects' sizes
    (with a contact at ``1 / max`` instead, a small object's steeper slope would flood its larger
    neighbour's side first). Pixels beyond the image's edge are not other labels (see the module
    docstring). An object too small or too thin to have a pixel off its boundary is 1 on its pixels that
    touch no other object (as :func:`boundary_classes` keeps them as a seed) and 0 on the others; an object
    without any boundary (it fills the image) is 1 throughout.

    Each object is measured in its bounding box grown by one pixel, which holds its boundary's outer
    neighbours, so the map costs the objects' boxes, not the image per object.

    Args:
        instances: integer instance map, 0 = background, a distinct id per object; objects may touch.
        spacing: physical size of a pixel along each axis; distances are measured in these units (the
            normalisation makes only their ratios matter).

    Returns:
        float32 map of the same shape: 0 on background and object boundaries, in (0, 1] elsewhere on objects.
    """
    instances = np.asarray(instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise BiounetError(f"instance map must be integer, got {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise BiounetError("instance map has negative ids")
    sampling = _spacing(spacing, instances.ndim)
    faces = ndimage.generate_binary_structure(instances.ndim, 1)
    distance = np.zeros(instances.shape, np.float32)
    for object_id, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:  # find_objects lists every id up to the largest; ids may have gaps
            continue
        grown = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n))
                      for b, n in zip(box, instances.shape, strict=True))
        crop = instances[grown]
        inside = crop == object_id
        # border_value=1: beyond the array is the image's edge (or more of the grown box, never the object's
        # outside), so it makes no boundary.
        core = ndimage.binary_erosion(inside, faces, border_value=1)
        if core.all():
            values = np.ones(inside.shape)
        elif core.any():
            values = ndimage.distance_transform_edt(core, sampling=sampling)
            values /= values[inside].max()
        else:
            touching = ndimage.binary_dilation((crop > 0) & ~inside, faces)
            values = (~touching).astype(np.float64)
        region = distance[grown]  # a view: written in place
        region[inside] = values[inside]
    return distance


# Cells as an instance map: connected components of a class map, touching cells separated.

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
    return measure.label(classes, background=0, connectivity=connectivity)  # type: ignore[no-untyped-call]


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


# The border weight map: class balance plus the border term.

def balanced_class_weights(classes: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """Per-class weights ``n / (k * n_c)`` that balance the class frequencies of one image.

    ``n`` is the number of non-ignored pixels, ``n_c`` those of class ``c`` and ``k`` the number of classes
    present among them (scikit-learn's "balanced"); the weights then average to 1 over the non-ignored
    pixels, so they rescale the classes without rescaling the loss.

    Args:
        classes: integer or bool class map; ignored pixels may hold any value (e.g. a negative ignore label).
        ignore: bool mask of pixels that are not counted.

    Returns:
        float64 weights indexed by class id, ``classes.max() + 1`` long; classes absent from the counted
        pixels weigh 0.
    """
    ignored = None if ignore is None else _mask(ignore, np.shape(classes))
    classes = _class_map(classes, ignored)
    counted = classes if ignored is None else classes[~ignored]
    counts = np.bincount(counted.ravel(), minlength=int(classes.max(initial=0)) + 1)
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = counted.size / (np.count_nonzero(present) * counts[present])
    return weights


def border_weight_map(classes: np.ndarray, instances: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0,
                      class_weights: ClassWeights = "balanced", ignore: np.ndarray | None = None,
                      spacing: Sequence[float] | None = None) -> np.ndarray:
    """The paper's weight map for one training image, 2D or 3D.

    Args:
        classes: integer or bool class map that the network is trained on, 0 = background; ignored pixels
            may hold any value (e.g. a negative ignore label).
        instances: the cells, an integer map with a distinct id per cell and 0 elsewhere; cells must be
            apart (see ``separate_touching``), and every cell pixel must be foreground in ``classes``.
            For binary labels use ``instances_from_classes(classes)``. With fewer than two cells the
            border term is 0.
        w0: height of the border term.
        sigma: width of the border term, in the units of ``spacing`` (pixels by default).
        class_weights: ``"balanced"`` (see ``balanced_class_weights``), a weight per class id, or None for
            no class balancing (w_c = 1).
        ignore: bool mask of pixels that weigh 0; they are not counted for the class balance either.
        spacing: physical size of a pixel along each axis, for anisotropic volumes; distances and ``sigma``
            are then in these units.

    Returns:
        float32 weights, same shape as ``classes``.
    """
    ignored = None if ignore is None else _mask(ignore, np.shape(classes))
    classes = _class_map(classes, ignored)
    instances = np.asarray(instances)
    if instances.shape != classes.shape:
        raise BiounetError(f"instance map shape {instances.shape} differs from class map shape {classes.shape}")
    if not np.issubdtype(instances.dtype, np.integer) or (instances.size and instances.min() < 0):
        raise BiounetError("instance map must hold non-negative integer ids")
    stray = (instances > 0) & (classes == 0)
    if np.any(stray if ignored is None else stray & ~ignored):
        raise BiounetError("some cell pixels are background in the class map: derive the classes from the "
                           "separated instances")
    if not (sigma > 0 and w0 >= 0):
        raise BiounetError(f"need sigma > 0 and w0 >= 0, got sigma={sigma}, w0={w0}")
    sampling = _spacing(spacing, classes.ndim)

    weights = _class_weight_table(class_weights, classes, ignored)[classes]
    if w0 > 0:
        cutoff = _CUTOFF_SIGMAS * sigma
        d1, d2 = _two_nearest_distances(instances, cutoff, sampling)
        total = d1 + d2
        border = (classes == 0) & (total <= cutoff)
        weights[border] += w0 * np.exp(-(total[border] ** 2) / (2.0 * sigma**2))
    if ignored is not None:
        weights[ignored] = 0.0
    return weights.astype(np.float32)


def _two_nearest_distances(instances: np.ndarray, cutoff: float,
                           spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest cell, exact where <= ``cutoff`` and inf where unknown."""
    # find_objects lists every id up to the largest, so make the ids 1..n.
    cells, _, _ = relabel_sequential(instances)  # type: ignore[no-untyped-call]
    nearest = np.full(cells.shape, np.inf)
    second = np.full(cells.shape, np.inf)
    margins = [math.ceil(cutoff / s) for s in spacing]
    for cell_id, box in enumerate(ndimage.find_objects(cells), start=1):
        # Every pixel outside the grown box is farther than the cutoff from this cell along some axis.
        grown = tuple(slice(max(b.start - m, 0), min(b.stop + m, n))
                      for b, m, n in zip(box, margins, cells.shape, strict=True))
        distance = ndimage.distance_transform_edt(cells[grown] != cell_id, sampling=spacing)
        near, next_ = nearest[grown], second[grown]  # views: updated in place
        np.minimum(next_, np.maximum(near, distance), out=next_)
        np.minimum(near, distance, out=near)
    return nearest, second


def _class_weight_table(class_weights: ClassWeights, classes: np.ndarray, ignored: np.ndarray | None) -> np.ndarray:
    n_classes = int(classes.max(initial=0)) + 1
    if class_weights is None:
        return np.ones(n_classes)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise BiounetError(f"class_weights must be 'balanced', a sequence or None, got {class_weights!r}")
        return balanced_class_weights(classes, ignored)
    table = np.asarray(class_weights, dtype=np.float64)
    if table.ndim != 1 or len(table) < n_classes:
        raise BiounetError(f"class_weights needs one weight per class id 0..{n_classes - 1}, got {table.shape}")
    if not np.all(np.isfinite(table) & (table >= 0)):
        raise BiounetError("class_weights must be finite and non-negative")
    return table


def _class_map(classes: np.ndarray, ignored: np.ndarray | None) -> np.ndarray:
    """Validated class ids, with ignored pixels (whose value may be anything) set to 0."""
    classes = np.asarray(classes)
    if classes.dtype == bool:
        classes = classes.astype(np.intp)
    if not np.issubdtype(classes.dtype, np.integer):
        raise BiounetError(f"class map must be integer or bool, got {classes.dtype}")
    if ignored is not None:
        classes = np.where(ignored, 0, classes)
    if classes.size and classes.min() < 0:
        raise BiounetError("class map has negative class ids outside the ignored pixels")
    return classes


def _mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool or mask.shape != shape:
        raise BiounetError(f"ignore must be a bool mask of shape {shape}, got {mask.dtype} {mask.shape}")
    return mask


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim or not all(s > 0 for s in values):
        raise BiounetError(f"spacing needs {ndim} positive values, got {tuple(spacing)}")
    return values
