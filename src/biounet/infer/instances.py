"""Objects from probabilities: seeded watershed for background/interior/boundary and foreground/distance
models, n-D.

For a three-class model (:mod:`biounet.data.targets`):

1. the object pixels: ``interior + boundary > foreground``, in or next to (a face neighbour of) the core,
   the pixels with ``interior > seed``. The boundary class is an object's pixels with a face neighbour
   outside it, so no interior pixel has a face neighbour outside: an object is its interior grown by one
   pixel (but for a rare corner pixel that touches the interior only diagonally). A network blurs its
   boundary class outwards around small objects, and ``interior + boundary`` alone made nuclei under 50
   pixels 1.5x their true area (on the 55 held-out images of ``benchmarks/bench_generalist.py
   --validation``, accuracy@0.5 0.723 -> 0.746 with the core at 0.5);
2. the pieces: the connected components (face connectivity) of the object pixels;
3. seeds: each connected component of the core within a piece (diagonals included) seeds an object. Where
   two touching objects' cores merged into one (a waist), the component's distance transform, smoothed by a
   Gaussian of :data:`SPLIT_SIGMA` pixels, has a peak in the middle of each, so a component with regional
   maxima at least :data:`SPLIT_DEPTH` above the saddle between them (``skimage.morphology.h_maxima``) seeds
   one object per maximum. The components alone (the rule before) merged such objects. Sizes are the
   model's pixels (:class:`PixelSizes`);
4. each seed grows over its piece by a watershed on ``1 - interior``, so two seeds meet where the interior
   probability is lowest, on the boundary between them;
5. objects smaller than ``min_size`` pixels are dropped, and the ids made consecutive in the raster order of
   their first pixels.

With both rules and the thresholds tuned again (seed 0.4), the shipped ``nuclei`` model scores 0.766 on those
55 images (0.723 before), its 5 colour ones 0.631 (0.571).

Object pixels that no seed reaches (a piece whose interior was never confident) are dropped with it.

A foreground/distance model (``UNetConfig.output == "distance"``, :func:`~biounet.data.targets.distance_target`)
goes its own way with its own channels: objects are ``foreground > foreground``, seeds the connected
components of ``distance > seed`` within them (the network's distance already peaks once per object), and the
watershed floods ``1 - distance`` (the negated distance, shifted), so two seeds meet where the distance between
them is lowest, along the contact.

For a two-class model, objects are the connected components of ``foreground probability > foreground``.

Everything is computed from the probability map of the whole image, which overlap-tile prediction makes
equal to the untiled one, so objects crossing tile borders are whole and the result does not depend on the
tiling. The seeds of a piece come from its own core and its flooding never leaves it.

The same objects for a prediction store too large for memory (:func:`instances_to_store`), block by block.
The seeded watershed splits each connected piece of the object pixels on its own: its seeds come from it
alone and its flooding never leaves it. So the exact out-of-core result comes from those pieces:

1. every block's object pixels (from its probabilities and a one-pixel margin, for the growth of step 1
   above) are labelled (face connectivity), and the labels that meet across block faces are joined
   (union-find), giving every piece of the whole image with its bounding box;
2. each piece is split from the probabilities of its bounding box alone, exactly as the whole image would
   split it, and written with a provisional id;
3. the ids are made those of the whole-image result: objects of ``min_size`` pixels or more, numbered in the
   raster order of their first pixels (as the whole image numbers them).

Memory is bounded by a block and by the largest piece's bounding box (a nucleus, or a cluster of touching
ones), not by the image. The result goes to the store's ``instances/0`` (uint32), beside ``prob/0`` and
``mask/0``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from biounet.errors import BiounetError
from biounet.infer.rescale import nearest_indices
from biounet.infer.store import create_image_like, dequantised
from biounet.models.config import OutputKind
from biounet.models.instance_params import InstanceParams
from biounet.optional import optional_import

# Step 3 for a three-class model, in the model's pixels: the Gaussian that smooths a core's distance transform,
# and how far a peak of it must rise above the saddle to a higher one to seed an object of its own. Chosen on the
# 55 held-out images of benchmarks/bench_generalist.py --validation (nuclei, seed threshold tuned), with seeds
# from the peaks alone (a rule tried before this one): (1, 1) 0.768, (1.5, 0.5) 0.763, (1.5, 1) 0.757;
# unsmoothed, every ridge of the raw transform is a peak and nuclei broke into pieces (0.57).
SPLIT_SIGMA = 1.0
SPLIT_DEPTH = 1.0


@dataclass(frozen=True)
class PixelSizes:
    """The post-processing's sizes, counted in the model's pixels, in the pixels of an image that was resized by
    ``scale`` for the model: an image shrunk for the model is split on its own grid (one enlarged for it is
    split on the model's, :func:`~biounet.infer.stack.stack_instances`). Counting them in the image's pixels
    instead scored accuracy@0.5 0.633 against 0.655 on the same probabilities of DSB images shown at half size
    and predicted enlarged 2x, when such images were still split on their own grid.

    Args:
        scale: the factor the image was resized by for the model (1: as it is).
        ndim: its spatial dimensions.
    """

    scale: float = 1.0
    ndim: int = 2

    def min_size(self, model_pixels: int) -> int:
        """A minimum object size of ``model_pixels`` in the image's pixels."""
        return model_pixels if self.scale == 1.0 else round(model_pixels / self.scale**self.ndim)

    @property
    def growth(self) -> int:
        """The core's growth (the boundary class's one model pixel) in whole image pixels, at least one."""
        return max(1, round(1.0 / self.scale))

    @property
    def sigma(self) -> float:
        """:data:`SPLIT_SIGMA` in the image's pixels."""
        return SPLIT_SIGMA / self.scale


def instances_from_probabilities(probabilities: np.ndarray, params: InstanceParams | None = None,
                                 output: OutputKind = "classes", scale: float = 1.0) -> np.ndarray:
    """Instance ids (0 = background, objects 1..n) from ``(C, *S)`` probabilities.

    Args:
        probabilities: three channels (background, interior, boundary) for an instance model; two channels
            (background, foreground) or one (foreground, sigmoid) for a semantic model, whose objects
            are then connected components; two (foreground, distance) for a ``distance`` model.
        params: thresholds and minimum size; defaults when ``None``.
        output: the model's ``UNetConfig.output``: what the channels mean.
        scale: the factor the image was resized by for the model, whose probabilities were resized back onto
            the image's grid (:mod:`biounet.infer.rescale`). The post-processing's sizes are the model's
            pixels, where it was tuned: the minimum size, the core's growth and the seeds' distances, their
            smoothing and depth (:class:`PixelSizes`).

    Returns:
        ``int32`` ids of shape ``S``.
    """
    params = params or InstanceParams()
    probabilities = np.asarray(probabilities)
    sizes = PixelSizes(scale, probabilities.ndim - 1)
    channels = probabilities.shape[0]
    if output == "distance" and channels != 2:
        raise BiounetError(f"a distance model's probabilities have 2 channels, got {channels}")
    if seeded(channels, output):
        ids = _seeded_watershed(probabilities, object_pixels(probabilities, params, output, scale), params.seed,
                                output, sizes)
    elif channels in (1, 2):
        ids, _ = ndimage.label(object_pixels(probabilities, params))
    else:
        raise BiounetError(f"instances need 1, 2 or 3 probability channels, got {channels}")
    return drop_small(ids, sizes.min_size(params.min_size))


def seeded(channels: int, output: OutputKind = "classes") -> bool:
    """Whether a model's objects are split by seeds (three classes, or foreground/distance) rather than
    being connected components.

    Args:
        channels: its probability channels.
        output: its ``UNetConfig.output``.
    """
    return output == "distance" or channels == 3


def object_pixels(probabilities: np.ndarray, params: InstanceParams, output: OutputKind = "classes",
                  scale: float = 1.0) -> np.ndarray:
    """The pixels of some object: for three channels ``interior + boundary > foreground`` in or next to (a
    face neighbour of) a pixel with ``interior > seed`` (step 1 of the module's description); the foreground
    (channel 0) ``> foreground`` for a ``distance`` model; the last channel ``> foreground`` for one or two.

    A three-class model's object pixels at a pixel depend on its neighbours: a region's come from its
    probabilities grown by :attr:`PixelSizes.growth` pixels (all of the image's where it ends); ``scale`` as
    for :func:`instances_from_probabilities`."""
    if output == "distance":
        return probabilities[0] > params.foreground
    if probabilities.shape[0] == 3:
        near_core = ndimage.binary_dilation(probabilities[1] > params.seed,  # face neighbours
                                            iterations=PixelSizes(scale, probabilities.ndim - 1).growth)
        return ((probabilities[1] + probabilities[2]) > params.foreground) & near_core
    return probabilities[-1] > params.foreground


def _full(ndim: int) -> np.ndarray:
    """Every neighbour, diagonals included."""
    return ndimage.generate_binary_structure(ndim, ndim)


def _seeded_watershed(probabilities: np.ndarray, objects: np.ndarray, seed: float, output: OutputKind,
                      sizes: PixelSizes) -> np.ndarray:
    """Steps 2 to 4 for the whole image (or for one piece, ``objects`` being it): the objects grown from
    their seeds, numbered in the raster order of their first pixels.

    Seeds come from the core of one piece alone and flooding never leaves a piece, so each piece is split as
    it would be on its own: the property the block-by-block :func:`instances_to_store` relies on.
    """
    if output == "distance":
        seeds, _ = ndimage.label((probabilities[1] > seed) & objects)
    else:
        seeds = _core_seeds(probabilities[1], objects, seed, sizes)
    # Channel 1 is high inside the objects and low between them: the interior probability, or the distance.
    ids = watershed(1.0 - probabilities[1], markers=seeds, mask=objects)  # type: ignore[no-untyped-call]
    return by_first_pixel(np.asarray(ids, np.int32))


def by_first_pixel(ids: np.ndarray) -> np.ndarray:
    """``ids`` renumbered 1..n in the raster order of each object's first pixel."""
    values, firsts = np.unique(ids.ravel(), return_index=True)
    lookup = np.zeros(int(values.max(initial=0)) + 1, np.int32)
    objects = values > 0
    lookup[values[objects][np.argsort(firsts[objects], kind="stable")]] = np.arange(1, int(objects.sum()) + 1,
                                                                                     dtype=np.int32)
    return lookup[ids]


# A height added to a core component's smoothed distance for its regional maxima: every component rises far
# above the pixels around it, so each seeds at least one object whatever its size.
_CORE_RAISE = 1000.0


def _core_seeds(interior: np.ndarray, objects: np.ndarray, seed: float, sizes: PixelSizes) -> np.ndarray:
    """Step 3: seed labels from the core (``interior > seed`` within ``objects``). Each connected component of
    the core within a piece (diagonals included) is a seed; one whose smoothed distance transform has peaks at
    least :data:`SPLIT_DEPTH` above the saddle between them gives one seed per peak (``h_maxima``), computed
    from the component alone (:func:`_component_peaks`).

    A component whose own distance transform nowhere exceeds the depth cannot have two such peaks (its smoothed
    distance, above 0, varies by less), so it is its own seed without that work. The transform of the whole
    core, at least any one component's (other components only add pixels that are not background), finds
    most of those at once: an untrained network's noise makes thousands.
    """
    core = (interior > seed) & objects
    pieces, _ = ndimage.label(objects)
    components, count = ndimage.label(core, structure=_full(core.ndim))
    if count == 0:
        return components
    # A component that touches two pieces only diagonally is one per piece: the pieces are split apart.
    pairs, inverse = np.unique(components[core].astype(np.int64) * (int(pieces.max()) + 1) + pieces[core],
                               return_inverse=True)
    if len(pairs) != count:
        components[core] = inverse.ravel() + 1
    bound = ndimage.distance_transform_edt(np.pad(core, 1), sampling=sizes.scale)[(slice(1, -1),) * core.ndim]
    thick = np.unique(components[bound > SPLIT_DEPTH]).tolist()
    boxes = ndimage.find_objects(components)
    seeds = components.copy()
    next_label = int(components.max()) + 1
    crops = [components[boxes[k - 1]] == k for k in thick]
    for k, peaks in zip(thick, _component_peaks(crops, sizes), strict=True):
        if peaks is None or peaks.max() <= 1:
            continue
        box = boxes[k - 1]
        seeds[box] = np.where(components[box] == k, 0, seeds[box])
        seeds[box] = np.where(peaks > 0, peaks + (next_label - 1), seeds[box])
        next_label += int(peaks.max())
    return seeds


# How long a strip of component crops :func:`_component_peaks` packs for one pass of the filters, in pixels.
_STRIP = 2048


def _component_peaks(components: list[np.ndarray], sizes: PixelSizes) -> list[np.ndarray | None]:
    """For each component (a boolean crop), its peaks where it has several: the regional maxima of its
    Gaussian-smoothed distance transform at least :data:`SPLIT_DEPTH` above the saddle to a higher one,
    labelled 1..n in raster order (diagonals included); ``None`` where it has one (or its transform nowhere
    exceeds the depth, so that it cannot have two).

    Each component is computed as if alone, padded with background wider than the Gaussian reaches, but the
    crops are laid side by side in strips along the last axis so that the distance transform and the Gaussian
    run once per strip, not once per component (hundreds in an image of nuclei): each crop's ring of background
    makes that exact (the nearest background of a pixel is in its own crop, and the Gaussian reads zeros past
    the crop as it would read its reflected ring). ``h_maxima`` (the costly part) runs only on the crops with
    two or more flat local maxima: a crop with one has one regional maximum, so one peak at most.
    """
    pad = int(np.ceil(4 * sizes.sigma)) + 1  # the Gaussian's radius (truncate=4) and the transform's edge
    crops = [np.pad(component, pad) for component in components]
    peaks: list[np.ndarray | None] = [None] * len(crops)
    full = _full(crops[0].ndim) if crops else None
    # Tallest first, so that a strip's crops are of about one height and it is mostly crops.
    order = sorted(range(len(crops)), key=lambda i: crops[i].shape[:-1], reverse=True)
    first = 0
    while first < len(order):
        last, width = first + 1, crops[order[first]].shape[-1]
        while last < len(order) and width + crops[order[last]].shape[-1] <= _STRIP:
            width += crops[order[last]].shape[-1]
            last += 1
        strip, first = order[first:last], last
        starts = np.cumsum([0] + [crops[i].shape[-1] for i in strip])
        canvas = np.zeros((*np.max([crops[i].shape[:-1] for i in strip], axis=0), width), bool)
        regions = [tuple(slice(0, n) for n in crops[i].shape[:-1]) + (slice(starts[j], starts[j + 1]),)
                   for j, i in enumerate(strip)]
        for i, region in zip(strip, regions, strict=True):
            canvas[region] = crops[i]
        distance = ndimage.distance_transform_edt(canvas, sampling=sizes.scale)  # in the model's pixels
        height = ndimage.gaussian_filter(distance.astype(np.float32), sizes.sigma) + np.float32(_CORE_RAISE) * canvas
        # Flat local maxima, and how many each crop holds (a maximum lies in one crop: by its first column).
        tops, _ = ndimage.label((height == ndimage.maximum_filter(height, footprint=full)) & canvas,
                                structure=full)
        columns = [box[-1].start for box in ndimage.find_objects(tops)]
        several = np.bincount(np.searchsorted(starts, columns, side="right") - 1, minlength=len(strip)) > 1
        for j in np.flatnonzero(several).tolist():
            region = regions[j]
            if distance[region].max() <= SPLIT_DEPTH:  # the bound was another component's doing: thin alone
                continue
            found, _ = ndimage.label((h_maxima(height[region], SPLIT_DEPTH) > 0) & crops[strip[j]],  # type: ignore[no-untyped-call]
                                     structure=full)
            peaks[strip[j]] = found[(slice(pad, -pad),) * found.ndim]
    return peaks


def drop_small(ids: np.ndarray, min_size: int) -> np.ndarray:
    """``ids`` without objects of fewer than ``min_size`` pixels, renumbered 1..n in order of first id."""
    sizes = np.bincount(ids.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lookup = np.zeros(sizes.size, np.int32)
    lookup[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
    return lookup[ids]


# --- block by block, for a prediction store ---------------------------------------------------------------

def instances_to_store(store: str | Path, params: InstanceParams | None, output: OutputKind = "classes",
                       scale: float = 1.0) -> int:
    """Writes ``instances/0`` into a finished prediction store.

    Args:
        store: a ``<stem>.zarr`` written by :func:`~biounet.infer.out_of_core.predict_to_store`.
        params: an instance model's post-processing (three channels, or foreground/distance), or ``None``
            for the connected components of a semantic model's foreground (its last channel above 0.5);
            a ``distance`` model's defaults when ``None`` for one.
        output: the model's ``UNetConfig.output``: what the store's channels mean.
        scale: the factor the input was resized by for the model (the store is on the input's grid); see
            :func:`instances_from_probabilities`.

    Returns:
        The number of objects over all items of a stack (ids are unique over the stack, in item order).
    """
    zarr = optional_import("zarr", "writing .zarr outputs", store)
    if output == "distance":
        params = params or InstanceParams()
    root = zarr.open_group(str(store), mode="r+")
    if not np.asarray(root["blocks"][...]).all():
        raise BiounetError("the prediction store is unfinished; run the same predict command again first", store)
    block = tuple(int(b) for b in root.attrs["biounet"]["block_shape"])
    prob, mask = root["prob/0"], root["mask/0"]
    out = create_image_like(root, "instances", "mask", "uint32")
    names = [a["name"] for a in root["mask"].attrs["multiscales"][0]["axes"]]
    leading = names[: len(names) - len(block)]  # t and a stack's z: the items
    prob_names = [a["name"] for a in root["prob"].attrs["multiscales"][0]["axes"]][: prob.ndim - len(block)]
    count = 0
    for item in np.ndindex(*(int(n) for n in mask.shape[: len(leading)])):
        values = dict(zip(leading, item, strict=True))
        prob_key = tuple(slice(None) if n == "c" else values[n] for n in prob_names)
        piece = _Item(prob, prob_key)
        count += _split_item(piece, _Target(out, item), block, _Post(params, output, PixelSizes(scale, len(block))),
                             count)
    return count


class _Item:
    """One item's float probabilities ``(C, *S)``, read region by region (uint8 stores scaled back).

    Args:
        prob: the store's ``prob/0``.
        key: an index per axis before space: the item's time and stack plane, ``slice(None)`` for channels.
    """

    def __init__(self, prob: Any, key: tuple[Any, ...]) -> None:
        self.prob, self.key = prob, key
        channels = int(prob.shape[key.index(slice(None))])
        self.shape = (channels, *(int(n) for n in prob.shape[len(key):]))

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        return dequantised(self.prob[self.key + region])


class _Target:
    """One item's region of ``instances/0``."""

    def __init__(self, out: Any, item: tuple[int, ...]) -> None:
        self.out, self.item = out, item

    def __getitem__(self, region: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.out[self.item + region])

    def __setitem__(self, region: tuple[slice, ...], value: np.ndarray) -> None:
        self.out[self.item + region] = value


class _Post:
    """How a store's probabilities become objects: the post-processing (``None``: a semantic model's
    components), what the channels mean and the sizes in the store's pixels."""

    def __init__(self, params: InstanceParams | None, output: OutputKind, sizes: PixelSizes) -> None:
        self.params, self.output, self.sizes = params, output, sizes

    def objects(self, probabilities: np.ndarray) -> np.ndarray:
        """The object pixels: :func:`object_pixels`, or a semantic model's last channel above 0.5."""
        if self.params is None:
            return probabilities[-1] > 0.5
        return object_pixels(probabilities, self.params, self.output, self.sizes.scale)

    @property
    def margin(self) -> int:
        """How far beyond a region the probabilities decide its object pixels."""
        return self.sizes.growth

    @property
    def min_size(self) -> int:
        """The smallest object kept, in the store's pixels."""
        return max(self.sizes.min_size(self.params.min_size) if self.params is not None else 1, 1)

    def seeded(self, channels: int) -> bool:
        """Whether pieces are split by seeds (else each piece is one object)."""
        return self.params is not None and seeded(channels, self.output)


def _split_item(item: _Item, target: _Target, block: tuple[int, ...], post: _Post, offset: int) -> int:
    shape = item.shape[1:]
    grid = list(itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True))))
    parent: list[int] = []
    boxes: list[list[tuple[int, int]]] = []
    anchors: list[tuple[int, ...]] = []  # a pixel of each deferred piece, to find it again in its bounding box
    faces: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}  # (axis, block start) -> ids on its last plane
    firsts: list[int] = []  # per provisional id (1-based), the flat index of its first pixel
    sizes: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # 1. each block: pieces inside it are split at once; those on a face shared with another block are
    #    joined with the neighbours' across it and split later, from their whole bounding box.
    for start in grid:
        region = tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape, strict=True))
        probabilities, objects = _read_objects(item, region, post)
        labels, found = ndimage.label(objects)
        provisional = np.zeros(labels.shape, np.uint32)
        ids = np.full(found + 1, -1, np.int64)
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            assert box is not None
            shared = any((b.start == 0 and r.start > 0) or (b.stop == r.stop - r.start and r.stop < n)
                         for b, r, n in zip(box, region, shape, strict=True))
            global_box = tuple(slice(b.start + r.start, b.stop + r.start) for b, r in zip(box, region, strict=True))
            if not shared:
                split, object_firsts = _split(probabilities[(slice(None),) + box], labels[box] == k, global_box,
                                            shape, post)
                provisional[box] = np.where(split > 0, _numbered(split, len(firsts)), provisional[box])
                _count(split, object_firsts, firsts, sizes)
                continue
            ids[k] = len(parent)
            parent.append(len(parent))
            boxes.append([(g.start, g.stop) for g in global_box])
            local = np.argwhere(labels[box] == k)[0]
            anchors.append(tuple(int(p + g.start) for p, g in zip(local, global_box, strict=True)))
        target[region] = provisional
        for axis in range(len(shape)):
            before = list(start)
            before[axis] -= block[axis]
            previous = faces.pop((axis, tuple(before)), None)
            plane = ids[labels.take(0, axis=axis)]
            if previous is not None:
                for a, b in set(zip(previous.ravel().tolist(), plane.ravel().tolist(), strict=True)):
                    if a >= 0 and b >= 0:
                        ra, rb = find(a), find(b)
                        if ra != rb:
                            parent[max(ra, rb)] = min(ra, rb)
            faces[(axis, start)] = ids[labels.take(-1, axis=axis)]

    # 2. the joined pieces, each from the probabilities of its bounding box
    pieces: dict[int, list[int]] = {}
    for i in range(len(parent)):
        pieces.setdefault(find(i), []).append(i)
    for members in pieces.values():
        box = tuple(slice(min(boxes[m][a][0] for m in members), max(boxes[m][a][1] for m in members))
                    for a in range(len(shape)))
        probabilities, objects = _read_objects(item, box, post)
        labels, _ = ndimage.label(objects)
        piece = labels == labels[tuple(p - b.start for p, b in zip(anchors[members[0]], box, strict=True))]
        split, object_firsts = _split(probabilities, piece, box, shape, post)
        current = target[box]
        target[box] = np.where(split > 0, _numbered(split, len(firsts)), current)
        _count(split, object_firsts, firsts, sizes)

    # 3. the whole image's numbering: kept objects in the order of their first pixels
    smallest = post.min_size
    kept = [k for k in np.argsort(np.asarray(firsts, np.int64), kind="stable") if sizes[k] >= smallest]
    final = np.zeros(len(firsts) + 1, np.uint32)
    final[np.asarray(kept, np.int64) + 1] = np.arange(offset + 1, offset + 1 + len(kept), dtype=np.uint32)
    for start in grid:
        region = tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape, strict=True))
        target[region] = final[target[region]]
    return len(kept)


