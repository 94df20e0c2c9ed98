"""Data-parallel training on this CPU: 2 ranks x 1 thread (torchrun, gloo) against 1 process x 2 threads.

Both train the same config (valid U-Net, base 16, depth 3, 348 px tiles, the planned DSB-like augmentation)
on synthetic touching nuclei for the same number of patches: the single process with batch 2, the two ranks
with batch 1 each, which trains the same model (see tests/test_distributed.py). Prints patches per second
of each and their ratio.

    .venv/bin/python benchmarks/bench_ddp.py [--steps 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from biounet.training.config import apply_overrides
from conftest import write_nuclei_dataset


def run(command: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="steps of the single process (batch 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        images, labels = write_nuclei_dataset(work / "data", 8, size=256)
        config = work / "config.yaml"
        config.write_text(apply_overrides({}, [
            f"data.images={images}", f"data.labels={labels}", "model.base_channels=16", "model.depth=3",
            "model.out_channels=3", "labels.kind=instances", "tile=348", "loss.name=ce_dice", "epochs=1",
            f"samples_per_epoch={2 * args.steps}", "checkpoint_seconds=100000", "data.val_fraction=0.2",
        ]).to_yaml())
        base = ["-m", "biounet", "train", "--config", str(config), "--quiet"]
        # Reading the data, validation and the run's end are the same in both; one epoch of each without
        # training steps measures them, and is subtracted.
        fixed = run([sys.executable, *base, "--out", str(work / "fixed"), "--set", "samples_per_epoch=2",
                     "--set", "batch_size=2"], 2)
        one = run([sys.executable, *base, "--out", str(work / "one"), "--set", "batch_size=2"], 2)
        ranks = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *base,
                     "--out", str(work / "ddp"), "--set", "batch_size=1"], 1)
        ranks_fixed = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *base, "--out", str(work / "ddp-fixed"), "--set", "samples_per_epoch=2",
                           "--set", "batch_size=1"], 1)
    patches = 2 * args.steps
    single = patches / max(one - fixed, 1e-9)
    distributed = patches / max(ranks - ranks_fixed, 1e-9)
    print(f"1 process x 2 threads, batch 2: {single:.2f} patches/s ({one:.1f} s, {fixed:.1f} s of it fixed)")
    print(f"2 ranks x 1 thread, batch 1 each (gloo): {distributed:.2f} patches/s ({ranks:.1f} s, "
          f"{ranks_fixed:.1f} s of it fixed)")
    print(f"ratio 2 ranks / 1 process: {distributed / single:.2f}")


if __name__ == "__main__":
    main()
