"""``biounet train`` with no config, on data it was not written for: the plan against today's defaults.

For each dataset in ``../shared/data`` (the suggested train split; the test split is never seen in training
or checkpoint selection) this runs ``biounet train --images --labels --out --minutes M`` exactly as a new
user would, as a subprocess, and scores the best checkpoint on the test split:

- ``isbi``: ISBI 2012 slices 00-24 to train, 25-29 to test; Rand error under the challenge protocol (one
  threshold for the 5-slice stack, :func:`biounet.metrics.isbi.isbi_challenge_scores`), without TTA.
- ``dsb``: the DSB 2018 subset's ``train``/``test`` rows of ``index.csv``; foreground Dice, and
  accuracy@0.5 (TP / (TP + FP + FN)) with the connected components of the predicted mask as instances.
- ``hippocampus``: MSD Task04's ``train``/``test`` rows; Dice of anterior and posterior.

Variants: ``plan`` (no config: the planned run), ``defaults`` (the TrainConfig defaults, i.e. what
``biounet train`` did before planning), ``hand`` (the hand-written config for the dataset, where there is
one, with the same budget). The table gives the plan chosen (width, depth, tile, batch, loss), the steps
run, the wall-clock time of the whole command and the scores.

    .venv/bin/python benchmarks/bench_autoplan.py --datasets isbi,dsb,hippocampus --minutes 20
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from skimage.measure import label as connected_components

from biounet.data.labels import read_label
from biounet.infer import predict
from biounet.io.channels import match_channels
from biounet.io.readers import read_image
from biounet.metrics.instances import instance_scores
from biounet.metrics.isbi import isbi_challenge_scores
from biounet.metrics.overlap import dice_iou
from biounet.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
HAND = {"isbi": ROOT / "configs" / "isbi2012-demo.yaml", "hippocampus": ROOT / "configs" / "hippocampus.yaml"}


def split(name: str, data: Path) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Train and test pairs of a dataset, by its PROVENANCE.md's suggested split."""
    if name == "isbi":
        folder = data / "isbi2012"
        pairs = [(folder / "images" / f"{i:02d}.png", folder / "labels" / f"{i:02d}.png") for i in range(30)]
        return pairs[:25], pairs[25:]
    if name == "dsb":
        folder, key, images, labels, ext = data / "dsb2018", "id", "images", "masks", ".png"
    else:
        folder, key, images, labels, ext = data / "hippocampus-3d", "case", "images", "labels", ".nii.gz"
    rows = list(csv.DictReader((folder / "index.csv").open()))
    pairs = {part: [(folder / images / f"{r[key]}{ext}", folder / labels / f"{r[key]}{ext}")
                    for r in rows if r["split"] == part] for part in ("train", "test")}
    return pairs["train"], pairs["test"]


def link_folders(pairs: list[tuple[Path, Path]], work: Path) -> tuple[Path, Path]:
    images, labels = work / "train" / "images", work / "train" / "labels"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for image, label in pairs:
        for source, folder in ((image, images), (label, labels)):
            target = folder / source.name
            if not target.exists():
                target.symlink_to(source.resolve())
    return images, labels


def run_training(images: Path, labels: Path, out: Path, minutes: float, config: Path | None) -> float:
    """``biounet train`` as a user types it; returns the command's wall-clock seconds."""
    command = [sys.executable, "-m", "biounet.cli.main", "train", "--images", str(images), "--labels",
               str(labels), "--out", str(out), "--minutes", str(minutes), "--quiet"]
    if config is not None:
        command += ["--config", str(config)]
    started = time.monotonic()
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.monotonic() - started


def probabilities(checkpoint: Any, path: Path, dims: int, tta: bool | None = None) -> np.ndarray:
    image = match_channels(read_image(path, dims), checkpoint.config.in_channels, path)
    return predict(checkpoint, image, tta=tta)


def score(name: str, model: Path, test: list[tuple[Path, Path]], tta: bool | None = None) -> dict[str, float]:
    checkpoint = load_checkpoint(model)
    if name == "isbi":
        probs = np.stack([probabilities(checkpoint, image, 2, tta)[1] for image, _ in test])
        truth = np.stack([read_label(label) for _, label in test])
        scores = isbi_challenge_scores(probs, truth, warping=False)
        return {"rand_error_strict": scores.rand_error, "v_rand": scores.v_rand, "pixel_error": scores.pixel_error}
    if name == "dsb":
        dice, accuracy = [], []
        for image, label in test:
            mask = probabilities(checkpoint, image, 2, tta).argmax(0)
            truth = read_label(label)
            dice.append(dice_iou(mask, (truth > 0).astype(np.int64), 2, include_background=False).dice[0])
            accuracy.append(instance_scores(connected_components(mask > 0), truth, 0.5).accuracy)
        return {"dice": float(np.mean(dice)), "accuracy@0.5": float(np.mean(accuracy))}
    per_class = []
    for image, label in test:
        mask = probabilities(checkpoint, image, 3, tta).argmax(0)
        per_class.append(dice_iou(mask, read_label(label, 3), 3, include_background=False).dice)
    anterior, posterior = np.nanmean(np.asarray(per_class), axis=0)
    return {"dice_anterior": float(anterior), "dice_posterior": float(posterior)}


def describe(run: Path) -> str:
    config = yaml.safe_load((run / "config.yaml").read_text())
    model, loss = config["model"], config["loss"]
    rows = list(csv.DictReader((run / "log.csv").open()))
    steps = rows[-1]["step"] if rows else "0"
    tile = config["tile"] if not isinstance(config["tile"], list) else "x".join(map(str, config["tile"]))
    weights = f" w0 {loss['weights']['w0']:g}" if loss["name"] == "ce" and loss["weights"]["w0"] else ""
    return (f"base {model['base_channels']}, depth {model['depth']}, {model['padding']}, tile {tile}, "
            f"batch {config['batch_size']}, {loss['name']}{weights}, {steps} steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="isbi,dsb,hippocampus")
    parser.add_argument("--variants", default="plan,defaults,hand")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "autoplan")
    parser.add_argument("--reuse", action="store_true", help="score existing runs instead of training again")
    args = parser.parse_args()
    print("| dataset | variant | plan | wall s | scores |\n|---|---|---|---|---|", flush=True)
    for name in args.datasets.split(","):
        train_pairs, test_pairs = split(name, args.data)
        work = args.out / name
        images, labels = link_folders(train_pairs, work)
        for variant in args.variants.split(","):
            if variant == "hand" and name not in HAND:
                continue
            config = {"plan": None, "hand": HAND.get(name), "defaults": work / "defaults.yaml"}[variant]
            if variant == "defaults":
                (work / "defaults.yaml").write_text("{}\n")
            run = work / f"{variant}-{args.minutes:g}min"
            wall = float("nan")
            if not (args.reuse and (run / "model.pt").exists()):
                try:
                    wall = run_training(images, labels, run, args.minutes, config)
                except subprocess.CalledProcessError:
                    last = (work / f"{run.name}.log").read_text().strip().splitlines()[-1]
                    print(f"| {name} | {variant} | - | - | failed: {last} |", flush=True)
                    continue
            if not (run / "model.pt").exists():
                print(f"| {name} | {variant} | {describe(run)} | {wall:.0f} | no validation ran: no model |")
                continue
            scores = score(name, run / "model.pt", test_pairs)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
            print(f"| {name} | {variant} | {describe(run)} | {wall:.0f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
