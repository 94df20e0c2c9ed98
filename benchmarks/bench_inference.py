"""Inference speed on this machine, as ratios that cancel machine noise.

Prints, for the paper's U-Net (base 64) in its padded variant on a 512x512 image and for a base-16
variant: ms per image, achieved GFLOP/s (FLOPs counted by torch.utils.flop_counter), the ratio to the fp32
GEMM peak measured in the same run, and the speed-up over MONAI's BasicUNet with the same widths measured
in the same run (and over ONNX Runtime on our exported network, when installed). Then overlap-tile
prediction of a 2048x2048 image with the valid paper network against (number of tiles x one tile's time).

Run: make bench   (or: .venv/bin/python benchmarks/bench_inference.py [--quick] [--no-monai])
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from biounet.infer import predict
from biounet.infer.devices import prepare_model
from biounet.infer.predict import DEFAULT_TILE
from biounet.infer.tiling import plan_tiles
from biounet.models import UNet, UNetConfig


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_peak(repeats: int) -> float:
    """Best fp32 matrix-multiply GFLOP/s of this machine with torch's default threads."""
    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, repeats, warmup=3) / 1e9


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return int(counter.get_total_flops())


def monai_basic_unet(base: int) -> torch.nn.Module | None:
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        return None
    widths = (base, 2 * base, 4 * base, 8 * base, 16 * base, base)
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=widths).eval()


def onnx_runtime_forward(model: UNet, x: np.ndarray) -> Callable[[], object] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from biounet.export.onnx import export_onnx

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(model, path, tile=x.shape[-1])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"image": x})


def bench_512(base: int, peak: float, repeats: int, use_monai: bool) -> None:
    model = UNet(UNetConfig(base_channels=base, padding="same")).eval()
    image = np.random.rand(1, 512, 512).astype(np.float32)
    x = torch.from_numpy(image)[None]
    flops = count_flops(model, x)
    ours = best_time(lambda: predict(model, image, tile=512, device="cpu"), repeats)
    rows = [("biounet predict (channels-last fp32)", ours, flops)]
    prepared = prepare_model(model, torch.device("cpu"))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        rows.append(("biounet UNet.forward only", best_time(lambda: prepared(x_cl), repeats), flops))
    monai = monai_basic_unet(base) if use_monai else None
    monai_time = None
    if monai is not None:
        monai_flops = count_flops(monai, x)
        with torch.inference_mode():
            monai_time = best_time(lambda: monai(x), repeats)
        rows.append(("MONAI BasicUNet (same widths)", monai_time, monai_flops))
    ort_run = onnx_runtime_forward(model, image[None])
    ort_time = best_time(ort_run, repeats) if ort_run is not None else None
    if ort_time is not None:
        rows.append(("ONNX Runtime (our exported net)", ort_time, flops))
    print(f"\n== U-Net base {base}, padded ('same'), 512x512, 1 image: {flops / 1e9:.1f} GFLOP ==")
    print(f"{'path':40s} {'ms/img':>9s} {'GFLOP/s':>9s} {'of peak':>8s} {'vs ours':>8s}")
    for name, seconds, f in rows:
        print(f"{name:40s} {seconds * 1e3:9.0f} {f / seconds / 1e9:9.1f} {f / seconds / 1e9 / peak:8.2f} "
              f"{seconds / ours:8.2f}")
    if monai_time is not None:
        print(f"speed-up of biounet predict over MONAI BasicUNet: {monai_time / ours:.2f}x")


def bench_tiling(base: int, repeats: int) -> None:
    model = UNet(UNetConfig(base_channels=base)).eval()
    image = np.random.rand(2048, 2048).astype(np.float32)
    plan = plan_tiles(model.config, image.shape, (572, 572))
    prepared = prepare_model(model, torch.device("cpu"))
    print(f"\n== overlap-tile, valid U-Net base {base}, 2048x2048, tile 572 -> 388: {len(plan)} tiles ==")
    for batch in (1, 4):
        x = torch.rand(batch, 1, 572, 572).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            per_tile = best_time(lambda x=x: torch.softmax(prepared(x), 1), repeats) / batch
        total = best_time(lambda batch=batch: predict(model, image, tile=572, batch_size=batch, device="cpu"),
                          max(1, repeats // 2), warmup=0)
        ideal = per_tile * len(plan)
        print(f"batch {batch}: one tile {per_tile * 1e3:.0f} ms, predict {total:.2f} s, "
              f"tiles x tile time {ideal:.2f} s, ratio {total / ideal:.3f} (target <= 1.15)")
    default = plan_tiles(model.config, image.shape, (DEFAULT_TILE[2],) * 2)
    total = best_time(lambda: predict(model, image, device="cpu"), 1, warmup=0)
    print(f"default tile {default.input_tile[0]} -> {default.output_tile[0]} ({len(default)} tiles): "
          f"predict {total:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, base-16 tiling only")
    parser.add_argument("--no-monai", action="store_true", help="skip the MONAI comparison")
    args = parser.parse_args()
    repeats = 2 if args.quick else 3
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    peak = gemm_peak(8)
    print(f"fp32 GEMM peak (4096^3 matmul): {peak:.1f} GFLOP/s")
    for base in (64, 16):
        bench_512(base, peak, repeats, not args.no_monai)
    for base in ((16,) if args.quick else (16, 64)):
        bench_tiling(base, repeats)
    print(f"\nGEMM peak re-measured at the end: {gemm_peak(8):.1f} GFLOP/s (drift check; ratios above use "
          f"{peak:.1f})")


if __name__ == "__main__":
    main()
