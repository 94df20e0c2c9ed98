"""Augmentation cost against the training step it feeds, on this machine.

Prints ms per 572x572 sample (1-channel image + label + weight map, the default augmentation, batch 1)
and, in the same run, one training step (forward + backward + SGD step) of ``UNet(UNetConfig(base_channels=16))``
(valid padding, channels_last) on a 1x1x572x572 tile with its 388x388 label and weighted cross-entropy,
then the ratio augmentation / step. Augmentation should stay a small fraction of the step (target < 0.20).

Also prints the training step's GFLOP/s against the fp32 GEMM peak measured in the same run.

Run: .venv/bin/python benchmarks/bench_augment.py [--repeats N]
"""

from __future__ import annotations

import argparse

import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench_inference import best_time, gemm_peak  # the benchmarks' shared timing helpers
from biounet.augment import AugmentConfig, Augmenter
from biounet.models import UNet, UNetConfig

TILE = 572


def augmentation_seconds(repeats: int) -> float:
    augmenter = Augmenter(AugmentConfig())
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, TILE, TILE)
    label = torch.randint(0, 2, (1, TILE, TILE))
    weight = torch.rand(1, TILE, TILE)
    return best_time(lambda: augmenter(image, label, weight, generator=generator), repeats)


def train_step_seconds(repeats: int) -> tuple[float, int]:
    """Seconds per step and the step's FLOPs (forward + backward, counted by torch's flop counter)."""
    model = UNet(UNetConfig(base_channels=16)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99)
    image = torch.rand(1, 1, TILE, TILE).contiguous(memory_format=torch.channels_last)
    out_shape = model.output_shape((TILE, TILE))
    label = torch.randint(0, 2, (1, *out_shape))
    weight = torch.rand(1, *out_shape)

    def step() -> None:
        logits = model(image)
        loss = (F.cross_entropy(logits, label, reduction="none") * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    return best_time(step, repeats), int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    augment = augmentation_seconds(max(args.repeats * 4, 10))
    peak = gemm_peak(8)
    step, flops = train_step_seconds(args.repeats)
    print(f"augmentation (elastic + rotate + flip + scale + gray values), 572x572: {augment * 1e3:.1f} ms/sample")
    print(f"training step, UNet base 16, valid, 572 -> 388, channels_last:   {step * 1e3:.1f} ms, "
          f"{flops / 1e9:.1f} GFLOP, {flops / step / 1e9:.1f} GFLOP/s = {flops / step / 1e9 / peak:.2f} of the "
          f"fp32 GEMM peak ({peak:.1f} GFLOP/s)")
    print(f"ratio augmentation / step: {augment / step:.3f} (target < 0.20)")


if __name__ == "__main__":
    main()
