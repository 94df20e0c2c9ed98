"""Boundary thinning as Fiji does it before V_rand and V_info: a Vincent-Soille watershed of the binarisation.

Reference: Fiji's Trainable Segmentation, ``trainableSegmentation.utils.WatershedTransform2D.apply`` (with
``Neighborhood2DC4`` and ``PixelRecord``), which ``trainableSegmentation.metrics.RandError
.getMaximalVRandAfterThinning`` and ``VariationOfInformation.getMaximalVInfoAfterThinning`` run on each
binarised slice. Cells are the low level (the relief is the inverted binarisation, cells 0 and boundary
255), so cells are the minima and the boundary is flooded from them. That algorithm, on two levels:

1. Pixels are visited in the order of a stable sort by value of a list built with x outer, y inner, so each
   level is scanned column by column. Each 4-connected component of cells becomes a basin (label 1, 2, ...).
2. Boundary pixels with a 4-neighbour cell are queued in that column-major order; then a FIFO takes one
   pixel at a time, looks at its 4 neighbours in the order (x-1, y), (x, y-1), (x+1, y), (x, y+1), and
   appends the neighbours still unqueued. A pixel takes the label of its labelled neighbours if they carry
   only one label, and becomes a dam (label 0) if they carry two or more, or none but dams (the ``flag``
   of the Java code makes the dams it meets before its first label not count). Only neighbours already
   processed are labelled, so the FIFO order decides ties: that is where the lines differ from
   ``skimage.segmentation.watershed`` (a priority queue with its own tie-breaking).
3. Boundary components no cell reaches (an image without cells) become basins of their own, whole.

Basins are 4-connected and no two of them touch (whichever pixel of a touching pair is processed later
sees the other's label and becomes a dam), so the basins are the 4-connected segments of the result and
the dams the boundary pixels left: one pixel wide where two fronts meet.

The FIFO is a breadth-first search, so it processes the boundary layer by layer of 4-distance to the
cells. Here each layer is resolved with NumPy: the order inside a layer follows from the order of the
previous one (a pixel is queued by its first-processed neighbour, in that neighbour's direction order), and
a pixel is settled without a loop when every neighbour processed before it agrees with the one label of its
lower-layer neighbours; only the rest (junctions, pixels behind dams) go through a Python loop, in queue
order.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_FOUR = ndi.generate_binary_structure(2, 1)
_MASK = -2  # boundary pixel not yet processed (``MASK`` in the Java code)
_OUTSIDE = -9  # the one-pixel frame around the image


def fiji_thinning(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels of Fiji's watershed of one binarised 2D slice: basins 1..n, dams 0.

    Args:
        binary: 2D boolean image, True = cell.

    Returns:
        ``(labels, n)``: an int64 image of the slice's shape and the number of basins.
    """
    cells = np.asarray(binary, dtype=bool)
    if cells.ndim != 2:
        raise ValueError(f"thinning takes one 2D slice, got shape {cells.shape}")
    # Work on the transposed image with a frame, so C order is Fiji's column-major scan and the four
    # neighbours are fixed offsets: (x-1, y), (x, y-1), (x+1, y), (x, y+1).
    columns = np.pad(cells.T, 1)
    stride = columns.shape[1]
    offsets = np.array([-stride, -1, stride, 1])
    basins, count = ndi.label(columns, structure=_FOUR)
    state = np.where(columns, basins, _MASK).astype(np.int64)
    state[0, :] = state[-1, :] = state[:, 0] = state[:, -1] = _OUTSIDE
    state = state.ravel()

    layer = np.flatnonzero((state == _MASK) & _any_neighbour(state, offsets, lambda s: s > 0))
    while layer.size:
        _settle_layer(state, layer, offsets)
        around = layer[:, None] + offsets
        # Flattened, ``around`` is in queue order (pixel rank, then direction): a pixel of the next layer
        # is queued at its first occurrence.
        flat = around.ravel()
        unqueued = state[flat] == _MASK
        following, first = np.unique(flat[unqueued], return_index=True)
        layer = following[np.argsort(first, kind="stable")]

    left = state == _MASK
    if left.any():
        extra, more = ndi.label(left.reshape(columns.shape), structure=_FOUR)
        state = np.where(left, extra.ravel() + count, state)
        count += more
    labels = state.reshape(columns.shape)[1:-1, 1:-1].T
    return np.ascontiguousarray(labels), int(count)


def _any_neighbour(state: np.ndarray, offsets: np.ndarray, test: object) -> np.ndarray:
    """Whether any 4-neighbour of each pixel passes ``test`` (False on the frame)."""
    hit = np.zeros(state.size, dtype=bool)
    inner = np.flatnonzero(state != _OUTSIDE)
    for offset in offsets:
        hit[inner] |= test(state[inner + offset])  # type: ignore[operator]
    return hit


def _settle_layer(state: np.ndarray, layer: np.ndarray, offsets: np.ndarray) -> None:
    """Labels the pixels of one layer (flat indices in queue order) in ``state``."""
    n = layer.size
    around = layer[:, None] + offsets
    values = state[around]  # lower layers are final; this layer and the next are still _MASK
    labelled = values > 0
    high = np.where(labelled, values, 0).max(axis=1)
    low = np.where(labelled, values, np.iinfo(np.int64).max).min(axis=1)
    # The one label of the lower-layer neighbours, 0 when there is none, -1 when there are several.
    single = np.where(~labelled.any(axis=1), 0, np.where(low == high, high, -1))

    rank = np.full(state.size, -1, dtype=np.int64)
    rank[layer] = np.arange(n)
    peer_rank = rank[around]
    earlier = (peer_rank >= 0) & (peer_rank < np.arange(n)[:, None])
    peer_single = np.where(earlier, single[np.maximum(peer_rank, 0)], -1)
    # Several lower labels: a dam whatever came before. One label L: L when every earlier neighbour in the
    # layer is a sure dam (-1) or can only end up L or a dam (its one lower label is L).
    agrees = ((peer_single == -1) | (peer_single == single[:, None])).all(axis=1)
    final = np.where(single == -1, 0, single)
    easy = (single == -1) | ((single > 0) & agrees) | ((single == 0) & ~earlier.any(axis=1))
    state[layer[easy]] = final[easy]

    hard = np.flatnonzero(~easy)
    if hard.size == 0:
        return
    # Sequential in queue order: each reads its earlier peers' final labels (easy ones are already set).
    for i in hard.tolist():
        seen = {int(v) for v in values[i] if v > 0}
        for j, peer in zip(peer_rank[i].tolist(), around[i].tolist(), strict=True):
            if 0 <= j < i and state[peer] > 0:
                seen.add(int(state[peer]))
        state[layer[i]] = seen.pop() if len(seen) == 1 else 0