def _read_objects(item: _Item, region: tuple[slice, ...], post: _Post) -> tuple[np.ndarray, np.ndarray]:
    """A region's probabilities and object pixels, the latter from the region grown by the post-processing's
    margin (within the image), as the whole image's are."""
    grown = tuple(slice(max(r.start - post.margin, 0), min(r.stop + post.margin, n))
                  for r, n in zip(region, item.shape[1:], strict=True))
    probabilities = item.read(grown)
    inner = tuple(slice(r.start - g.start, r.stop - g.start) for r, g in zip(region, grown, strict=True))
    return probabilities[(slice(None),) + inner], post.objects(probabilities)[inner]


def _split(probabilities: np.ndarray, piece: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...],
           post: _Post) -> tuple[np.ndarray, list[int]]:
    """A piece of the object pixels split as the whole image would split it: labels 1..k inside ``piece``
    and, per label, the whole image's flat index of its first pixel."""
    if post.params is None or not post.seeded(probabilities.shape[0]):
        return piece.astype(np.int32), [_first_flat(piece, box, shape)]
    split = _seeded_watershed(probabilities, piece, post.params.seed, post.output, post.sizes)
    count = int(split.max(initial=0))
    firsts = ndimage.minimum(np.arange(split.size).reshape(split.shape), split, np.arange(1, count + 1))
    local = np.unravel_index(np.asarray(firsts, np.int64), split.shape)
    flat = np.ravel_multi_index(tuple(ix + b.start for ix, b in zip(local, box, strict=True)), shape)
    return split, [int(f) for f in np.atleast_1d(flat)]


