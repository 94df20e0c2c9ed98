"""`make demo`: train a U-Net on ISBI 2012 EM slices 00-24 for a few minutes on the CPU, segment slices
25-29 by overlap-tile prediction, and score them.

Slices 25-29 are the test set: they are never used for training or for choosing the checkpoint (the run
splits 5 of slices 00-24 off for validation). Predictions use the 8-fold rotation/flip averaging.

Writes into demo_out/: run/ (model.pt, log.csv, curves.png, overlays/), predictions/ (probability maps and
masks), metrics.csv; prints a summary and where everything is.
"""

from __future__ import annotations

import csv
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from biounet.cli.main import main
from biounet.io.readers import read_image
from biounet.metrics.suite import pair_from_arrays, score

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data" / "isbi2012"
OUT = REPO / "demo_out"
TRAIN, TEST = range(0, 25), range(25, 30)


def link_split(indices: range, folder: Path) -> None:
    """The demo's split as folders of links to the bundled slices (copies where links are unsupported)."""
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in indices:
            source, target = DATA / kind / f"{i:02d}.png", folder / kind / f"{i:02d}.png"
            try:
                target.symlink_to(source)
            except OSError:
                shutil.copy(source, target)


def run() -> int:
    if OUT.exists():
        shutil.rmtree(OUT)
    link_split(TRAIN, OUT / "data" / "train")
    link_split(TEST, OUT / "data" / "test")
    start = time.perf_counter()
    code = main(["train", "--config", str(REPO / "configs" / "isbi2012-demo.yaml"),
                 "--images", str(OUT / "data/train/images"), "--labels", str(OUT / "data/train/labels"),
                 "--out", str(OUT / "run")])
    if code:
        return code
    trained = time.perf_counter()
    code = main(["predict", "--model", str(OUT / "run" / "model.pt"), str(OUT / "data/test/images"),
                 "--out", str(OUT / "predictions"), "--tta"])
    if code:
        return code
    rows = []
    for i in TEST:
        probs = read_image(OUT / "predictions" / f"{i:02d}_prob.tif")
        truth = (read_image(DATA / "labels" / f"{i:02d}.png")[0] == 255).astype(np.int64)
        scores = score(pair_from_arrays(probs, truth), ["rand_error", "dice", "iou"])
        rows.append({"slice": f"{i:02d}", "rand_error": scores["rand_error"], "dice_cell": scores["dice"],
                     "iou_cell": scores["iou"]})
    with open(OUT / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{'slice':>5s} {'Rand error':>11s} {'Dice(cell)':>11s} {'IoU(cell)':>10s}")
    for row in rows:
        print(f"{row['slice']:>5s} {row['rand_error']:11.4f} {row['dice_cell']:11.4f} {row['iou_cell']:10.4f}")
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("rand_error", "dice_cell", "iou_cell")}
    print(f"{'mean':>5s} {means['rand_error']:11.4f} {means['dice_cell']:11.4f} {means['iou_cell']:10.4f}")
    print(f"\ntrained in {(trained - start) / 60:.1f} min, predicted 5 slices in {time.perf_counter() - trained:.1f} s")
    print(f"model, log.csv, curves.png, overlays/: {OUT / 'run'}")
    print(f"probability maps and masks:            {OUT / 'predictions'}")
    print(f"metrics:                               {OUT / 'metrics.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
