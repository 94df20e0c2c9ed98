"""The 3D U-Net on MSD Task04 hippocampus, on this machine's CPU: dense vs sparse labels, and forward speed.

1. Forward pass of the paper's 3D U-Net (132x132x116 -> 44x44x28, base 32, batch norm) and of a base-16
   variant: ms, GFLOP (``torch.utils.flop_counter``) and the ratio to the fp32 GEMM peak measured in the
   same run.
2. Training with ``configs/hippocampus.yaml`` (``biounet train``'s own code path) on the suggested train
   split of ``../shared/data/hippocampus-3d`` (208 cases; 10% of them split off for checkpoint selection),
   once with the dense labels and once with sparse ones that keep 3 orthogonal slices per axis per volume
   (``biounet.data.sparse.sparsify``; the rest weighs 0). Each run gets the same wall-clock budget.
3. Mean Dice of anterior and posterior hippocampus over the 52 test cases (never seen in training or
   selection), against the dense labels, for both models.

The data are read from the shared folder (20 MB, MSD licence CC-BY-SA 4.0; see its PROVENANCE.md) rather
than copied into the repository; pass ``--data`` to point elsewhere. Runs go to ``--out``; an existing
``model.pt`` there is reused with ``--reuse``.

    .venv/bin/python benchmarks/bench_hippocampus.py --minutes 30
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from biounet.data.sparse import sparsify
from biounet.infer import predict
from biounet.infer.devices import prepare_model
from biounet.io.readers import read_image
from biounet.metrics.overlap import dice_iou
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint
from biounet.training.config import TrainConfig, load_config
from biounet.training.run import train

ROOT = Path(__file__).resolve().parents[1]
try:
    from bench_inference import best_time, count_flops, gemm_peak
except ImportError:  # run from elsewhere
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_inference import best_time, count_flops, gemm_peak


def forward_speed(peak: float, repeats: int) -> None:
    print("\n3D U-Net forward, 132x132x116 input -> 44x44x28 output, batch 1")
    print(f"{'model':<34}{'ms':>9}{'GFLOP':>9}{'GFLOP/s':>10}{'of peak':>9}")
    for name, config in [("paper (base 32, batch norm)", UNetConfig.paper_3d()),
                         ("base 16, batch norm", dataclasses.replace(UNetConfig.paper_3d(), base_channels=16))]:
        model = prepare_model(UNet(config).eval(), torch.device("cpu"))
        x = torch.randn(1, 1, 132, 132, 116).contiguous(memory_format=torch.channels_last_3d)
        flops = count_flops(model, x)
        with torch.inference_mode():
            seconds = best_time(lambda m=model, x=x: m(x), repeats)
        rate = flops / seconds / 1e9
        print(f"{name:<34}{seconds * 1e3:>9.0f}{flops / 1e9:>9.1f}{rate:>10.1f}{rate / peak:>9.2f}")


def cases(data: Path) -> dict[str, list[str]]:
    split: dict[str, list[str]] = {"train": [], "test": []}
    with open(data / "index.csv") as f:
        for row in csv.DictReader(f):
            split[row["split"]].append(row["case"])
    return split


def prepare(data: Path, out: Path, train_cases: list[str], slices: int) -> None:
    """``out/{dense,sparse}/{images,labels}``: links to the training cases, and sparse label files."""
    import nibabel as nib

    for kind in ("dense", "sparse"):
        for sub in ("images", "labels"):
            (out / kind / sub).mkdir(parents=True, exist_ok=True)
    annotated = []
    for case in train_cases:
        name = f"{case}.nii.gz"
        for kind in ("dense", "sparse"):
            link = out / kind / "images" / name
            if not link.exists():
                link.symlink_to((data / "images" / name).resolve())
        dense = out / "dense" / "labels" / name
        if not dense.exists():
            dense.symlink_to((data / "labels" / name).resolve())
        sparse_path = out / "sparse" / "labels" / name
        nifti = nib.load(data / "labels" / name)
        label = np.rint(np.asarray(nifti.dataobj)).astype(np.uint8)
        sparse = sparsify(label, slices, ignore=255)
        annotated.append(float((sparse != 255).mean()))
        if not sparse_path.exists():
            header = nifti.header.copy()
            header.set_data_dtype(np.uint8)
            nib.save(nib.Nifti1Image(sparse, nifti.affine, header), sparse_path)
    print(f"sparse labels: {slices} slices per axis keep {100 * np.mean(annotated):.1f}% of the voxels annotated "
          f"(range {100 * min(annotated):.1f}-{100 * max(annotated):.1f}%)")


def run_training(config: TrainConfig, images: Path, labels: Path, run_dir: Path, reuse: bool) -> float:
    if reuse and (run_dir / "model.pt").exists():
        print(f"reusing {run_dir / 'model.pt'}")
        return float("nan")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, images=str(images),
                                                                  labels=str(labels)))
    start = time.perf_counter()
    train(config, run_dir, progress=False)
    return (time.perf_counter() - start) / 60


def test_dice(data: Path, run_dir: Path, test_cases: list[str]) -> np.ndarray:
    """``(cases, 2)`` Dice of anterior and posterior per test case."""
    checkpoint = load_checkpoint(run_dir / "model.pt")
    scores = []
    for case in test_cases:
        image = read_image(data / "images" / f"{case}.nii.gz", 3)
        truth = np.rint(read_image(data / "labels" / f"{case}.nii.gz", 3)[0]).astype(np.int64)
        probs = predict(checkpoint.model, image, normalization=checkpoint.normalization)
        overlap = dice_iou(np.argmax(probs, axis=0), truth, 3, include_background=False)
        scores.append(list(overlap.dice))  # classes 1 and 2: background is left out
    return np.asarray(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "hippocampus-3d")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "hippocampus")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "hippocampus.yaml")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per run")
    parser.add_argument("--slices", type=int, default=3, help="annotated slices per axis for the sparse run")
    parser.add_argument("--runs", default="dense,sparse",
                        help="comma-separated trainings from dense, sparse; empty for the forward timing only")
    parser.add_argument("--reuse", action="store_true", help="evaluate existing runs instead of training")
    parser.add_argument("--skip-forward", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = gemm_peak(args.repeats)
    print(f"fp32 GEMM peak (4096^3 matmul): {peak:.1f} GFLOP/s")
    if not args.skip_forward:
        forward_speed(peak, args.repeats)

    runs = [r for r in args.runs.split(",") if r]
    if not set(runs) <= {"dense", "sparse"}:
        parser.error(f"--runs takes dense and/or sparse, got {args.runs!r}")
    if not runs:
        return
    split = cases(args.data)
    print(f"\n{len(split['train'])} training cases, {len(split['test'])} test cases from {args.data}")
    prepare(args.data, args.out, split["train"], args.slices)
    config = load_config(args.config, [f"minutes={args.minutes}"])
    results = {}
    for kind in runs:
        run_dir = args.out / kind / "run"
        minutes = run_training(config, args.out / kind / "images", args.out / kind / "labels", run_dir, args.reuse)
        dice = test_dice(args.data, run_dir, split["test"])
        results[kind] = (minutes, dice)
        print(f"{kind}: trained {minutes:.1f} min; test Dice anterior {dice[:, 0].mean():.4f}, "
              f"posterior {dice[:, 1].mean():.4f}", flush=True)

    print(f"\nMSD hippocampus, {len(split['test'])} test cases, mean Dice (nnU-Net reports about 0.90 / 0.89)")
    print(f"{'labels':<10}{'train min':>10}{'anterior':>10}{'posterior':>10}")
    for kind, (minutes, dice) in results.items():
        print(f"{kind:<10}{minutes:>10.1f}{dice[:, 0].mean():>10.4f}{dice[:, 1].mean():>10.4f}")
    if {"dense", "sparse"} <= set(results):
        gap = results["dense"][1].mean(axis=0) - results["sparse"][1].mean(axis=0)
        print(f"dense - sparse: anterior {gap[0]:+.4f}, posterior {gap[1]:+.4f} (target <= 0.05)")


if __name__ == "__main__":
    main()
