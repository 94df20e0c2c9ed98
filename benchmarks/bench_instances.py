"""Instance segmentation of nuclei on the DSB 2018 subset's test split (20 images), against peers.

Rows, all scored on the same test images (never seen in training, threshold tuning or checkpoint choice):

- ``shipped``: ``biounet predict --model nuclei`` as shipped: background/interior/boundary, seeded
  watershed with the thresholds tuned on its validation images.
- ``train``: a ``biounet train --images --labels --out --minutes M`` run with no config on the train split
  (the plan picks the three-class recipe for instance labels), scored the same way.
- ``train + components``: the same network, objects = connected components of its foreground mask
  (interior or boundary): what instance labels gave before.
- ``train, distance target``: the same ``biounet train`` run with ``--set labels.instance_target=distance``
  (foreground + normalised distance to the boundary, seeded watershed on the distance), scored the same way.
- ``border-weighted``: the paper's two-class loss, a ``biounet train`` run of the same minutes with
  ``model.out_channels=2 loss.name=ce loss.weights.w0=10 loss.weights.sigma=2 monitor=dice``; objects =
  connected components of its mask.
- peers: instance label images written by ``benchmarks/peers_instances.py`` (Cellpose and StarDist trained
  from scratch with their own training APIs for the same minutes), given with ``--peer NAME=DIR``.

Scores: accuracy@0.5 = TP / (TP + FP + FN) with matches pooled over the 20 images (StarDist's
``matching_dataset``, ``by_image=False``), the mean accuracy over IoU 0.50..0.90, the mean of per-image
accuracy@0.5, and foreground Dice. Timing: post-processing of a 1024x1024 image with ~500 nuclei and of a
256^3 volume of touching balls, on this CPU.

    .venv/bin/python benchmarks/bench_instances.py --work bench_runs/instances --minutes 30 \\
        --peer cellpose=bench_runs/instances/cellpose --peer stardist=bench_runs/instances/stardist

Missing runs are trained first (``--minutes``), one after the other; existing ones are reused.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from biounet.data.labels import read_label
from biounet.data.targets import boundary_classes
from biounet.infer import predict
from biounet.infer.instances import instances_from_probabilities
from biounet.io.channels import match_channels
from biounet.io.readers import read_image
from biounet.metrics.instances import CURVE_THRESHOLDS, matching_dataset
from biounet.metrics.overlap import dice_iou
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.models.outputs import probabilities_to_mask
from biounet.pretrained import resolve_model

ROOT = Path(__file__).resolve().parents[1]
BORDER = ["model.out_channels=2", "loss.name=ce", "loss.weights.w0=10", "loss.weights.sigma=2",
          "loss.weights.class_balance=true", "monitor=dice"]
DISTANCE = ["labels.instance_target=distance"]


def split(data: Path) -> dict[str, list[tuple[Path, Path]]]:
    rows = list(csv.DictReader((data / "index.csv").open()))
    return {part: [(data / "images" / f"{r['id']}.png", data / "masks" / f"{r['id']}.png")
                   for r in rows if r["split"] == part] for part in ("train", "test")}


def link_train(pairs: list[tuple[Path, Path]], work: Path) -> tuple[Path, Path]:
    images, labels = work / "train" / "images", work / "train" / "labels"
    for folder in (images, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for image, label in pairs:
        for source, folder in ((image, images), (label, labels)):
            if not (folder / source.name).exists():
                (folder / source.name).symlink_to(source.resolve())
    return images, labels


def ensure_run(name: str, work: Path, images: Path, labels: Path, minutes: float | None,
               settings: list[str]) -> Path | None:
    """The run's best checkpoint, training it first (``biounet train`` as a user types it) if needed."""
    out = work / name
    if (out / "model.pt").exists():
        return out / "model.pt"
    if minutes is None:
        print(f"{name}: no run in {out} and no --minutes to train one; skipped")
        return None
    command = [sys.executable, "-m", "biounet.cli.main", "train", "--images", str(images), "--labels", str(labels),
               "--out", str(out), "--minutes", str(minutes), "--quiet"]
    command += [a for s in settings for a in ("--set", s)]
    started = time.monotonic()
    with (work / f"{name}.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"{name}: trained in {(time.monotonic() - started) / 60:.1f} min")
    return out / "model.pt"


def probabilities(checkpoint: Checkpoint, path: Path) -> np.ndarray:
    image = match_channels(read_image(path, 2), checkpoint.config.in_channels, path)
    return np.asarray(predict(checkpoint, image))


def scores(found: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, float]:
    curve = matching_dataset(found, truths, CURVE_THRESHOLDS)
    per_image = [matching_dataset([f], [t], (0.5,))[0].accuracy for f, t in zip(found, truths, strict=True)]
    dice = [dice_iou((f > 0).astype(np.int64), (t > 0).astype(np.int64), 2, include_background=False).dice[0]
            for f, t in zip(found, truths, strict=True)]
    return {"accuracy@0.5": curve[0].accuracy, "mean accuracy 0.5..0.9": float(np.mean([c.accuracy for c in curve])),
            "per-image accuracy@0.5": float(np.mean(per_image)), "f1@0.5": curve[0].f1,
            "pq@0.5": curve[0].panoptic_quality, "dice": float(np.mean(dice))}


def model_rows(name: str, model: Path, test: list[tuple[Path, Path]], truths: list[np.ndarray],
               components_too: bool) -> dict[str, dict[str, float]]:
    checkpoint = load_checkpoint(model)
    probs = [probabilities(checkpoint, image) for image, _ in test]
    rows = {}
    output = checkpoint.config.output
    if checkpoint.instances is not None:
        rows[name] = scores([instances_from_probabilities(p, checkpoint.instances, output) for p in probs], truths)
    if checkpoint.instances is None or components_too:
        masks = [probabilities_to_mask(p, output) > 0 for p in probs]
        label = f"{name} + components" if checkpoint.instances is not None else name
        rows[label] = scores([ndimage.label(m)[0] for m in masks], truths)
    return rows


def peer_rows(peers: list[str], test: list[tuple[Path, Path]], truths: list[np.ndarray]) -> dict[str, dict[str, float]]:
    rows = {}
    for spec in peers:
        name, _, folder = spec.partition("=")
        found = [read_label(Path(folder) / label.name) for _, label in test]
        rows[name] = scores(found, truths)
    return rows


def timing() -> dict[str, float]:
    """Seconds of post-processing (median of 3) for a 1024x1024 image with ~500 nuclei and a 256^3 volume."""
    rng = np.random.default_rng(0)
    results = {}
    for label, shape, count, radius in (("1024x1024 image", (1024, 1024), 600, (7, 14)),
                                        ("256^3 volume", (256, 256, 256), 700, (8, 14))):
        centres = rng.uniform(0, 1, (count, len(shape))) * np.array(shape)
        seeds = np.zeros(shape, np.int32)
        seeds[tuple(np.clip(centres.astype(int), 0, np.array(shape) - 1).T)] = np.arange(1, count + 1)
        distance, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
        radii = rng.uniform(*radius, count + 1)
        owner = seeds[tuple(nearest)]
        truth = np.where(distance <= radii[owner], owner, 0).astype(np.int32)
        classes = boundary_classes(truth)
        probs = ndimage.gaussian_filter(np.stack([(classes == k).astype(np.float32) for k in range(3)]),
                                        (0,) + (1.0,) * len(shape))
        times = []
        for _ in range(3):
            started = time.perf_counter()
            found = instances_from_probabilities(probs)
            times.append(time.perf_counter() - started)
        objects = int(found.max())
        results[f"{label} ({objects} objects)"] = float(np.median(times))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "dsb2018")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs" / "instances")
    parser.add_argument("--minutes", type=float, default=None, help="train missing runs for this many minutes")
    parser.add_argument("--peer", action="append", default=[], metavar="NAME=DIR",
                        help="a peer's instance label images for the test split, named as the masks")
    parser.add_argument("--no-timing", action="store_true")
    args = parser.parse_args()
    pairs = split(args.data)
    args.work.mkdir(parents=True, exist_ok=True)
    images, labels = link_train(pairs["train"], args.work)
    test = pairs["test"]
    truths = [read_label(label) for _, label in test]
    rows: dict[str, dict[str, float]] = {}
    rows.update(model_rows("shipped nuclei", resolve_model("nuclei"), test, truths, False))
    trained = ensure_run("train", args.work, images, labels, args.minutes, [])
    if trained is not None:
        minutes = yaml.safe_load(load_checkpoint(trained).extra["train_config"]).get("minutes", "?")
        rows.update(model_rows(f"biounet train ({minutes:g} min, no config)", trained, test, truths, True))
    distance = ensure_run("train-distance", args.work, images, labels, args.minutes, DISTANCE)
    if distance is not None:
        minutes = yaml.safe_load(load_checkpoint(distance).extra["train_config"]).get("minutes", "?")
        rows.update(model_rows(f"biounet train ({minutes:g} min, distance target)", distance, test, truths, True))
    border = ensure_run("border-weighted", args.work, images, labels, args.minutes, BORDER)
    if border is not None:
        rows.update(model_rows("paper's border-weighted 2-class + components", border, test, truths, False))
    rows.update(peer_rows(args.peer, test, truths))
    columns = list(next(iter(rows.values())))
    nuclei = sum(len(np.unique(t[t > 0])) for t in truths)
    print(f"DSB 2018 subset, test split: {len(test)} images, {nuclei} nuclei")
    print("| row | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    if not args.no_timing:
        for label, seconds in timing().items():
            print(f"post-processing {label}: {seconds:.3f} s")


if __name__ == "__main__":
    main()
