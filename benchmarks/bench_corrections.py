"""What correcting a model's result and fine-tuning on the corrections does, measured, with and without
each measure that keeps what the model knew (rehearsal, distillation, anchor; see
``biounet.training.retention``).

The napari plugin's *Train / fine-tune* from layers, without the GUI: the same functions the widget calls.
A user is simulated who corrects the shipped ``nuclei`` model's objects on colour (brightfield /
histology) images of ``../shared/data/dsb2018-stage1``, the kind it does worst on:

- every true nucleus that no predicted object matches at IoU >= 0.5 is painted as the truth has it (a new
  label, as with napari's brush);
- every predicted object that matches no true nucleus is erased (napari's fill with 0).

Then the plugin's path: ``training_label`` (the corrections plus 4 pixels of context, every other pixel
unannotated), ``write_training_pairs``, ``finetune_config`` from the model, ``train``.

Images, fixed by the order of ``dsb2018-stage1/index.csv``: its first 20 colour images are corrected (10
in round one, 10 in round two), the next ``--unseen`` (30) are held out to score the models on unseen
images of the corrected kind, the 10 after those are the user's *uncorrected* images (distillation's
unlabelled folder). The start model's own training data (rehearsal) are the 80 train-split pairs of
``../shared/data/dsb2018``, as the shipped model carries them (``nuclei.rehearsal/``, found by
``finetune_config`` itself). The fluorescence (grey) images of that subset's *test* split score what the
model knew; nothing is tuned on them. Scores: accuracy@0.5 with the matches pooled over the images
(StarDist's ``matching_dataset``).

The figures quoted in the README and the napari tutorial were measured with the former shipped model, the
30-minute ``dsb2018-nuclei`` of 80 images (commit 41bf1d4). The generalist ``nuclei`` that replaced it
trained on ``dsb2018-stage1`` itself, these images included, so for it they are not unseen: measuring it
needs corrected and unseen images from elsewhere (not done yet).

    .venv/bin/python benchmarks/bench_corrections.py --work bench_runs/corrections --minutes 5

Variants (``--variants``, comma-separated): ``none`` (corrections only), ``rehearsal``, ``distill``,
``anchor``, ``all``, ``default`` (``finetune_config``'s defaults), ``truth`` (the ceiling: the same images
labelled in full with their true nuclei, no measure against forgetting), ``rounds`` (two rounds of 10 at half the
minutes each, the second from the first's model on all 20 corrections, against ``one20``: one round of 20
at the whole minutes).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from biounet.metrics.instances import matching_dataset
from biounet.models.checkpoint import Checkpoint
from biounet.napari.layers import segment, training_label, write_training_pairs
from biounet.napari.models import load_model
from biounet.training.finetune import finetune_config
from biounet.training.run import train

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DSB, STAGE1 = DATA / "dsb2018", DATA / "dsb2018-stage1"
START = "nuclei"
ANCHOR = 0.01  # the anchor's weight when on (L2-SP), per squared weight difference summed
NO_REHEARSAL = ["retain.images=''", "retain.labels=''"]
VARIANTS = {
    "none": ["retain.distill=0", *NO_REHEARSAL],
    "rehearsal": ["retain.distill=0"],
    "distill": NO_REHEARSAL,
    "anchor": ["retain.distill=0", f"retain.anchor={ANCHOR}", *NO_REHEARSAL],
    "all": [f"retain.anchor={ANCHOR}"],
    "default": [],
    "truth": ["retain.distill=0", *NO_REHEARSAL],
}

Item = tuple[np.ndarray, np.ndarray]


def colour(image: np.ndarray) -> bool:
    """Whether an RGB(A) image has colour (histology), not grey channels (fluorescence)."""
    rgb = image[..., :3].astype(np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 2 or np.abs(rgb[..., 1] - rgb[..., 2]).mean() > 2)


def matched(a: np.ndarray, b: np.ndarray) -> set[int]:
    """Objects of ``a`` that an object of ``b`` overlaps with IoU >= 0.5."""
    both = (a > 0) & (b > 0)
    pairs, overlap = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    size_a = np.bincount(a.ravel())
    size_b = np.bincount(b.ravel())
    iou = overlap / (size_a[pairs[0]] + size_b[pairs[1]] - overlap)
    return {int(i) for i in pairs[0][iou >= 0.5]}


def corrected(labels: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``labels`` with its wrong objects erased and its missed ones painted; the counts of each."""
    out = labels.copy()
    wrong = sorted(set(np.unique(labels[labels > 0]).tolist()) - matched(labels, truth))
    missed = sorted(set(np.unique(truth[truth > 0]).tolist()) - matched(truth, labels))
    out[np.isin(labels, wrong)] = 0
    next_id = int(labels.max()) + 1
    for k, t in enumerate(missed):
        out[truth == t] = next_id + k
    return out, len(wrong), len(missed)


