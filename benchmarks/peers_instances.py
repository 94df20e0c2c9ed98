"""Train a peer instance-segmentation tool (Cellpose 3 or StarDist) from scratch on the DSB 2018 subset's train
split for a fixed wall-clock budget, then write its instance labels for every image of the test split.

The peers run in their own virtual environments outside this repository (they pin other numpy / torch /
TensorFlow versions than biounet), so this script imports nothing from biounet. Set them up once with:

    python3 -m venv /work/peers/cellpose-venv
    python3 -m venv /work/peers/stardist-venv
    echo 'torch==2.13.0' > /work/peers/constraints.txt
    /work/peers/cellpose-venv/bin/pip install -c /work/peers/constraints.txt 'cellpose<4' \
        opencv-python-headless pillow
    /work/peers/stardist-venv/bin/pip install -c /work/peers/constraints.txt tensorflow-cpu stardist

Run (from the repository root):

    /work/peers/cellpose-venv/bin/python benchmarks/peers_instances.py --tool cellpose --minutes 20 --out DIR
    /work/peers/stardist-venv/bin/python benchmarks/peers_instances.py --tool stardist --minutes 20 --out DIR

Options: ``--data`` (default /work/shared/data/dsb2018), ``--threads N`` (cap the CPU threads the tool uses),
``--max-epochs N`` (default: the tool's own standard schedule, 500 for the Cellpose CLI, 400 for StarDist's
Config2D), ``--seed`` (default 0).

What it does:

- Reads ``index.csv``; train ids are split 90/10 into fit / validation with ``numpy.random.default_rng(seed)``
  (8 of the 80 train images are held out). Only train-split masks are read; test masks are never opened.
- Images are RGBA PNGs; every image is made grey as the mean of R, G and B (80% are grey already).
- Cellpose 3.x (the classic residual U-Net, not Cellpose-SAM): a fresh ``CellposeModel(pretrained_model=False,
  model_type=None, diam_mean=17)`` (17 px is the diameter Cellpose's nuclei model rescales objects to); no
  weights are loaded or downloaded. Flows are computed once from the labels, then ``train.train_seg`` runs
  with the Cellpose CLI's training defaults (SGD, learning rate 0.2, momentum 0.9, weight decay 1e-5, batch 8,
  ``min_train_masks=5``, channels [0, 0], per-image percentile normalisation). ``train_seg`` takes a fixed
  epoch count that also shapes its learning-rate schedule (10-epoch warm-up from 0, halving steps at the end),
  so the budget is met by calibration: three optimiser steps of a throwaway network are timed, then a fresh
  network trains for as many whole epochs as fit in 95% of the time left (capped by ``--max-epochs``). A hard
  guard stops it at the deadline if the estimate was too low (``stopped_by: time_guard``, fractional
  ``epochs_done``). A budget too short for one epoch after calibration still trains one epoch (reported in
  ``over_budget_seconds``); note that epoch runs at learning rate 0. Test images are segmented with
  ``diameter`` = the mean over training images of their median object diameter, which ``train_seg`` computes
  and stores on the network (``diam_labels``).
- StarDist 2D: the configuration of StarDist's DSB 2018 example (``Config2D(n_rays=32, grid=(2, 2),
  n_channel_in=1)``, patch 256 x 256, batch 4, 100 steps per epoch), input normalised with
  ``csbdeep.utils.normalize(grey, 1, 99.8)``, label holes filled, the example's flip/rotate, intensity and
  noise augmentation. Training stops at the first batch after the budget (a Keras callback), StarDist then
  restores its best-validation-loss weights, and ``optimize_thresholds`` tunes the probability / NMS
  thresholds on the validation images (timed separately, not part of the budget). TensorBoard logging is off
  (the package is not installed). StarDist runs on the CPU (tensorflow-cpu); Cellpose uses CUDA if torch sees it.
- Writes ``OUT/<id>.png`` (uint16 instance labels, 0 = background, same H x W as the image) for each test image
  and ``OUT/timing.json`` (training seconds, epochs done, prediction seconds per image, tool settings).
  ``train_seconds`` runs from the end of file reading to a trained model: it includes normalisation, label
  preparation (Cellpose's flows) and Cellpose's calibration steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_DATA = Path("/work/shared/data/dsb2018")
VAL_FRACTION = 0.1
CELLPOSE_DIAM_MEAN = 17.0  # the object size Cellpose's built-in nuclei model is trained at
CELLPOSE_MIN_TRAIN_MASKS = 5  # Cellpose's default: images with fewer objects are left out of training
CELLPOSE_BATCH_SIZE = 8
CALIBRATION_STEPS = 3  # optimiser steps timed on a throwaway Cellpose network to plan the epoch count
VALIDATION_ALLOWANCE = 0.05  # train_seg's validation pass (every 10th epoch) on top of the training steps
SAFETY = 0.95  # plan Cellpose epochs for this share of the time left, so the schedule ends before the guard
DEFAULT_MAX_EPOCHS = {"cellpose": 500, "stardist": 400}

Predictor = Callable[[np.ndarray], np.ndarray]


def read_split(data: Path) -> tuple[list[str], list[str]]:
    """Train and test ids from ``index.csv``, each sorted."""
    with (data / "index.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    train = sorted(r["id"] for r in rows if r["split"] == "train")
    test = sorted(r["id"] for r in rows if r["split"] == "test")
    if not train or not test:
        raise SystemExit(f"{data / 'index.csv'}: empty train or test split")
    return train, test


def read_grey(path: Path) -> np.ndarray:
    """An RGB(A) PNG as a float32 grey image: the mean of its R, G and B channels."""
    image = np.asarray(Image.open(path))
    if image.ndim == 2:
        return image.astype(np.float32)
    return image[..., :3].astype(np.float32).mean(axis=-1)


def read_train_labels(data: Path, image_id: str, train_ids: set[str]) -> np.ndarray:
    """The instance labels of one train image (never called for a test image)."""
    if image_id not in train_ids:
        raise ValueError(f"refusing to read the mask of non-train image {image_id}")
    return np.asarray(Image.open(data / "masks" / f"{image_id}.png")).astype(np.uint16)


def write_labels(path: Path, labels: np.ndarray, shape: tuple[int, ...]) -> None:
    """Write instance labels as a 16-bit PNG, checking their size and range."""
    labels = np.asarray(labels)
    if labels.shape != shape:
        raise ValueError(f"{path.name}: prediction shape {labels.shape} != image shape {shape}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"{path.name}: labels outside the uint16 range")
    Image.fromarray(labels.astype(np.uint16)).save(path)


def set_thread_env(threads: int | None) -> None:
    """Cap OpenMP / BLAS / TensorFlow threads; must run before the tool's libraries are imported."""
    if threads is None:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                 "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ[name] = str(threads)


