"""How long the Segment widget's live re-split takes: moving the seed / foreground / min-size settings
splits the last probabilities into objects again (``biounet.napari.layers.resplit``), with no second
prediction. Target: under 0.3 s for a 1024x1024 image.

The image: the 1024x1024 stage-1 DSB 2018 images of ``../shared/data/dsb2018-stage1`` (fluorescence, 44-98
nuclei each), segmented once by the shipped ``nuclei`` model. For each image and each of a grid of
settings (what a user drags through), the re-split is timed (best of ``--repeats``) and checked equal to
segmenting the image again with those settings; the prediction's own time is printed beside it.

    .venv/bin/python benchmarks/bench_resplit.py [--images 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from biounet.models.instance_params import InstanceParams
from biounet.napari.layers import resplit, segment
from biounet.napari.models import load_model

STAGE1 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018-stage1"
SETTINGS = [InstanceParams(seed, foreground, min_size) for seed in (0.3, 0.5, 0.7) for foreground in (0.4, 0.6)
            for min_size in (0, 30)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with open(STAGE1 / "index.csv", newline="") as index:
        rows = [r["id"] for r in csv.DictReader(index) if (r["height"], r["width"]) == ("1024", "1024")]
    model = load_model("nuclei")
    worst = 0.0
    for name in rows[:args.images]:
        image = iio.imread(STAGE1 / "images" / f"{name}.png")
        started = time.perf_counter()
        result = segment(model, image, True)
        predicted = time.perf_counter() - started
        times = []
        for params in SETTINGS:
            best = np.inf
            for _ in range(args.repeats):
                started = time.perf_counter()
                objects = resplit(result, model, params)
                best = min(best, time.perf_counter() - started)
            times.append(best)
            again = segment(dataclasses.replace(model, instances=params), image, True).labels
            assert np.array_equal(objects, again), f"{name}: re-split != segmenting again at {params}"
        worst = max(worst, max(times))
        print(f"{name[:12]} {image.shape[0]}x{image.shape[1]}: prediction {predicted:.2f} s, re-split median "
              f"{np.median(times):.3f} s, max {max(times):.3f} s over {len(SETTINGS)} settings (all equal to a "
              f"fresh prediction)", flush=True)
    print(f"worst re-split: {worst:.3f} s (target < 0.3 s)")


if __name__ == "__main__":
    main()