def score(model: Checkpoint, items: list[Item]) -> float:
    predictions = [segment(model, image, True).labels for image, _ in items]
    return matching_dataset(predictions, [truth for _, truth in items], thresholds=[0.5])[0].accuracy


def read(folder: Path, name: str) -> Item:
    return iio.imread(folder / "images" / f"{name}.png"), iio.imread(folder / "masks" / f"{name}.png")


def correct(model: Checkpoint, rows: list[str], folder: Path) -> int:
    """Corrects ``model``'s objects on the stage-1 images ``rows`` and writes the training pairs into
    ``folder`` (added to what is there: the corrections collection); returns the objects corrected."""
    painted = 0
    for name in rows:
        image, truth = read(STAGE1, name)
        labels = segment(model, image, True).labels
        fixed, wrong, missed = corrected(labels, truth)
        painted += wrong + missed
        write_training_pairs(folder, name[:8], image, True, training_label(fixed, labels), 2, 3)
    return painted


def finetune(init: str, data: Path, run: Path, minutes: float, unlabelled: Path | None,
             overrides: list[str]) -> tuple[Checkpoint, int]:
    config = finetune_config(init, data / "images", data / "labels", minutes=minutes, ignore=-1,
                             unlabelled=unlabelled, overrides=overrides)
    trainer = train(config, run, progress=False)
    return load_model(str(run / "model.pt")), trainer.state.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench_runs/corrections"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--unseen", type=int, default=30, help="held-out colour images to score (>= 20)")
    parser.add_argument("--variants", default="none,rehearsal,distill,anchor,all,rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for every fine-tuning run (as biounet train --set)")
    args = parser.parse_args()
    with open(STAGE1 / "index.csv", newline="") as index:
        colour_rows = [r["id"] for r in csv.DictReader(index) if r["kind"] == "colour"]
    round1, round2 = colour_rows[:10], colour_rows[10:20]
    unseen_rows = colour_rows[20:20 + args.unseen]
    own_rows = colour_rows[20 + args.unseen:30 + args.unseen]
    with open(DSB / "index.csv", newline="") as index:
        dsb_rows = list(csv.DictReader(index))
    unseen = [read(STAGE1, name) for name in unseen_rows]
    fluorescence = [item for r in dsb_rows if r["split"] == "test" and not colour((item := read(DSB, r["id"]))[0])]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    own = args.work / "uncorrected"
    own.mkdir()
    for name in own_rows:
        (own / f"{name}.png").symlink_to(STAGE1 / "images" / f"{name}.png")

    start = load_model(START)
    table = args.work / "table.csv"
    with open(table, "w", newline="") as out:
        csv.writer(out).writerow(["variant", "steps", "minutes", "corrected objects", "unseen colour",
                                  "test fluorescence"])

    def record(variant: str, model: Checkpoint, steps: int, minutes: float, painted: int) -> None:
        row = [variant, steps, f"{minutes:.1f}", painted, f"{score(model, unseen):.4f}",
               f"{score(model, fluorescence):.4f}"]
        print(" | ".join(map(str, row)), flush=True)
        with open(table, "a", newline="") as out:
            csv.writer(out).writerow(row)

    record("start", start, 0, 0.0, 0)
    corrections = args.work / "round1"
    painted = correct(start, round1, corrections)
    seed = [f"seed={args.seed}", *args.set]
    for variant in args.variants.split(","):
        started = time.monotonic()
        if variant == "rounds":
            first, steps1 = finetune(START, corrections, args.work / "rounds-1", args.minutes / 2, own, seed)
            collection = args.work / "rounds-collection"
            shutil.copytree(corrections, collection)
            painted2 = correct(first, round2, collection)
            second, steps2 = finetune(str(args.work / "rounds-1" / "model.pt"), collection, args.work / "rounds-2",
                                      args.minutes / 2, own, seed)
            record("two rounds of 10", second, steps1 + steps2, (time.monotonic() - started) / 60,
                   painted + painted2)
            continue
        if variant == "one20":
            both = args.work / "one20"
            shutil.copytree(corrections, both)
            painted20 = painted + correct(start, round2, both)
            model, steps = finetune(START, both, args.work / "run-one20", args.minutes, own, seed)
            record("one round of 20", model, steps, (time.monotonic() - started) / 60, painted20)
            continue
        if variant == "truth":  # the ceiling: the round's images labelled in full by their true nuclei
            truth = args.work / "truth"
            for sub, source in (("images", "images"), ("labels", "masks")):
                (truth / sub).mkdir(parents=True)
                for name in round1:
                    (truth / sub / f"{name}.png").symlink_to(STAGE1 / source / f"{name}.png")
        uses_own = variant in ("distill", "all", "default")
        data = args.work / "truth" if variant == "truth" else corrections
        model, steps = finetune(START, data, args.work / f"run-{variant}", args.minutes,
                                own if uses_own else None,
                                seed + VARIANTS[variant])
        record(variant, model, steps, (time.monotonic() - started) / 60, painted)


if __name__ == "__main__":
    main()
