"""The training step's speed as a share of this machine's fp32 GEMM peak, measured in the same run.

The step of record (issue: "the base-16 valid 572 step"): ``UNet(UNetConfig(base_channels=16))``, valid
padding, NCHW (the trainer's 2D layout), one 1x572x572 tile and its 388x388 label with the border-weighted
cross-entropy, forward + backward + optimiser step. Its FLOPs are counted by torch's flop counter
(convolutions and their gradients); GFLOP/s over the GEMM peak (4096^2 fp32 matmul, torch's threads) is the ratio.

Rows:

- ``sgd loop``: SGD with momentum through torch's per-tensor loop (what the trainer used before);
- ``adam loop`` / ``adam fused``: Adam through the per-tensor loop and through the fused kernel (the
  trainer's optimiser now);
- ``trainer``: ``Trainer.train_step`` itself for the same model and tile (patch sampling, augmentation,
  weight map, the planned loss ``ce`` and fused Adam): what a ``biounet train`` step costs;
- ``compiled``: the ``adam fused`` step with the model under ``torch.compile`` (with its compile time).

    .venv/bin/python benchmarks/bench_step.py [--repeats 5] [--compile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench_inference import best_time, gemm_peak  # the benchmarks' shared timing helpers
from biounet.models import UNet, UNetConfig

TILE = 572


def step_function(optimizer: str, compiled: bool = False, batch: int = 1,
                  layout: torch.memory_format = torch.contiguous_format) -> Callable[[], None]:
    """One training step of the step of record with ``optimizer`` (``sgd loop``, ``adam loop``, ``adam fused``),
    its model and tile in ``layout`` (the trainer's 2D layout, NCHW, by default)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=16)).to(memory_format=layout)  # type: ignore[call-overload]
    if optimizer == "sgd loop":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, foreach=False)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=optimizer == "adam fused",
                               foreach=False if optimizer == "adam loop" else None)
    image = torch.rand(batch, 1, TILE, TILE).contiguous(memory_format=layout)
    out_shape = model.output_shape((TILE, TILE))
    label = torch.randint(0, 2, (batch, *out_shape))
    weight = torch.rand(batch, *out_shape)
    network = torch.compile(model) if compiled else model

    def step() -> None:
        logits = network(image)
        loss = (F.cross_entropy(logits, label, reduction="none") * weight).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_flops() -> int:
    with FlopCounterMode(display=False) as counter:
        step_function("adam fused")()
    return int(counter.get_total_flops())


def trainer_step() -> Callable[[], float]:
    """``Trainer.train_step`` of the same model and tile on a synthetic 1024x1024 image (kept alive by the closure)."""
    from biounet.data.examples import Example
    from biounet.data.sampling import PatchSampler
    from biounet.training.config import apply_overrides
    from biounet.training.trainer import Trainer

    config = apply_overrides({}, ["model.base_channels=16", f"tile={TILE}", "batch_size=1", "data_workers=0",
                                  "optim.lr=1e-4", "loss.name=ce"])
    rng = np.random.default_rng(0)
    example = Example("x", rng.random((1, 1024, 1024), np.float32),
                      rng.integers(0, 2, (1024, 1024)).astype(np.int64), rng.random((1024, 1024), np.float32) + 1)
    model = UNet(config.model)
    tile = (TILE, TILE)
    scratch = tempfile.mkdtemp()
    trainer = Trainer(config, model, PatchSampler([example], tile, model.output_shape(tile)), lambda _m: {},
                      Path(scratch), torch.device("cpu"))
    trainer.model.train()
    return trainer.train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    flops = step_flops()
    peak = gemm_peak(8)
    print(f"fp32 GEMM peak {peak:.1f} GFLOP/s; the step: {flops / 1e9:.1f} GFLOP (forward + backward)")
    rows: list[tuple[str, float, str]] = []
    for name in ("sgd loop", "adam loop", "adam fused"):
        rows.append((name, best_time(step_function(name), args.repeats, warmup=2), ""))
    rows.append(("adam fused", best_time(step_function("adam fused", layout=torch.channels_last), args.repeats,
                                         warmup=2), "channels-last (the trainer's layout before: slower backward)"))
    rows.append(("trainer", best_time(trainer_step(), args.repeats, warmup=2), ""))
    if args.compile:
        step = step_function("adam fused", compiled=True)
        started = time.perf_counter()
        step()
        compile_seconds = time.perf_counter() - started
        rows.append(("compiled", best_time(step, args.repeats, warmup=1), f"first step {compile_seconds:.0f} s"))
    print("| step | ms | GFLOP/s | share of peak | note |\n|---|---|---|---|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds * 1e3:.0f} | {flops / seconds / 1e9:.1f} | {flops / seconds / 1e9 / peak:.2f} "
              f"| {note} |", flush=True)


if __name__ == "__main__":
    main()
