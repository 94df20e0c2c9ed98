"""Speed of the U-Net border weight map on a 512x512 image with 100 cells.

The cells are random non-overlapping discs (radius 8-16 px), about a third of them placed against an
earlier disc so that they touch. Prints the best-of-N time of ``separate_touching`` and of
``border_weight_map`` (distance transforms in each cell's box grown by 6 sigma), and of the same map from a
whole-image distance transform per cell, which it must match.

Run: .venv/bin/python benchmarks/bench_weight_map.py [--size 512] [--cells 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import ndimage

from bench_inference import best_time  # the benchmarks' shared timing helper
from biounet.data.targets import border_weight_map, separate_touching


def random_cells(size: int, count: int, rng: np.random.Generator, touching: float = 0.35) -> np.ndarray:
    """An instance map of ``count`` discs that never overlap; a fraction is placed to touch a neighbour."""
    discs: list[tuple[float, float, float]] = []
    while len(discs) < count:
        r = float(rng.uniform(8, 16))
        if discs and rng.random() < touching:
            # One pixel beyond tangency: the two digital discs end up edge- or corner-adjacent.
            cy, cx, cr = discs[rng.integers(len(discs))]
            angle = rng.uniform(0, 2 * math.pi)
            y, x = cy + (cr + r + 1) * math.sin(angle), cx + (cr + r + 1) * math.cos(angle)
        else:
            y, x = rng.uniform(r, size - 1 - r, 2)
        inside = r <= y <= size - 1 - r and r <= x <= size - 1 - r
        if inside and all(math.hypot(y - oy, x - ox) > r + orad for oy, ox, orad in discs):
            discs.append((y, x, r))
    yy, xx = np.mgrid[:size, :size]
    instances = np.zeros((size, size), np.int32)
    for i, (y, x, r) in enumerate(discs, start=1):
        instances[((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (instances == 0)] = i
    return instances


def whole_image_map(classes: np.ndarray, cells: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    """The reference: one whole-image distance transform per cell, no cut-off."""
    distances = np.sort([ndimage.distance_transform_edt(cells != i) for i in range(1, cells.max() + 1)], axis=0)
    term = w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))
    n = classes.size
    counts = np.bincount(classes.ravel())
    return (n / (len(counts) * counts))[classes] + np.where(classes == 0, term, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    instances = random_cells(args.size, args.cells, np.random.default_rng(0))
    cells = separate_touching(instances)
    classes = (cells > 0).astype(np.int64)
    n_touching = len(np.unique(instances[(cells == 0) & (instances > 0)]))
    print(f"{args.size}x{args.size}, {args.cells} cells, {n_touching} touching a neighbour")

    t_separate = best_time(lambda: separate_touching(instances), args.repeats)
    t_map = best_time(lambda: border_weight_map(classes, cells), args.repeats)
    t_whole = best_time(lambda: whole_image_map(classes, cells), max(1, args.repeats // 2))
    error = np.abs(border_weight_map(classes, cells) - whole_image_map(classes, cells)).max()
    print(f"separate_touching:                       {t_separate * 1e3:8.1f} ms")
    print(f"border_weight_map (boxes grown 6 sigma): {t_map * 1e3:8.1f} ms")
    print(f"whole-image transform per cell:          {t_whole * 1e3:8.1f} ms  ({t_whole / t_map:.0f}x slower, "
          f"max |difference| {error:.1e})")


if __name__ == "__main__":
    main()
