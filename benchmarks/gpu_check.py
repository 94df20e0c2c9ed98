"""The CUDA paths CI cannot run: training with and without AMP, prediction, agreement with the CPU, speed.

On a machine with a GPU (none in CI), run

    .venv/bin/python benchmarks/gpu_check.py [--steps 300] [--device cuda]

It makes a synthetic 2D dataset of touching nuclei (the tests' ``write_nuclei_dataset``), then prints:

1. training: seconds per step and peak GPU memory for float32 and for ``--amp`` (bfloat16 where the GPU has
   it, else float16 with a gradient scaler), ``steps`` steps each, the loss first and last (AMP must train);
   beside them, MONAI's BasicUNet of the same widths in the same loop, when MONAI is installed;
2. prediction: a 2048x2048 image with the trained float32 model on the GPU and on the CPU, images/s and
   Mpx/s on each, and the largest difference of the probabilities (TF32 off, so it should be ~1e-5);
   beside it, MONAI's ``sliding_window_inference`` on the same network and tiles.

``--device cpu`` runs the same script on the CPU (AMP rows skipped) to check the script itself.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from biounet.data.sampling import PatchSampler
from biounet.infer import predict
from biounet.infer.predict import TilePredictor
from biounet.training.config import apply_overrides
from biounet.training.run import initial_model, load_examples
from biounet.training.trainer import Trainer
from conftest import write_nuclei_dataset


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rows(images: Path, labels: Path, out: Path, device: torch.device, steps: int) -> Trainer:
    trainer = None
    for amp in ("off", "auto"):
        if amp != "off" and device.type != "cuda":
            print("training amp: skipped on the CPU (float32 only)")
            continue
        config = apply_overrides({}, [f"data.images={images}", f"data.labels={labels}", "model.base_channels=32",
                                      "model.depth=4", "tile=572", "batch_size=4", f"amp={amp}",
                                      "loss.name=ce_dice", "augment.elastic_sigma=10"])
        config, examples, _ = load_examples(config, progress=False)
        torch.manual_seed(0)
        model = initial_model(config)
        shape = config.model.valid_input_shape(config.tile_shape, min_output=config.model.alignment)
        sampler = PatchSampler(examples, shape, config.model.output_shape(shape))
        trainer = Trainer(config, model, sampler, lambda m: {}, out / amp, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        losses = [trainer.train_step() for _ in range(10)]  # warm-up, cudnn.benchmark's search
        synchronize(device)
        started = time.perf_counter()
        losses += [trainer.train_step() for _ in range(steps)]
        synchronize(device)
        seconds = (time.perf_counter() - started) / steps
        memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
        print(f"training amp={amp} ({trainer.amp}): {seconds * 1000:.1f} ms/step, "
              f"{4 / seconds:.1f} patches/s, peak GPU memory {memory:.0f} MiB, loss {losses[0]:.3f} -> "
              f"{np.mean(losses[-10:]):.3f}")
        if amp == "off":
            monai_training(device, steps, shape, seconds)
    assert trainer is not None
    return trainer


def monai_training(device: torch.device, steps: int, shape: tuple[int, ...], ours: float) -> None:
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        print("MONAI: not installed (pip install 'biounet[bench]')")
        return
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(32, 64, 128, 256, 512, 32)).to(device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(4, 1, *shape, device=device)
    y = torch.randint(0, 3, (4, *shape), device=device)
    for k in range(steps + 10):
        if k == 10:
            synchronize(device)
            started = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    synchronize(device)
    seconds = (time.perf_counter() - started) / steps
    print(f"MONAI BasicUNet (same widths, same patches, float32): {seconds * 1000:.1f} ms/step; "
          f"biounet / MONAI time {ours / seconds:.2f}")


def prediction_rows(trainer: Trainer, device: torch.device) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    image = np.random.default_rng(1).random((2048, 2048), np.float32)
    model = trainer.model
    results = {}
    for where in ([device, torch.device("cpu")] if device.type == "cuda" else [device]):
        predict(model, image[:512, :512], device=where)  # warm-up
        synchronize(where)
        started = time.perf_counter()
        results[where.type] = predict(model, image, device=where)
        synchronize(where)
        seconds = time.perf_counter() - started
        tiles = len(TilePredictor(model, image.shape).plan)
        print(f"prediction on {where}: 2048x2048 in {seconds:.2f} s ({tiles} tiles), {1 / seconds:.2f} images/s, "
              f"{2048**2 / seconds / 1e6:.1f} Mpx/s")
    if "cuda" in results:
        print(f"max |GPU - CPU| probability: {np.abs(results['cuda'] - results['cpu']).max():.2e}")
    try:
        from monai.inferers import sliding_window_inference
        from monai.networks.nets import BasicUNet
    except ImportError:
        return
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=3, features=(32, 64, 128, 256, 512, 32))
    net = net.to(device).eval()
    x = torch.from_numpy(image)[None, None].to(device)
    with torch.inference_mode():
        sliding_window_inference(x[..., :512, :512], (512, 512), 4, net, overlap=0.25)
        synchronize(device)
        started = time.perf_counter()
        sliding_window_inference(x, (512, 512), 4, net, overlap=0.25, mode="gaussian")
        synchronize(device)
    seconds = time.perf_counter() - started
    print(f"MONAI BasicUNet + sliding_window_inference (512 windows, overlap 0.25, same widths) on {device}: "
          f"{1 / seconds:.2f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: this check has not run (use --device cpu to test the script)")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    with tempfile.TemporaryDirectory() as folder:
        images, labels = write_nuclei_dataset(Path(folder) / "data", 16, size=256)
        trainer = train_rows(images, labels, Path(folder) / "runs", device, args.steps)
        prediction_rows(trainer, device)


if __name__ == "__main__":
    main()
