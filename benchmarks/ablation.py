"""One cell of the recipe's ablation table: a no-config ``biounet train`` run, with or without one change.

Trains ``biounet train --images --labels --out --minutes M [--set ...]`` on a dataset's train split in
``../shared/data`` exactly as a user types it (the plan decides everything not set), then scores the best
checkpoint on the test split by the dataset's strict protocol, and appends a row (dataset, tag, seed, the
settings, steps, wall seconds, scores) to ``bench_runs/ablation/ablation.csv``:

- ``isbi``: Rand error of slices 25-29 under the challenge protocol (one threshold for the stack), plus
  V_rand and the pixel error;
- ``dsb``: accuracy@0.5 with matches pooled over the 20 test images (StarDist's ``matching_dataset``) from the
  model's own instance post-processing (connected components of the mask for a non-instance model), plus
  the foreground Dice;
- ``hippocampus``: Dice of anterior and posterior over the test cases.

    .venv/bin/python benchmarks/ablation.py --dataset isbi --minutes 20 --seed 0 --tag plan
    .venv/bin/python benchmarks/ablation.py --dataset isbi --minutes 20 --seed 0 --tag no-ema --set ema=0

Run one at a time: two trainings on two cores slow each other 10-30x.
"""

from __future__ import annotations

import argparse
import csv
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench_autoplan import link_folders, probabilities, split  # the benchmarks' shared splits and prediction
from bench_autoplan import score as autoplan_score
from biounet.data.labels import read_label
from biounet.infer.instances import instances_from_probabilities
from biounet.metrics.instances import matching_dataset
from biounet.metrics.isbi import isbi_challenge_scores
from biounet.metrics.overlap import dice_iou
from biounet.models.checkpoint import load_checkpoint
from biounet.models.outputs import probabilities_to_mask

ROOT = Path(__file__).resolve().parents[1]


def score(dataset: str, model: Path, test: list[tuple[Path, Path]], tta: bool | None = None) -> dict[str, float]:
    """The test split's scores by the dataset's strict protocol (see the module docstring), predicted with
    test-time augmentation as ``tta`` says (``None``: as the checkpoint chose, what ``biounet predict`` does)."""
    checkpoint = load_checkpoint(model)
    if dataset == "isbi":
        probs = np.stack([probabilities(checkpoint, image, 2, tta)[1] for image, _ in test])
        truth = np.stack([read_label(label) for _, label in test])
        scores = isbi_challenge_scores(probs, truth, warping=False)
        return {"rand_error": scores.rand_error, "v_rand": scores.v_rand, "pixel_error": scores.pixel_error}
    if dataset == "dsb":
        found, truths, dice = [], [], []
        for image, label in test:
            probs = probabilities(checkpoint, image, 2, tta)
            truth = read_label(label)
            output = checkpoint.config.output
            ids = instances_from_probabilities(probs, checkpoint.instances, output) \
                if checkpoint.instances is not None else ndimage.label(probabilities_to_mask(probs, output) > 0)[0]
            found.append(ids)
            truths.append(truth)
            dice.append(dice_iou((ids > 0).astype(np.int64), (truth > 0).astype(np.int64), 2,
                                 include_background=False).dice[0])
        pooled = matching_dataset(found, truths, (0.5,))[0]
        return {"accuracy@0.5": pooled.accuracy, "fg_dice": float(np.mean(dice))}
    return autoplan_score(dataset, model, test, tta)  # hippocampus: Dice per class, as bench_autoplan scores it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("isbi", "dsb", "hippocampus"), required=True)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="plan", help="the row's name (the change tried)")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="key=value, as train's --set")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "ablation")
    parser.add_argument("--reuse", action="store_true", help="score an existing run instead of training")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="predict the test split with (or without) test-time augmentation over the model's "
                             "symmetry; default: as the checkpoint chose (the row's tag gets +tta or -tta)")
    args = parser.parse_args()
    train_pairs, test_pairs = split(args.dataset, args.data)
    work = args.out / args.dataset
    images, labels = link_folders(train_pairs, work)
    run = work / f"{args.tag}-seed{args.seed}-{args.minutes:g}min"
    wall = float("nan")
    if not (args.reuse and (run / "model.pt").exists()):
        command = [sys.executable, "-m", "biounet.cli.main", "train", "--images", str(images), "--labels",
                   str(labels), "--out", str(run), "--minutes", str(args.minutes), "--quiet",
                   "--set", f"seed={args.seed}", *[a for s in args.settings for a in ("--set", s)]]
        started = time.monotonic()
        with (work / f"{run.name}.log").open("w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        wall = time.monotonic() - started
    rows = list(csv.DictReader((run / "log.csv").open()))
    steps = int(rows[-1]["step"]) if rows else 0
    started = time.monotonic()
    scores = score(args.dataset, run / "model.pt", test_pairs, args.tta)
    scores["predict_s"] = time.monotonic() - started  # TTA pays only if its gain is worth this time
    # Whether the predictions averaged over TTA transforms: as forced, or as the checkpoint chose.
    scores["tta"] = float(load_checkpoint(run / "model.pt").tta.enabled if args.tta is None else args.tta)
    row = {"dataset": args.dataset, "tag": args.tag + {None: "", True: "+tta", False: "-tta"}[args.tta],
           "seed": args.seed, "minutes": args.minutes,
           "settings": " ".join(args.settings), "steps": steps, "wall_s": round(wall) if not math.isnan(wall) else "",
           **{k: round(v, 4) for k, v in scores.items()}}
    table = args.out / "ablation.csv"
    new = not table.exists()
    with table.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["dataset", "tag", "seed", "minutes", "settings", "steps", "wall_s", "scores"])
        writer.writerow([*list(row.values())[:7], " ".join(f"{k}={v}" for k, v in list(row.items())[7:])])
    print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
