"""Metric speed on one core: the full ISBI 2012 suite on a 512x512 probability map, and Dice/IoU/HD95 on
a 256^3 volume.

Targets: ISBI suite (pixel error, Rand error, V_rand, V_info, warping error) <= 3 s; Dice/IoU/HD95 on
256^3 <= 5 s. The process pins itself to one core so the figures do not depend on the machine's size.

Run: .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from biounet.data.readers import read_image
from biounet.metrics import dice_iou, pixel_error, rand_family, warping_error
from biounet.metrics.surface import surface_distances

REPO = Path(__file__).resolve().parents[1]


def timed(label: str, fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"  {label:<44s} {seconds:7.3f} s")
    return seconds


def isbi_suite() -> None:
    truth = (read_image(REPO / "data" / "isbi2012" / "labels" / "25.png")[0] > 0).astype(np.uint8)
    rng = np.random.default_rng(0)
    # A realistic probability map: the truth blurred, with noise, so thresholds give different topologies.
    prob = np.clip(ndi.gaussian_filter(truth.astype(np.float64), 1.5) + rng.normal(0, 0.15, truth.shape), 0, 1)
    print("ISBI 2012 suite on one 512x512 probability map (slice 25):")
    total = timed("pixel error (11 thresholds)", lambda: pixel_error(prob, truth))
    total += timed("Rand error, V_rand, V_info (11 thresholds)", lambda: rand_family(prob, truth))
    total += timed("warping error (threshold 0.5)", lambda: warping_error(prob, truth))
    print(f"  {'total':<44s} {total:7.3f} s   (target <= 3 s)")


def volume_suite() -> None:
    rng = np.random.default_rng(0)
    blobs = ndi.gaussian_filter(rng.normal(size=(256, 256, 256)).astype(np.float32), 6)
    truth = (blobs > 0.002).astype(np.int64)
    pred = (ndi.shift(blobs, (1.5, -1, 0.5), order=1) > 0.0025).astype(np.int64)
    print("Dice/IoU/HD95 on a 256^3 volume (two overlapping blob masks):")
    total = timed("Dice and IoU", lambda: dice_iou(pred, truth, 2, include_background=False))
    total += timed("HD95, ASD and surface Dice", lambda: surface_distances(pred > 0, truth > 0))
    print(f"  {'total':<44s} {total:7.3f} s   (target <= 5 s)")


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"pinned to {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} core(s)")
    isbi_suite()
    volume_suite()


if __name__ == "__main__":
    main()
