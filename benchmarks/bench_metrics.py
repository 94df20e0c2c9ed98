"""Metric speed on one core: the full ISBI 2012 suite on a 512x512 probability map, and Dice/IoU/HD95 on
a 256^3 volume.

Targets: the ISBI suite (pixel error, Rand error, V_rand, V_info, warping error, splits-and-mergers warping
error), as ``biounet evaluate`` computes it from one shared threshold sweep, <= 3 s per 512x512 slice;
Dice/IoU/HD95 on 256^3 <= 5 s. The process pins itself to one core so the figures do not depend on the machine's size.

Run: .venv/bin/python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from biounet.io.readers import read_image
from biounet.metrics import dice_iou, isbi_challenge_scores
from biounet.metrics.suite import pair_from_arrays, score
from biounet.metrics.surface import surface_distances

REPO = Path(__file__).resolve().parents[1]


def timed(label: str, fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    seconds = time.perf_counter() - start
    print(f"  {label:<44s} {seconds:7.3f} s")
    return seconds


ISBI_SUITE = ("pixel_error", "rand_error", "v_rand", "v_info", "warping_error", "warping_splits_merges")


def isbi_suite() -> None:
    truth = (read_image(REPO / "data" / "isbi2012" / "labels" / "25.png")[0] > 0).astype(np.int64)
    rng = np.random.default_rng(0)
    print("ISBI 2012 suite on one 512x512 probability map (slice 25), one shared threshold sweep:")
    total = 0.0
    # Blurred truth plus noise: the weaker the blur and the stronger the noise, the more topology changes
    # between thresholds (more segments, more warping flips).
    for blur, noise in ((1.5, 0.15), (1.0, 0.3)):
        prob = np.clip(ndi.gaussian_filter(truth.astype(np.float64), blur) + rng.normal(0, noise, truth.shape), 0, 1)
        pair = pair_from_arrays(np.stack([1 - prob, prob]).astype(np.float32), truth)
        total = max(total, timed(f"all six metrics (blur {blur}, noise {noise})", lambda p=pair: score(p, ISBI_SUITE)))
    timed("isbi_challenge_scores, stack of 3 slices", lambda: isbi_challenge_scores(
        np.stack([prob] * 3), np.stack([truth] * 3)))
    print(f"  {'worst slice':<44s} {total:7.3f} s   (target <= 3 s)")


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
