"""Objects from probabilities: seeded watershed for background/interior/boundary and foreground/distance
models, n-D.

For a three-class model (:mod:`biounet.data.targets`):

1. the object pixels: ``interior + boundary > foreground``;
2. seeds: the connected components (face connectivity) of ``interior > seed`` within the object pixels; a
   boundary between two touching objects keeps their interiors apart, so each object gets its own seed;
3. each seed grows over the object pixels by a watershed on ``1 - interior``, so two seeds meet where
   the interior probability is lowest, on the boundary between them;
4. objects smaller than ``min_size`` pixels are dropped, and the ids made consecutive.

Object pixels that no seed reaches (an object whose interior was never confident) are dropped with it.

A foreground/distance model (``UNetConfig.output == "distance"``, :func:`~biounet.data.targets.distance_target`)
goes the same way with its own channels: objects are ``foreground > foreground``, seeds the connected
components of ``distance > seed`` within them, and the watershed floods ``1 - distance`` (the negated
distance, shifted), so two seeds meet where the distance between them is lowest, along the contact.

For a two-class model, objects are the connected components of ``foreground probability > foreground``.

Everything is computed from the probability map of the whole image, which overlap-tile prediction makes
equal to the untiled one, so objects crossing tile borders are whole and the result does not depend on the
tiling.

The same objects for a prediction store too large for memory (:func:`instances_to_store`), block by block.
The seeded watershed splits each connected piece of the object pixels on its own: its seeds lie inside it
and its flooding never leaves it. So the exact out-of-core result comes from those pieces:

1. every block's object pixels are labelled (face connectivity), and the labels that meet across block faces
   are joined (union-find), giving every piece of the whole image with its bounding box;
2. each piece is split from the probabilities of its bounding box alone, exactly as the whole image would
   split it, and written with a provisional id;
3. the ids are made those of the whole-image result: objects of ``min_size`` pixels or more, numbered in the
   raster order of their seed's first pixel (the order ``ndimage.label`` numbers the seeds in).

Memory is bounded by a block and by the largest piece's bounding box (a nucleus, or a cluster of touching
ones), not by the image. The result goes to the store's ``instances/0`` (uint32), beside ``prob/0`` and
``mask/0``.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from biounet.errors import BiounetError
from biounet.infer.store import create_image_like
from biounet.models.config import OutputKind
from biounet.models.instance_params import InstanceParams
from biounet.optional import optional_import


def instances_from_probabilities(probabilities: np.ndarray, params: InstanceParams | None = None,
                                 output: OutputKind = "classes") -> np.ndarray:
    """Instance ids (0 = background, objects 1..n) from ``(C, *S)`` probabilities.

    Args:
        probabilities: three channels (background, interior, boundary) for an instance model; two channels
            (background, foreground) or one (foreground, sigmoid) for a semantic model, whose objects
            are then connected components; two (foreground, distance) for a ``distance`` model.
        params: thresholds and minimum size; defaults when ``None``.
        output: the model's ``UNetConfig.output``: what the channels mean.

    Returns:
        ``int32`` ids of shape ``S``.
    """
    params = params or InstanceParams()
    probabilities = np.asarray(probabilities)
    channels = probabilities.shape[0]
    if output == "distance" and channels != 2:
        raise BiounetError(f"a distance model's probabilities have 2 channels, got {channels}")
    if seeded(channels, output):
        ids, _ = _seeded_watershed(probabilities[1], object_pixels(probabilities, params, output), params.seed)
    elif channels in (1, 2):
        ids, _ = ndimage.label(object_pixels(probabilities, params))
    else:
        raise BiounetError(f"instances need 1, 2 or 3 probability channels, got {channels}")
    return drop_small(ids, params.min_size)


def seeded(channels: int, output: OutputKind = "classes") -> bool:
    """Whether a model's objects are split by seeds (three classes, or foreground/distance) rather than
    being connected components.

    Args:
        channels: its probability channels.
        output: its ``UNetConfig.output``.
    """
    return output == "distance" or channels == 3


def object_pixels(probabilities: np.ndarray, params: InstanceParams, output: OutputKind = "classes") -> np.ndarray:
    """The pixels of some object: ``interior + boundary > foreground`` for three channels, the foreground
    (channel 0) ``> foreground`` for a ``distance`` model, the last channel ``> foreground`` for one or two."""
    if output == "distance":
        return probabilities[0] > params.foreground
    if probabilities.shape[0] == 3:
        return (probabilities[1] + probabilities[2]) > params.foreground
    return probabilities[-1] > params.foreground


def _seeded_watershed(height: np.ndarray, objects: np.ndarray, seed: float) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2 and 3: the objects split by seeds grown over them; also the seeds, numbered in raster order.

    ``height`` is channel 1 of a seeded model, high inside the objects and low between them: the interior
    probability, or the distance. Seeds lie inside the objects, so each connected piece of the objects is
    split on its own: the property the block-by-block :func:`instances_to_store` relies on.
    """
    seeds, _ = ndimage.label((height > seed) & objects)
    return watershed(1.0 - height, markers=seeds, mask=objects), seeds  # type: ignore[no-untyped-call]


