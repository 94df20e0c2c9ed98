"""What correcting a model's result in napari and fine-tuning on the corrections does, measured.

The napari plugin's *Train / fine-tune* from layers, without the GUI: the same functions the widget calls.
A user is simulated who corrects the shipped ``dsb2018-nuclei`` model's objects on a few images of the kind
it does worst on (the colour, brightfield/histology images of the DSB 2018 subset), taken from the *train*
split:

- every true nucleus that no predicted object matches at IoU >= 0.5 is painted as the truth has it (a new
  label, as with napari's brush);
- every predicted object that matches no true nucleus is erased (napari's fill with 0).

The rest is the plugin's path:

- ``training_label``: the corrections plus 4 pixels of context; every other pixel ignored.
- ``write_training_pairs``, then ``finetune_config`` from the shipped model with the minutes budget.
- ``train``.

Both models are scored on the corrected images themselves (against their whole truth: does segmenting
again show what was painted?) and on the subset's 20 *test* images, never used to tune anything (all of
them, and the colour ones). The scores are accuracy@0.5 with matches pooled over the images (StarDist's
``matching_dataset``).

    .venv/bin/python benchmarks/bench_corrections.py --work bench_runs/corrections --images 3 --minutes 3

Measured on this 2-core CPU (115 objects corrected on 3 colour training images, 3 minutes):

| fine-tuning | corrected images | 20 test images | 3 colour test images |
|---|---|---|---|
| none (shipped) | 0.413 | 0.592 | 0.340 |
| defaults: corrections only, lr 1e-4 (a tenth of the model's) | 0.458 | 0.393 | 0.319 |
| corrections only, lr 1e-5 | 0.391 | 0.378 | 0.355 |
| corrections only, lr 1e-3 (the model's own, 5 min) | - | 0.003 | 0.208 |
| whole corrected images, lr 1e-4 (``--whole``) | - | 0.348 | 0.315 |

So a few minutes at a tenth of the model's rate on a few corrected images teach the model what was painted
(a hundredth does not), and make it a model for images like those: it loses accuracy on the kinds it was
not shown (the fluorescence images here), at any of these rates. Three colour test images are too few to
tell whether it gains on unseen images of the corrected kind.
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
from biounet.napari.layers import IGNORE, segment, training_label, write_training_pairs
from biounet.napari.models import load_model
from biounet.training.finetune import finetune_config
from biounet.training.run import train

DSB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dsb2018"


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


def score(model: str, items: list[tuple[np.ndarray, np.ndarray]]) -> float:
    checkpoint = load_model(model)
    predictions = [segment(checkpoint, image, True).labels for image, _ in items]
    return matching_dataset(predictions, [truth for _, truth in items], thresholds=[0.5])[0].accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench_runs/corrections"))
    parser.add_argument("--images", type=int, default=3, help="training-split images corrected")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--whole", action="store_true",
                        help="train on the whole corrected image (unpainted = the model's result, accepted) "
                             "instead of the corrections alone")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="a training setting on top of the fine-tuning config (as in the widget)")
    args = parser.parse_args()
    with open(DSB / "index.csv", newline="") as index:
        rows = list(csv.DictReader(index))

    def read(row: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
        return iio.imread(DSB / "images" / f"{row['id']}.png"), iio.imread(DSB / "masks" / f"{row['id']}.png")

    train_rows = [r for r in rows if r["split"] == "train" and colour(read(r)[0])][:args.images]
    test = [read(r) for r in rows if r["split"] == "test"]
    test_colour = [item for item in test if colour(item[0])]
    shutil.rmtree(args.work, ignore_errors=True)
    shipped = load_model("dsb2018-nuclei")
    painted = 0
    corrected_items = [read(r) for r in train_rows]
    for row in train_rows:
        image, truth = read(row)
        labels = segment(shipped, image, True).labels
        fixed, wrong, missed = corrected(labels, truth)
        painted += wrong + missed
        label = training_label(fixed, None if args.whole else labels)
        print(f"{row['id'][:8]}: {wrong} objects erased, {missed} painted; {np.mean(label != IGNORE):.1%} of the "
              "pixels annotated")
        write_training_pairs(args.work / "data", row["id"][:8], image, True, label, 2, 3)
    config = finetune_config("dsb2018-nuclei", args.work / "data" / "images", args.work / "data" / "labels",
                             minutes=args.minutes, ignore=None if args.whole else IGNORE,
                             overrides=args.overrides)
    started = time.monotonic()
    train(config, args.work / "run", progress=False)
    print(f"fine-tuned for {(time.monotonic() - started) / 60:.1f} min on {painted} corrected objects in "
          f"{len(train_rows)} images")
    tuned = str(args.work / "run" / "model.pt")
    print(f"settings: {' '.join(args.overrides) or 'none'}; post-processing {load_model(tuned).instances}")
    print(f"accuracy@0.5 on the {len(test)} test images: shipped {score('dsb2018-nuclei', test):.4f}, "
          f"fine-tuned {score(tuned, test):.4f}")
    print(f"accuracy@0.5 on the {len(train_rows)} corrected images themselves: shipped "
          f"{score('dsb2018-nuclei', corrected_items):.4f}, fine-tuned {score(tuned, corrected_items):.4f}")
    print(f"accuracy@0.5 on the {len(test_colour)} colour test images: shipped "
          f"{score('dsb2018-nuclei', test_colour):.4f}, fine-tuned {score(tuned, test_colour):.4f}")


if __name__ == "__main__":
    main()
