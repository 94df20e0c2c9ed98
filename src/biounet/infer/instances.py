"""Objects from class probabilities: seeded watershed for background/interior/boundary models, n-D.

For a three-class model (:mod:`biounet.data.targets`):

1. the object pixels: ``interior + boundary > foreground``;
2. seeds: the connected components (face connectivity) of ``interior > seed`` within the object pixels; a
   boundary between two touching objects keeps their interiors apart, so each object gets its own seed;
3. each seed grows over the object pixels by a watershed on ``1 - interior``, so two seeds meet where
   the interior probability is lowest, on the boundary between them;
4. objects smaller than ``min_size`` pixels are dropped, and the ids made consecutive.

Object pixels that no seed reaches (an object whose interior was never confident) are dropped with it.
For a two-class model, objects are the connected components of ``foreground probability > foreground``.

Everything is computed from the probability map of the whole image, which overlap-tile prediction makes
equal to the untiled one, so objects crossing tile borders are whole and the result does not depend on the
tiling.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from biounet.errors import BiounetError
from biounet.models.instance_params import InstanceParams


def instances_from_probabilities(probabilities: np.ndarray, params: InstanceParams | None = None) -> np.ndarray:
    """Instance ids (0 = background, objects 1..n) from ``(C, *S)`` class probabilities.

    Args:
        probabilities: three channels (background, interior, boundary) for an instance model; two channels
            (background, foreground) or one (foreground, sigmoid) for a semantic model, whose objects
            are then connected components.
        params: thresholds and minimum size; defaults when ``None``.

    Returns:
        ``int32`` ids of shape ``S``.
    """
    params = params or InstanceParams()
    probabilities = np.asarray(probabilities)
    channels = probabilities.shape[0]
    if channels == 3:
        interior = probabilities[1]
        objects = object_pixels(probabilities, params)
        # Seeds lie inside the objects, so each connected piece of the objects is split on its own: the
        # property out-of-core instances (biounet.infer.instances_blocks) rely on.
        seeds, _ = ndimage.label((interior > params.seed) & objects)
        ids = watershed(1.0 - interior, markers=seeds, mask=objects)  # type: ignore[no-untyped-call]
    elif channels in (1, 2):
        ids, _ = ndimage.label(object_pixels(probabilities, params))
    else:
        raise BiounetError(f"instances need 1, 2 or 3 probability channels, got {channels}")
    return drop_small(ids, params.min_size)


def object_pixels(probabilities: np.ndarray, params: InstanceParams) -> np.ndarray:
    """The pixels of some object: ``interior + boundary > foreground`` for three channels, the last channel
    ``> foreground`` for one or two."""
    if probabilities.shape[0] == 3:
        return (probabilities[1] + probabilities[2]) > params.foreground
    return probabilities[-1] > params.foreground


def drop_small(ids: np.ndarray, min_size: int) -> np.ndarray:
    """``ids`` without objects of fewer than ``min_size`` pixels, renumbered 1..n in order of first id."""
    sizes = np.bincount(ids.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lookup = np.zeros(sizes.size, np.int32)
    lookup[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
    return lookup[ids]