def drop_small(ids: np.ndarray, min_size: int) -> np.ndarray:
    """``ids`` without objects of fewer than ``min_size`` pixels, renumbered 1..n in order of first id."""
    sizes = np.bincount(ids.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lookup = np.zeros(sizes.size, np.int32)
    lookup[keep] = np.arange(1, np.count_nonzero(keep) + 1, dtype=np.int32)
    return lookup[ids]


# --- block by block, for a prediction store ---------------------------------------------------------------

def instances_to_store(store: str | Path, params: InstanceParams | None, output: OutputKind = "classes") -> int:
    """Writes ``instances/0`` into a finished prediction store.

    Args:
        store: a ``<stem>.zarr`` written by :func:`~biounet.infer.out_of_core.predict_to_store`.
        params: an instance model's post-processing (three channels, or foreground/distance), or ``None``
            for the connected components of a semantic model's foreground (its last channel above 0.5);
            a ``distance`` model's defaults when ``None`` for one.
        output: the model's ``UNetConfig.output``: what the store's channels mean.

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
        piece = _Item(prob, prob_key, prob.dtype == np.uint8)
        count += _split_item(piece, _Target(out, item), block, _Post(params, output), count)
    return count


class _Item:
    """One item's float probabilities ``(C, *S)``, read region by region (uint8 stores scaled back).

    Args:
        prob: the store's ``prob/0``.
        key: an index per axis before space: the item's time and stack plane, ``slice(None)`` for channels.
        quantised: whether ``prob`` holds ``round(255 p)``.
    """

    def __init__(self, prob: Any, key: tuple[Any, ...], quantised: bool) -> None:
        self.prob, self.key, self.quantised = prob, key, quantised
        channels = int(prob.shape[key.index(slice(None))])
        self.shape = (channels, *(int(n) for n in prob.shape[len(key):]))

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        block = np.asarray(self.prob[self.key + region], np.float32)
        return block / np.float32(255.0) if self.quantised else block


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
    components) and what the channels mean."""

    def __init__(self, params: InstanceParams | None, output: OutputKind) -> None:
        self.params, self.output = params, output

    def objects(self, probabilities: np.ndarray) -> np.ndarray:
        """The object pixels: :func:`object_pixels`, or a semantic model's last channel above 0.5."""
        if self.params is None:
            return probabilities[-1] > 0.5
        return object_pixels(probabilities, self.params, self.output)

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
    firsts: list[int] = []  # per provisional id (1-based), the flat index of its seed's first pixel
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
        probabilities = item.read(region)
        labels, found = ndimage.label(post.objects(probabilities))
        provisional = np.zeros(labels.shape, np.uint32)
        ids = np.full(found + 1, -1, np.int64)
        for k, box in enumerate(ndimage.find_objects(labels), start=1):
            assert box is not None
            shared = any((b.start == 0 and r.start > 0) or (b.stop == r.stop - r.start and r.stop < n)
                         for b, r, n in zip(box, region, shape, strict=True))
            global_box = tuple(slice(b.start + r.start, b.stop + r.start) for b, r in zip(box, region, strict=True))
            if not shared:
                split, seed_firsts = _split(probabilities[(slice(None),) + box], labels[box] == k, global_box,
                                            shape, post)
                provisional[box] = np.where(split > 0, _numbered(split, len(firsts)), provisional[box])
                _count(split, seed_firsts, firsts, sizes)
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
        probabilities = item.read(box)
        labels, _ = ndimage.label(post.objects(probabilities))
        piece = labels == labels[tuple(p - b.start for p, b in zip(anchors[members[0]], box, strict=True))]
        split, seed_firsts = _split(probabilities, piece, box, shape, post)
        current = target[box]
        target[box] = np.where(split > 0, _numbered(split, len(firsts)), current)
        _count(split, seed_firsts, firsts, sizes)

    # 3. the whole image's numbering: kept objects in the order of their seeds' first pixels
    smallest = max(post.params.min_size if post.params is not None else 1, 1)
    kept = [k for k in np.argsort(np.asarray(firsts, np.int64), kind="stable") if sizes[k] >= smallest]
    final = np.zeros(len(firsts) + 1, np.uint32)
    final[np.asarray(kept, np.int64) + 1] = np.arange(offset + 1, offset + 1 + len(kept), dtype=np.uint32)
    for start in grid:
        region = tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape, strict=True))
        target[region] = final[target[region]]
    return len(kept)


def _split(probabilities: np.ndarray, piece: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...],
           post: _Post) -> tuple[np.ndarray, list[int]]:
    """A piece of the object pixels split as the whole image would split it: labels 1..k inside ``piece``
    and, per label, the whole image's flat index of its seed's first pixel."""
    if post.params is None or not post.seeded(probabilities.shape[0]):
        return piece.astype(np.int32), [_first_flat(piece, box, shape)]
    split, seeds = _seeded_watershed(probabilities[1], piece, post.params.seed)
    count = int(seeds.max(initial=0))
    firsts = ndimage.minimum(np.arange(seeds.size).reshape(seeds.shape), seeds, np.arange(1, count + 1))
    local = np.unravel_index(np.asarray(firsts, np.int64), seeds.shape)
    flat = np.ravel_multi_index(tuple(ix + b.start for ix, b in zip(local, box, strict=True)), shape)
    return split, [int(f) for f in np.atleast_1d(flat)]


def _numbered(split: np.ndarray, before: int) -> np.ndarray:
    """Provisional ids: label k of ``split`` becomes ``before + k``."""
    return np.where(split > 0, split.astype(np.uint32) + np.uint32(before), np.uint32(0))


def _count(split: np.ndarray, seed_firsts: list[int], firsts: list[int], sizes: list[int]) -> None:
    firsts += seed_firsts
    sizes += np.bincount(split.ravel(), minlength=len(seed_firsts) + 1)[1:len(seed_firsts) + 1].tolist()


def _first_flat(pixels: np.ndarray, box: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    """The whole image's flat index of the first (raster order) true pixel of ``pixels``, a crop at ``box``."""
    local = np.argwhere(pixels)[0]
    return int(np.ravel_multi_index(tuple(int(p + s.start) for p, s in zip(local, box, strict=True)), shape))