def train_cellpose(fit: list[tuple[np.ndarray, np.ndarray]], val: list[tuple[np.ndarray, np.ndarray]], *,
                   deadline: float, max_epochs: int, threads: int | None, seed: int,
                   workdir: Path, epochs: int | None = None) -> tuple[Predictor, dict[str, Any]]:
    """Train a Cellpose 3 network from random weights until ``deadline``; return a predictor and details."""
    import cellpose
    import torch
    from cellpose import dynamics, models, train

    if threads is not None:
        torch.set_num_threads(threads)
    use_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if use_gpu else "cpu")

    kept = [(x, y) for x, y in fit if len(np.unique(y)) - 1 >= CELLPOSE_MIN_TRAIN_MASKS]
    images = [x for x, _ in kept]
    flows = dynamics.labels_to_flows([y.copy() for _, y in kept], device=device)
    val_images = [x for x, _ in val]
    val_flows = dynamics.labels_to_flows([y.copy() for _, y in val], device=device)
    batches_per_epoch = math.ceil(len(images) / CELLPOSE_BATCH_SIZE)

    def fresh_model() -> Any:
        torch.manual_seed(seed)
        # pretrained_model=False and model_type=None: get_model_params returns no path, nothing is loaded
        model = models.CellposeModel(gpu=use_gpu, device=device, pretrained_model=False, model_type=None,
                                     diam_mean=CELLPOSE_DIAM_MEAN)
        if model.pretrained_model:
            raise RuntimeError(f"Cellpose picked pretrained weights {model.pretrained_model!r}")
        return model

    class TimeUpError(Exception):
        pass

    # Training-mode forward calls: one per optimiser step. The hook times them and raises at the guard.
    state: dict[str, Any] = {"steps": 0, "stamps": [], "max_steps": math.inf, "guard": math.inf}

    def hook(module: Any, _inputs: Any) -> None:
        if module.training:
            if state["steps"] >= state["max_steps"] or time.perf_counter() > state["guard"]:
                raise TimeUpError
            state["steps"] += 1
            state["stamps"].append(time.perf_counter())

    def run(model: Any, n_epochs: int, name: str) -> str:
        handle = model.net.register_forward_pre_hook(hook)
        try:
            train.train_seg(model.net, train_data=images, train_labels=flows, test_data=val_images,
                            test_labels=val_flows, channels=[0, 0], normalize=True, SGD=True, learning_rate=0.2,
                            momentum=0.9, weight_decay=1e-5, batch_size=CELLPOSE_BATCH_SIZE, n_epochs=n_epochs,
                            min_train_masks=0, save_path=str(workdir), save_every=10**9, model_name=name)
        except TimeUpError:
            return "time_guard"
        finally:
            handle.remove()
        return "planned_epochs"

    # train_seg needs its epoch count up front (it sets the learning-rate schedule), so time a few optimiser
    # steps of a throwaway network first and plan the epochs that fit in the time left.
    state["max_steps"] = CALIBRATION_STEPS + 1
    run(fresh_model(), CALIBRATION_STEPS + 1, "calibration")
    seconds_per_step = float(np.median(np.diff(state["stamps"])))
    seconds_per_epoch = seconds_per_step * batches_per_epoch * (1 + VALIDATION_ALLOWANCE)
    left = deadline - time.perf_counter()
    planned = epochs or int(max(1, min(max_epochs, SAFETY * left // seconds_per_epoch)))
    print(f"cellpose: {seconds_per_step:.2f} s per step, ~{seconds_per_epoch:.1f} s per epoch, "
          f"{left:.0f} s left: training {planned} epochs", flush=True)

    model = fresh_model()
    # A budget too small for one epoch still trains one (noted in timing.json as an overrun).
    state.update(steps=0, stamps=[], max_steps=math.inf, guard=deadline if planned > 1 else math.inf)
    stopped_by = run(model, planned, "cellpose_scratch")
    model.net.eval()
    diameter = float(model.net.diam_labels.item())
    model.diam_labels = diameter

    def predict(grey: np.ndarray) -> np.ndarray:
        masks = model.eval(grey, channels=[0, 0], diameter=diameter)[0]
        return np.asarray(masks)

    details = {
        "version": str(cellpose.version),
        "torch": torch.__version__,
        "device": str(device),
        "epochs_done": state["steps"] / batches_per_epoch,
        "planned_epochs": planned,
        "stopped_by": stopped_by,
        "calibration_seconds_per_step": seconds_per_step,
        "calibration_seconds_per_epoch": seconds_per_epoch,
        "n_fit_used": len(images),
        "n_fit_dropped_few_masks": len(fit) - len(images),
        "diam_mean": CELLPOSE_DIAM_MEAN,
        "diameter_used": diameter,
        "settings": {"SGD": True, "learning_rate": 0.2, "momentum": 0.9, "weight_decay": 1e-5,
                     "batch_size": CELLPOSE_BATCH_SIZE, "channels": [0, 0], "bsize": 224,
                     "min_train_masks": CELLPOSE_MIN_TRAIN_MASKS},
    }
    return predict, details


def _stardist_augment(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StarDist's DSB example augmentation: random axis permutation and flips, intensity scale/shift, noise."""
    if np.random.rand() > 0.5:
        x, y = x.swapaxes(0, 1), y.swapaxes(0, 1)
    for axis in (0, 1):
        if np.random.rand() > 0.5:
            x, y = np.flip(x, axis=axis), np.flip(y, axis=axis)
    x = x * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)
    x = x + 0.02 * np.random.uniform(0, 1) * np.random.normal(0, 1, x.shape)
    return x, y


def train_stardist(fit: list[tuple[np.ndarray, np.ndarray]], val: list[tuple[np.ndarray, np.ndarray]], *,
                   deadline: float, max_epochs: int, threads: int | None, seed: int,
                   workdir: Path) -> tuple[Predictor, dict[str, Any]]:
    """Train StarDist 2D from random weights until ``deadline``, tune its thresholds; return a predictor."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import stardist
    import tensorflow as tf
    from csbdeep.utils import normalize
    from csbdeep.utils.tf import keras_import
    from stardist import calculate_extents, fill_label_holes
    from stardist.models import Config2D, StarDist2D

    if threads is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.keras.utils.set_random_seed(seed)
    callback_base = keras_import("callbacks", "Callback")

    x_fit = [normalize(x, 1, 99.8, axis=(0, 1)) for x, _ in fit]
    y_fit = [fill_label_holes(y) for _, y in fit]
    x_val = [normalize(x, 1, 99.8, axis=(0, 1)) for x, _ in val]
    y_val = [fill_label_holes(y) for _, y in val]

    smallest = min(min(x.shape) for x in x_fit + x_val)
    patch = min(256, smallest // 16 * 16)
    # train_tensorboard=False: the TensorBoard callback needs the tensorboard package, and nothing reads the logs
    config = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False, train_patch_size=(patch, patch),
                      train_tensorboard=False)
    model = StarDist2D(config, name="stardist", basedir=str(workdir))
    steps_per_epoch = int(config.train_steps_per_epoch)

    class TimeLimit(callback_base):  # type: ignore[misc, valid-type]
        """Stop fitting at the first batch that ends after the deadline."""

        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.steps += 1
            if time.perf_counter() > deadline:
                self.model.stop_training = True

    limit = TimeLimit()
    model.prepare_for_training()
    model.callbacks.append(limit)
    model.train(x_fit, y_fit, validation_data=(x_val, y_val), augmenter=_stardist_augment, epochs=max_epochs,
                steps_per_epoch=steps_per_epoch, seed=seed)
    train_end = time.perf_counter()
    model.optimize_thresholds(x_val, y_val)
    tuning_seconds = time.perf_counter() - train_end

    def predict(grey: np.ndarray) -> np.ndarray:
        x = normalize(grey, 1, 99.8, axis=(0, 1))
        labels, _ = model.predict_instances(x, n_tiles=model._guess_n_tiles(x), show_tile_progress=False)
        return np.asarray(labels)

    details = {
        "version": stardist.__version__,
        "tensorflow": tf.__version__,
        "device": "cpu",
        "epochs_done": limit.steps / steps_per_epoch,
        "steps_done": limit.steps,
        "stopped_by": "time" if limit.steps < max_epochs * steps_per_epoch else "max_epochs",
        "train_end_to_thresholds_seconds": tuning_seconds,
        "thresholds": {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)},
        "median_object_extent": [float(v) for v in calculate_extents(y_fit, np.median)],
        "network_fov": [int(v) for v in model._axes_tile_overlap("YX")],
        "settings": {"n_rays": 32, "grid": [2, 2], "train_patch_size": [patch, patch],
                     "train_batch_size": int(config.train_batch_size), "steps_per_epoch": steps_per_epoch,
                     "learning_rate": float(config.train_learning_rate), "normalize_percentiles": [1, 99.8]},
    }
    return predict, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", choices=("cellpose", "stardist"), required=True)
    parser.add_argument("--minutes", type=float, required=True, help="training wall-clock budget")
    parser.add_argument("--out", type=Path, required=True, help="folder for <id>.png and timing.json")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the tool (default: its own)")
    parser.add_argument("--max-epochs", type=int, default=None, help="epoch cap (default: the tool's standard)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="Cellpose: train this many epochs instead of the calibrated count (the time guard "
                             "still stops it at the budget); for when calibration, timed on a cold network, "
                             "overestimates the step time (a 30-minute run once trained only 19.3 minutes)")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    set_thread_env(args.threads)
    max_epochs = args.max_epochs or DEFAULT_MAX_EPOCHS[args.tool]

    train_ids, test_ids = read_split(args.data)
    rng = np.random.default_rng(args.seed)
    n_val = max(1, round(VAL_FRACTION * len(train_ids)))
    val_ids = sorted(rng.choice(train_ids, n_val, replace=False).tolist())
    fit_ids = [i for i in train_ids if i not in val_ids]
    allowed = set(train_ids)

    def load(ids: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(read_grey(args.data / "images" / f"{i}.png"), read_train_labels(args.data, i, allowed)) for i in ids]

    fit, val = load(fit_ids), load(val_ids)
    print(f"{args.tool}: {len(fit)} fit + {len(val)} validation images, {len(test_ids)} test, "
          f"budget {args.minutes:g} min", flush=True)

    trainer = train_cellpose if args.tool == "cellpose" else train_stardist
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"peers-{args.tool}-") as workdir:
        start = time.perf_counter()
        deadline = start + 60.0 * args.minutes
        extra = {"epochs": args.epochs} if args.tool == "cellpose" else {}
        predict, details = trainer(fit, val, deadline=deadline, max_epochs=max_epochs, threads=args.threads,
                                   seed=args.seed, workdir=Path(workdir), **extra)
        train_seconds = time.perf_counter() - start - details.get("train_end_to_thresholds_seconds", 0.0)
        print(f"{args.tool}: trained {train_seconds:.1f} s, {details['epochs_done']:.2f} epochs", flush=True)

        predict_seconds: dict[str, float] = {}
        for image_id in test_ids:
            grey = read_grey(args.data / "images" / f"{image_id}.png")
            t0 = time.perf_counter()
            labels = predict(grey)
            predict_seconds[image_id] = time.perf_counter() - t0
            write_labels(args.out / f"{image_id}.png", labels, grey.shape)

    timing = {
        "tool": args.tool,
        "budget_minutes": args.minutes,
        "train_seconds": train_seconds,
        "over_budget_seconds": max(0.0, train_seconds - 60.0 * args.minutes),
        "epochs_done": details.pop("epochs_done"),
        "max_epochs": max_epochs,
        "threshold_tuning_seconds": details.pop("train_end_to_thresholds_seconds", None),
        "predict_seconds": predict_seconds,
        "predict_seconds_total": sum(predict_seconds.values()),
        "threads": args.threads,
        "seed": args.seed,
        "n_fit": len(fit_ids),
        "val_ids": val_ids,
        "test_ids": test_ids,
        "python": sys.version.split()[0],
        **details,
    }
    (args.out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"{args.tool}: wrote {len(test_ids)} label images and timing.json to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