def _numbered(split: np.ndarray, before: int) -> np.ndarray:
    """Provisional ids: label k of ``split`` becomes ``before + k``."""
    return np.where(split > 0, split.astype(np.uint32) + np.uint32(before), np.uint32(0))


def _count(split: np.ndarray, object_firsts: list[int], firsts: list[int], sizes: list[int]) -> None:
    firsts += object_firsts
    sizes += np.bincount(split.ravel(), minlength=len(object_firsts) + 1)[1:len(object_firsts) + 1].tolist()


def _first_flat(pixels: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    """The whole image's flat index of the first (raster order) true pixel of ``pixels``, a crop at ``box``."""
    local = np.argwhere(pixels)[0]
    return int(np.ravel_multi_index(tuple(int(p + s.start) for p, s in zip(local, box, strict=True)), shape))


def nearest_instances(fine: str | Path, store: str | Path) -> int:
    """Writes ``instances/0`` into a finished prediction store from the objects of its input enlarged for the
    model: the ``instances/0`` of ``fine``, a store of the same input predicted on the enlarged grid
    (:func:`~biounet.infer.out_of_core.predict_to_store` with ``enlarged``; its objects by
    :func:`instances_to_store`), brought onto the store's grid by nearest neighbour and numbered in the raster
    order of their first pixels within each item, as :func:`~biounet.infer.stack.stack_instances` does in
    memory. Block by block: a block of the store reads only the window of ``fine`` its pixels take.

    Args:
        fine: the store on the enlarged grid, with its objects.
        store: the store on the input's grid.

    Returns:
        The number of objects over all items (ids unique over the stack, in item order).
    """
    zarr = optional_import("zarr", "writing .zarr outputs", store)
    source = zarr.open_group(str(fine), mode="r")["instances/0"]
    root = zarr.open_group(str(store), mode="r+")
    block = tuple(int(b) for b in root.attrs["biounet"]["block_shape"])
    out = create_image_like(root, "instances", "mask", "uint32")
    spatial, fine_spatial = tuple(out.shape[-len(block):]), tuple(source.shape[-len(block):])
    regions = [tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, spatial, strict=True))
               for start in itertools.product(*(range(0, n, b) for n, b in zip(spatial, block, strict=True)))]
    count = 0
    for item in np.ndindex(*(int(n) for n in out.shape[: out.ndim - len(block)])):
        firsts: dict[int, int] = {}  # a fine object's id -> the flat index of its first pixel here
        for region in regions:
            picks = [nearest_indices(n, m, r.start, r.stop)
                     for n, m, r in zip(fine_spatial, spatial, region, strict=True)]
            window = np.asarray(source[item + tuple(slice(int(p[0]), int(p[-1]) + 1) for p in picks)])
            ids = window[np.ix_(*(p - p[0] for p in picks))]
            out[item + region] = ids
            values, first = np.unique(ids.ravel(), return_index=True)
            local = np.unravel_index(first, ids.shape)
            flat = np.ravel_multi_index(tuple(ix + r.start for ix, r in zip(local, region, strict=True)), spatial)
            for value, index in zip(values.tolist(), np.atleast_1d(flat).tolist(), strict=True):
                if value and index < firsts.get(value, index + 1):
                    firsts[value] = index
        ordered = sorted(firsts, key=firsts.__getitem__)
        lookup = np.zeros(max(ordered, default=0) + 1, np.uint32)
        lookup[np.asarray(ordered, np.int64)] = np.arange(count + 1, count + 1 + len(ordered), dtype=np.uint32)
        for region in regions:
            out[item + region] = lookup[np.asarray(out[item + region])]
        count += len(ordered)
    return count
