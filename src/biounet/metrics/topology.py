"""Topology-preserving warping of one 2D truth slice towards a binarised prediction (simple-point flips).

The binarised truth is relaxed towards the binarised prediction by flipping only simple points (pixels whose
flip leaves the topology unchanged, with 4-adjacent foreground and 8-adjacent background), so boundary shifts
cost nothing and only topological disagreements (splits, merges, added or deleted objects and holes) remain.
Both images are padded with one pixel of background; each pass collects the mismatches (scanning x outer,
y inner), sorts them stably by descending ``|p - th|`` (most confident first) and flips each in turn if it is
simple; passes repeat until one flips nothing. Unannotated pixels are never flipped. :mod:`.warping` turns
the mismatches left into the warping errors.
"""

from __future__ import annotations

import heapq

import numpy as np
from scipy import ndimage as ndi

_FOUR = ndi.generate_binary_structure(2, 1)
_EIGHT = ndi.generate_binary_structure(2, 2)
# The 8 neighbours of a 3x3 patch, in the bit order of the lookup table's index.
_NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))
_EDGES = ((0, 1), (1, 0), (1, 2), (2, 1))


def _topology_tables() -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """For each 3x3 neighbourhood (8 bits): its foreground topological number, and whether the centre is simple.

    The topological number counts the 4-connected foreground components of the neighbourhood that touch the
    centre's 4-neighbours. The centre is simple for (4, 8) adjacency when that number is 1 and the background
    of the neighbourhood is one 8-connected component (Bertrand and Malandain 1994); its own value does not
    matter.
    """
    touching, simple = [], []
    for code in range(256):
        patch = np.zeros((3, 3), dtype=bool)
        for bit, position in enumerate(_NEIGHBOURS):
            patch[position] = bool(code >> bit & 1)
        foreground, _ = ndi.label(patch, structure=_FOUR)
        count = len({int(foreground[p]) for p in _EDGES} - {0})
        background = ~patch
        background[1, 1] = False
        _, holes = ndi.label(background, structure=_EIGHT)
        touching.append(count)
        simple.append(count == 1 and holes == 1)
    return tuple(touching), tuple(simple)


_TOUCHING, SIMPLE_POINT = _topology_tables()


def remaining_mismatches(warped: np.ndarray, prob: np.ndarray, annotated: np.ndarray, threshold: float) -> float:
    """Fraction of the annotated pixels of one slice where the padded warped truth differs from ``prob > th``.

    Args:
        warped: the padded warped truth (from :func:`warp_slice`).
        prob: the slice's probabilities (unpadded).
        annotated: the slice's annotated pixels (unpadded).
        threshold: binarisation threshold (strict).
    """
    total = np.count_nonzero(annotated)
    wrong = (warped[1:-1, 1:-1] != (prob > threshold)) & annotated
    return float(np.count_nonzero(wrong) / total) if total else 0.0


def split_merge_fraction(warped: np.ndarray, prob: np.ndarray, annotated: np.ndarray, threshold: float) -> float:
    """Fraction of the annotated pixels of one slice whose mismatch splits or merges warped-truth objects.

    Args:
        warped: the padded warped truth (from :func:`warp_slice`).
        prob: the slice's probabilities (unpadded).
        annotated: the slice's annotated pixels (unpadded).
        threshold: binarisation threshold (strict).
    """
    total = np.count_nonzero(annotated)
    count = _splits_and_merges(warped, np.pad(prob > threshold, 1), np.pad(annotated, 1))
    return count / total if total else 0.0


