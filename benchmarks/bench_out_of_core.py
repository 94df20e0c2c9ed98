"""Out-of-core and Dask prediction of a large image and a large volume: memory, time, equality.

For an 8192x8192 2D image (the shipped ``isbi2012-membranes`` model, valid convolutions) and a 512^3
volume (a 3D U-Net, valid convolutions with batch norm, base 8, depth 2, random weights), each stored as a uint8
zarr array, this prints:

- one process, no Dask (``predict_to_store``, what ``biounet predict --out-format zarr`` runs): wall time,
  peak RSS, and the time against (number of tiles x one tile's time, measured on the same tile shape just
  before), and against the sum of the run's own forward passes (what reading, normalising, writing and the
  block bookkeeping add, free of this machine's drift in speed);
- a LocalCluster of 2 worker processes x 1 thread (``--dask``): wall time against the one-process run with
  2 threads, and each worker's peak RSS;
- the largest difference between the two stores, and between the one-process store and an in-memory
  ``predict`` of the whole array.

Each run is a fresh child process, so that its peak RSS is its own.

    .venv/bin/python benchmarks/bench_out_of_core.py [--size2d 8192] [--size3d 512] [--work bench_runs/ooc]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from scipy import ndimage

from biounet.infer import predict
from biounet.infer.devices import prepare_model
from biounet.infer.out_of_core import local_cluster, predict_to_store
from biounet.infer.predict import TilePredictor
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.config import UNetConfig
from biounet.models.normalization import Normalization
from biounet.models.unet import UNet
from biounet.pretrained import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def write_input(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    """Smooth random uint8 structure, written chunk row by chunk row (never whole in memory)."""
    array = zarr.open_array(str(path), mode="w", shape=shape, chunks=chunks, dtype="uint8")
    rng = np.random.default_rng(0)
    for start in range(0, shape[0], chunks[0]):
        stop = min(start + chunks[0], shape[0])
        noise = rng.random((stop - start, *shape[1:]), np.float32)
        array[start:stop] = (ndimage.uniform_filter(noise, 5) * 255).astype(np.uint8)


def model_3d(path: Path) -> Path:
    torch.manual_seed(0)
    model = UNet(UNetConfig(spatial_dims=3, base_channels=8, depth=2, norm="batch", out_channels=3))
    save_checkpoint(path, model, Normalization("zscore"))
    return path


def child(args: argparse.Namespace) -> None:
    """One run in this process: prints wall seconds, blocks and peak RSS (and the workers' with Dask)."""
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    workers: list[float] = []
    if args.dask:
        import distributed

        with local_cluster(2) as cluster, distributed.Client(cluster) as client:
            started = time.perf_counter()
            run = predict_to_store(args.input, args.model, args.store, scheduler=cluster.scheduler_address)
            seconds = time.perf_counter() - started
            workers = [v / 1024 for v in client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                       .values()]
    else:
        forward = _timed_forward()
        run = predict_to_store(args.input, args.model, args.store)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "blocks": [run.computed, run.total], "workers_mb": workers,
                      "forward": forward[0] if not args.dask else 0.0, "tiles": forward[1] if not args.dask else 0,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _timed_forward() -> list[float]:
    """Makes every TilePredictor add its forward passes' seconds and count to the list returned."""
    spent = [0.0, 0]
    init = TilePredictor.__init__

    def timed_init(self: TilePredictor, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        forward = self._forward

        def timed(x: torch.Tensor) -> torch.Tensor:
            started = time.perf_counter()
            result = forward(x)
            spent[0] += time.perf_counter() - started
            spent[1] += 1
            return result

        self._forward = timed  # type: ignore[method-assign]

    TilePredictor.__init__ = timed_init  # type: ignore[method-assign]
    return spent


def run_child(input_path: Path, model: Path, store: Path, threads: int, dask: bool) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", "--input", str(input_path), "--model", str(model),
               "--store", str(store), "--threads", str(threads)] + (["--dask"] if dask else [])
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def tile_seconds(model: Path, shape: tuple[int, ...]) -> tuple[int, float]:
    """Number of tiles for ``shape`` and the median time of one tile's forward pass and softmax (2 threads),
    measured just before the run it is compared with (this machine's speed drifts by 20 % over minutes)."""
    checkpoint = load_checkpoint(model)
    predictor = TilePredictor(checkpoint.model, shape)
    prepared = prepare_model(checkpoint.model, torch.device("cpu"))
    layout = torch.channels_last if len(shape) == 2 else torch.channels_last_3d
    x = torch.randn(1, checkpoint.config.in_channels, *predictor.plan.input_tile).contiguous(memory_format=layout)
    times = []
    with torch.inference_mode():
        for _ in range(7):
            started = time.perf_counter()
            torch.softmax(prepared(x), 1)
            times.append(time.perf_counter() - started)
    return len(predictor.plan), float(np.median(times[1:]))


def case(name: str, work: Path, model: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    source = work / f"{name}.zarr"
    if not source.exists():
        write_input(source, shape, chunks)
    for store in ("one.zarr", "dask.zarr"):
        target = work / f"{name}-{store}"
        if target.exists():
            __import__("shutil").rmtree(target)
    tiles, per_tile = tile_seconds(model, shape)
    one = run_child(source, model, work / f"{name}-one.zarr", 2, False)
    dask = run_child(source, model, work / f"{name}-dask.zarr", 1, True)
    a = zarr.open_group(str(work / f"{name}-one.zarr"), mode="r")["prob/0"]
    b = zarr.open_group(str(work / f"{name}-dask.zarr"), mode="r")["prob/0"]
    dask_diff = max(float(np.abs(a[..., i:i + 256] - b[..., i:i + 256]).max()) for i in range(0, shape[-1], 256))
    checkpoint = load_checkpoint(model)
    whole = predict(checkpoint, zarr.open_array(str(source), mode="r"))
    memory_diff = max(float(np.abs(a[..., i:i + 256] - whole[..., i:i + 256]).max())
                      for i in range(0, shape[-1], 256))
    size = "x".join(map(str, shape))
    print(f"{name} {size}: one process (2 threads) {one['seconds']:.1f} s, peak RSS {one['rss_mb']:.0f} MB, "
          f"{tiles} tiles x {per_tile:.3f} s = {tiles * per_tile:.1f} s -> ratio "
          f"{one['seconds'] / (tiles * per_tile):.3f}; the run's own {one['tiles']} forward passes took "
          f"{one['forward']:.1f} s -> ratio {one['seconds'] / one['forward']:.3f}; blocks {one['blocks']}")
    workers = ", ".join(f"{w:.0f}" for w in dask["workers_mb"])  # type: ignore[union-attr]
    print(f"{name} {size}: Dask 2 workers x 1 thread {dask['seconds']:.1f} s -> ratio to one process "
          f"{dask['seconds'] / one['seconds']:.3f}; worker peak RSS {workers} MB; driver {dask['rss_mb']:.0f} MB")
    print(f"{name} {size}: max |Dask - one process| = {dask_diff:.2e}, max |one process - in memory| = "
          f"{memory_diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench_runs" / "ooc")
    parser.add_argument("--size2d", type=int, default=8192)
    parser.add_argument("--size3d", type=int, default=512)
    parser.add_argument("--only", choices=("2d", "3d"), default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--dask", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    if args.only in (None, "2d"):
        case("2d", args.work, resolve_model("isbi2012-membranes"), (args.size2d,) * 2, (1024, 1024))
    if args.only in (None, "3d"):
        case("3d", args.work, model_3d(args.work / "model3d.pt"), (args.size3d,) * 3, (128, 128, 128))


if __name__ == "__main__":
    main()
