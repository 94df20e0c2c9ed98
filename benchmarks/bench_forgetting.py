"""Is a fine-tuned model's loss on what it knew only a matter of its post-processing? Each model given is
scored (accuracy@0.5, pooled as StarDist's ``matching_dataset``) on the DSB test split's fluorescence images
and on held-out stage-1 colour images (those ``bench_corrections.py`` calls unseen), first with its own
post-processing, then with the seed, foreground and minimum size tuned on every third of the shipped
``nuclei``'s own 80 training pairs (``nuclei.rehearsal/``; no test image is tuned on).

    .venv/bin/python benchmarks/bench_forgetting.py src/biounet/pretrained/nuclei.pt \\
        bench_runs/c-share1/run-rehearsal/model.pt
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import imageio.v3 as iio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_corrections import DSB, STAGE1, Item, colour, read
from biounet.metrics.instances import matching_dataset
from biounet.napari.layers import resplit, segment
from biounet.napari.models import load_model
from biounet.pretrained import resolve_model
from biounet.training.tuning import tune_instance_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="checkpoints or shipped model names")
    parser.add_argument("--unseen", type=int, default=30, help="as bench_corrections.py --unseen")
    args = parser.parse_args()
    pairs = resolve_model("nuclei").with_suffix(".rehearsal")
    names = sorted(p.stem for p in (pairs / "images").glob("*.png"))[::3]
    tuning = [(iio.imread(pairs / "images" / f"{n}.png"), iio.imread(pairs / "labels" / f"{n}.png")) for n in names]
    with open(DSB / "index.csv", newline="") as index:
        rows = list(csv.DictReader(index))
    fluorescence = [item for r in rows if r["split"] == "test" and not colour((item := read(DSB, r["id"]))[0])]
    with open(STAGE1 / "index.csv", newline="") as index:
        colour_rows = [r["id"] for r in csv.DictReader(index) if r["kind"] == "colour"]
    unseen = [read(STAGE1, name) for name in colour_rows[20:20 + args.unseen]]
    print("model | post-processing | on its training pairs | test fluorescence | unseen colour")
    for name in args.models:
        model = load_model(name)
        sets: dict[str, list[Item]] = {"tuning": tuning, "fluorescence": fluorescence, "colour": unseen}
        results = {k: [segment(model, image, image.ndim == 3) for image, _ in items] for k, items in sets.items()}
        probabilities = [r.classes[:, 0] if r.classes.ndim == 4 else r.classes for r in results["tuning"]]
        tuned = tune_instance_params(probabilities, [t for _, t in tuning], output=model.config.output)
        for label, params in (("its own", model.instances), ("tuned on the pairs", tuned.params)):
            scores = [matching_dataset([resplit(r, model, params) for r in results[k]], [t for _, t in sets[k]],
                                       thresholds=[0.5])[0].accuracy for k in sets]
            print(f"{name} | {label}: {params} | " + " | ".join(f"{s:.4f}" for s in scores), flush=True)


if __name__ == "__main__":
    main()