def warp_slice(prob: np.ndarray, truth: np.ndarray, annotated: np.ndarray, threshold: float) -> np.ndarray:
    """The padded warped truth of one slice (see the module docstring).

    Args:
        prob: 2D probabilities.
        truth: 2D boolean annotated truth foreground.
        annotated: 2D boolean mask of annotated pixels; the others are never flipped.
        threshold: binarisation threshold (strict).
    """
    target = np.pad(prob > threshold, 1)
    fixed = ~np.pad(annotated, 1)
    confidence = np.abs(np.pad(prob, 1) - threshold)
    width = target.shape[1]
    offsets = np.array([dy * width + dx for dy, dx in _AROUND])
    warped = np.pad(truth, 1).astype(np.uint8).ravel()
    xs, ys = np.nonzero(((warped.reshape(target.shape) != target) & ~fixed).T)  # x outer, y inner
    order = np.argsort(-confidence[ys, xs], kind="stable")
    queue = ys[order] * width + xs[order]
    # A flip turns a mismatch into a match and never the reverse, so each pass's mismatches, in the same
    # order, are the previous pass's minus its flips: the queue is sorted once.
    position = np.full(warped.size, -1, dtype=np.int64)
    simple_table = np.array(SIMPLE_POINT)
    while True:
        flipped = _flip_pass(warped, queue, offsets, simple_table, position)
        if not flipped.any():
            return warped.reshape(target.shape).astype(bool)
        queue = queue[~flipped]


# The 8 neighbours in the bit order of the lookup table's index.
_AROUND = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _flip_pass(warped: np.ndarray, queue: np.ndarray, offsets: np.ndarray, simple_table: np.ndarray,
               position: np.ndarray) -> np.ndarray:
    """One pass: visits the mismatches of ``queue`` in order and flips each that is simple when its turn comes.

    Each flip changes its neighbours' simplicity, so the pass is sequential. But a mismatch that is not simple
    at the start of the pass stays so until a neighbour flips, so only the mismatches simple at the start and
    those a flip touches later in the queue need a look, in queue order (a heap of queue positions).
    ``position`` is scratch space of the padded image's size, all -1, and is left so.

    Returns:
        Which entries of ``queue`` were flipped.
    """
    codes = np.zeros(queue.size, dtype=np.int64)
    for bit, offset in enumerate(offsets):
        codes |= warped[queue + offset].astype(np.int64) << bit
    position[queue] = np.arange(queue.size)
    lookup = memoryview(position.data)
    heap = np.flatnonzero(simple_table[codes]).tolist()  # ascending: already a heap
    grid = bytearray(warped.tobytes())
    steps = offsets.tolist()
    indices = queue.tolist()
    seen = bytearray(queue.size)
    flipped = np.zeros(queue.size, dtype=bool)
    while heap:
        k = heapq.heappop(heap)
        if seen[k]:
            continue
        seen[k] = 1
        index = indices[k]
        code = 0
        for bit, offset in enumerate(steps):
            code |= grid[index + offset] << bit
        if not SIMPLE_POINT[code]:
            continue
        grid[index] ^= 1
        flipped[k] = True
        for offset in steps:
            later = lookup[index + offset]
            if later > k and not seen[later]:
                heapq.heappush(heap, later)
    position[queue] = -1
    warped[:] = np.frombuffer(bytes(grid), dtype=np.uint8)
    return flipped


def _splits_and_merges(warped: np.ndarray, target: np.ndarray, annotated: np.ndarray) -> int:
    """How many annotated mismatches between padded ``warped`` and ``target`` split or merge ``warped``'s objects."""
    labels, count = ndi.label(warped, structure=_FOUR)
    boxes = ndi.find_objects(labels)
    ys, xs = np.nonzero((warped != target) & annotated)
    codes = np.zeros(ys.size, dtype=np.int64)
    for bit, (dy, dx) in enumerate(_NEIGHBOURS):
        codes |= warped[ys + dy - 1, xs + dx - 1].astype(np.int64) << bit
    total = 0
    for y, x, code in zip(ys.tolist(), xs.tolist(), codes.tolist(), strict=True):
        around = labels[y - 1:y + 2, x - 1:x + 2].copy()
        own = int(labels[y, x])
        around[1, 1] = 0
        if own and _TOUCHING[code] >= 2:
            # The object's 4-neighbours of this pixel are apart locally; relabel the object without the
            # pixel, inside its bounding box, to see whether they are apart globally.
            box = boxes[own - 1]
            part = labels[box] == own
            part[y - box[0].start, x - box[1].start] = False
            pieces = np.pad(ndi.label(part, structure=_FOUR)[0], 1)  # the 3x3 window may leave the box
            top, left = y - box[0].start, x - box[1].start
            window = pieces[top:top + 3, left:left + 3]
            around = np.where(around == own, count + window, around)
        # Otherwise the object stays connected without the pixel and counts once.
        total += len(set(around.ravel().tolist()) - {0}) >= 2
    return total
