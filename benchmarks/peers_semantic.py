"""nnU-Net v2 beside ``biounet train``: the same datasets, splits, wall-clock budget and scores as bench_autoplan.

For each dataset this converts the train split to nnU-Net's raw layout, runs nnU-Net's own fingerprint extraction,
planning (the default ``ExperimentPlanner``, plans ``nnUNetPlans``) and preprocessing, trains nnU-Net on the CPU
for the budget, predicts the test split with nnU-Net's ``nnUNetPredictor`` and scores the predictions with our
metrics exactly as ``benchmarks/bench_autoplan.py`` scores ``biounet train``:

- ``isbi``: ISBI 2012 slices 00-24 train, 25-29 test; 2D configuration; Rand error under the challenge protocol
  (:func:`biounet.metrics.isbi.isbi_challenge_scores`, one threshold for the 5-slice stack, no warping error) on
  nnU-Net's softmax probability of "cell" (saved with ``save_probabilities``).
- ``dsb``: the DSB 2018 subset's ``train``/``test`` rows of ``index.csv``; 2D configuration; foreground Dice, and
  accuracy@0.5 with the connected components of nnU-Net's mask as instances, pooled over the test images (StarDist's
  ``matching_dataset``, as ablation.py scores ours; the mean of per-image accuracies beside it).
- ``hippocampus``: MSD Task04's ``train``/``test`` rows; ``3d_fullres``; Dice of anterior and posterior.

Run it with the project's interpreter (it scores with this checkout's ``src/biounet``; nnU-Net runs in a
subprocess of its own venv, one dataset after the other):

    .venv/bin/python benchmarks/peers_semantic.py --datasets isbi,dsb,hippocampus --minutes 20

Options: ``--datasets``, ``--minutes`` (default 20), ``--seed`` (default 0), ``--out`` (default
``bench_out/peers_semantic``), ``--data`` (default ``../shared/data`` or ``../../shared/data`` from the repository
root, whichever exists), ``--threads`` (torch CPU threads, default: all cores, as ``nnUNetv2_train -device cpu``),
``--da-workers`` (``nnUNet_n_proc_DA``, default 1), ``--no-tta`` (predict without nnU-Net's mirroring),
``--preprocessing-outside-budget``, ``--isbi-foreground {membrane,cell}``, ``--reuse`` (score the predictions of an
earlier run again), ``--venv``.

Installation (benchmark-only). nnunetv2 pulls SimpleITK, batchgenerators(v2), dynamic-network-architectures, timm,
huggingface_hub, scikit-learn, seaborn, blosc2 and more, which a biounet user never needs, so it is not a pyproject
extra: on first use the script makes ``bench_out/venv-nnunet`` (``python -m venv``) whose ``.pth`` file appends the
project venv's site-packages to ``sys.path``, so torch (and numpy, scipy, scikit-image ...) are reused from the project
venv and never downloaded, and installs ``nnunetv2==2.8.1`` into it with ``pip install -c constraints.txt`` (torch
pinned). The script then uninstalls the ``torchvision`` pip pulls in for timm: PyPI's torchvision wheel does not load
on the CPU build of torch (``operator torchvision::nms does not exist``) and only timm imports it, for nnU-Net's
Primus transformer trainers, never used here. The torch version (and that the new venv has no torch of its own) is
checked in both venvs on every run.

What nnU-Net gets (read from nnunetv2 2.8.1's source):

- Raw data (conversion time is reported, not budgeted: it is the one-off data preparation nnU-Net requires): ISBI as
  grey ``.png`` with ``NaturalImage2DIO`` and channel "EM" (z-score); labels 0 = background, 1 = membrane (our
  files store membrane as 0 and cell as 255; ``--isbi-foreground cell`` makes cell the nnU-Net foreground instead).
  Membrane is the structure segmented, so it is what nnU-Net's Dice term (``do_bg=False``) and foreground
  oversampling are aimed at. DSB: RGB ``.png`` (the constant alpha dropped), channels R, G, B (z-score), labels
  0 / 1 = any nucleus. Hippocampus: the ``.nii.gz`` images byte for byte, channel "MRI" (z-score), labels rewritten
  as uint8 0/1/2 (two source label files are float32). The test split's images go to ``imagesTs``; test labels are
  never copied into nnU-Net's folders and are read from the dataset only to score.
- ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results`` point under ``--out``; dataset ids 501 ISBI2012,
  502 DSB2018, 504 Hippocampus. Fingerprint (with ``verify_dataset_integrity``), planning and preprocessing run
  through ``nnunetv2.experiment_planning.plan_and_preprocess_api`` with as many processes as cores
  (``nnUNet_def_n_proc``); only the configuration trained is preprocessed (``-c 2d`` / ``-c 3d_fullres``).
- Budget: the whole nnU-Net run counts, as ``biounet train --minutes`` counts reading the data and planning:
  fingerprint + planning + preprocessing + training (data loader start-up, every epoch, checkpoint writes) end
  within ``--minutes``; training gets what preprocessing left. Preprocessing seconds are reported on their own.
  ``--preprocessing-outside-budget`` gives training the whole budget instead. Prediction is not budgeted (for
  ours neither) and is timed separately.
- Training: fold ``all`` (every training case; nnU-Net's ``val`` pseudo-Dice is then measured on training cases and
  only feeds its log and ``checkpoint_best``; we predict with ``checkpoint_final``, nnU-Net's default). Ours holds
  ``data.val_fraction`` (0.2) of the training pairs out to pick its best checkpoint, so nnU-Net trains on more
  images; fold 0 would instead hold out a fifth of them for a validation that changes nothing here.
  ``device=torch.device('cpu')``; ``nnUNet_compile=f`` (nnU-Net disables torch.compile on the CPU anyway); no
  autocast / GradScaler on the CPU; ``pin_memory`` is only used for CUDA; ``nnUNet_n_proc_DA`` augmentation workers
  (``--da-workers``, default 1; 0 runs augmentation in the training process); torch threads = cores, as
  ``nnUNetv2_train -device cpu`` sets them. The plans are nnU-Net's, made for an 8 GB GPU (patch and batch size), kept
  as they are. No final validation (``perform_actual_validation``): with fold ``all`` it would re-predict training
  cases. nnU-Net downloads nothing on this path (only its ``model_sharing`` module uses ``requests``).
- Schedule: a trainer subclass defined here (``nnUNetTrainerWallClock``, run through the Python API by
  instantiating it: nnU-Net finds a trainer by name by importing every module of its trainer package, then the
  ``nnUNet_extTrainer`` folders, and that walk stops at its Primus trainers, which need torchvision) keeps nnU-Net's
  epoch loop, SGD (lr 0.01, Nesterov 0.99), poly learning rate stepped once per epoch, loss, augmentation and
  checkpointing, and only sizes the epochs to the clock. nnU-Net's defaults (1000 epochs x 250 iterations, 50
  validation iterations) take days on a CPU, so: the first ``CALIBRATION_STEPS`` training steps of epoch 0 are timed
  (data loading included); the steps that fit in the time left give ``num_iterations_per_epoch`` = that total /
  ``TARGET_EPOCHS``, at least ``MIN_ITERATIONS`` and at most 250, and ``num_epochs`` = total / iterations (at most
  1000); ``num_val_iterations_per_epoch`` keeps nnU-Net's 50:250 ratio (at least 1). After every epoch
  ``num_epochs`` (and the poly schedule's length with it) is re-planned from the measured whole-epoch times, with a
  shorter last epoch (validation scaled alike) in the time a whole one would not fit, so the learning rate reaches
  about 0 when the budget does. A guard stops before a step that would not end in time (less the time to write the
  final checkpoint); the output says whether training ended by its plan or by the guard. The very first step has
  no estimate, so a budget too short for it overruns by that step.
- Prediction: ``nnUNetPredictor`` on the CPU (``perform_everything_on_device=False``), tile step 0.5, Gaussian
  weighting, with nnU-Net's default test-time mirroring over all axes (``--no-tta`` turns it off; ours in
  bench_autoplan predicts without TTA). The network is built by ``nnUNetTrainer.build_network_architecture`` and
  handed to ``manual_initialization`` (as nnU-Net's own final validation does), since
  ``initialize_from_trained_model_folder`` looks the trainer up by name (the walk above).

Output: a table (dataset, configuration, plan, epochs x iterations, preprocessing s = verify + fingerprint + plan +
preprocess, training s, scores) and rows appended to ``OUT/peers_semantic.csv`` (``--reuse`` appends a row with a
new ``scored`` time); per dataset ``OUT/<dataset>/worker.log`` (nnU-Net's output), ``OUT/<dataset>/result.json``
(timings and choices) and ``OUT/<dataset>/predictions``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
NNUNET_REQUIREMENT = "nnunetv2==2.8.1"
DATASETS = {"isbi": (501, "ISBI2012", "2d"), "dsb": (502, "DSB2018", "2d"),
            "hippocampus": (504, "Hippocampus", "3d_fullres")}
# The schedule (see the docstring): steps timed before planning, epochs aimed at, fewest iterations per epoch.
CALIBRATION_STEPS = 3
TARGET_EPOCHS = 50
MIN_ITERATIONS = 10
NNUNET_ITERATIONS, NNUNET_VAL_ITERATIONS, NNUNET_EPOCHS = 250, 50, 1000
PREPROCESSING = ("verify_s", "fingerprint_s", "plan_s", "preprocess_s")  # nnUNetv2_plan_and_preprocess's parts
VAL_STEP_COST = 0.35  # a validation step (forward only, no augmentation) against a training step, before measuring
CSV_FIELDS = ["finished", "scored", "dataset", "config", "budget_min", "preprocessing_in_budget", "fold", "tta",
              "patch", "batch", "stages", "epochs", "steps", "iterations", "final_iterations", "val_iterations",
              "stopped_by", "s_per_step", "s_per_epoch", "convert_s", "verify_s", "fingerprint_s", "plan_s",
              "preprocess_s", "setup_s", "train_s", "total_s", "predict_s", "threads", "da_workers", "seed", "scores"]


# ----------------------------------------------------------------------------------------------- orchestrator


def default_data() -> Path:
    candidates = [ROOT.parent / "shared" / "data", ROOT.parents[1] / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def pinned_torch() -> str:
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.strip().split("==", 1)[1]
    raise SystemExit(f"{CONSTRAINTS}: no torch pin")


def torch_of(python: Path) -> tuple[str, str]:
    code = "import torch; print(torch.__version__); print(torch.__file__)"
    version, where = subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                                    text=True).stdout.split()
    return version, where


def ensure_venv(venv: Path) -> Path:
    """The nnU-Net venv (made and filled on first use), with torch reused from this interpreter's venv."""
    pin = pinned_torch()
    import torch

    if torch.__version__.split("+")[0] != pin:
        raise SystemExit(f"run this with the project's venv (torch {pin}), not torch {torch.__version__}")
    python = venv / "bin" / "python"
    ready = python.exists() and subprocess.run([str(python), "-c", "import nnunetv2"],
                                               capture_output=True).returncode == 0
    if not ready:
        print(f"installing {NNUNET_REQUIREMENT} into {venv} (benchmark only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        (Path(site) / "zz_project_venv.pth").write_text("".join(f"{p}\n" for p in ours))
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--quiet", "-c", str(CONSTRAINTS), NNUNET_REQUIREMENT], check=True)
        # timm's torchvision: PyPI's wheel does not load on the CPU build of torch, and nothing here needs it.
        subprocess.run([*pip, "uninstall", "--quiet", "-y", "torchvision"], check=False)
    for interpreter in (python, Path(sys.executable)):
        version, where = torch_of(interpreter)
        if version.split("+")[0] != pin:
            raise SystemExit(f"{interpreter}: torch {version} at {where}, expected {pin}")
    if Path(torch_of(python)[1]).resolve().is_relative_to(venv.resolve()):
        raise SystemExit(f"{venv} has its own torch: it should reuse the project venv's")
    return python


def case_id(name: str, image: Path) -> str:
    """nnU-Net's case identifier of an image of the dataset."""
    return image.name[: -len(".nii.gz")] if name == "hippocampus" else f"{name}_{image.stem}"


def test_cases(name: str, data: Path) -> list[tuple[str, Path]]:
    """The test split as (case id, label file in the dataset), by bench_autoplan's split."""
    from bench_autoplan import split

    return [(case_id(name, image), label) for image, label in split(name, data)[1]]


def convert(name: str, data: Path, raw: Path, isbi_foreground: str) -> Path:
    """Writes ``Dataset5xx_Name`` (imagesTr, labelsTr, imagesTs, dataset.json) and returns its folder."""
    from PIL import Image

    from bench_autoplan import split

    dataset_id, dataset_name, _ = DATASETS[name]
    folder = raw / f"Dataset{dataset_id:03d}_{dataset_name}"
    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (folder / sub).mkdir(parents=True)
    train, test = split(name, data)
    if name == "hippocampus":
        import nibabel as nib

        ending, channels = ".nii.gz", {"0": "MRI"}
        labels = {"background": 0, "Anterior": 1, "Posterior": 2}

        def write_image(source: Path, target: Path) -> None:
            shutil.copyfile(source, target)

        def write_label(source: Path, target: Path) -> None:
            stored = nib.load(source)
            values = np.asarray(stored.dataobj)
            if not np.array_equal(values, np.round(values)) or values.min() < 0 or values.max() > 2:
                raise SystemExit(f"{source}: labels outside 0, 1, 2")
            image = nib.Nifti1Image(values.astype(np.uint8), stored.affine, stored.header)
            image.set_data_dtype(np.uint8)
            nib.save(image, target)
    else:
        ending = ".png"
        if name == "isbi":
            channels = {"0": "EM"}
            labels = {"background": 0, isbi_foreground: 1}
            # Our ISBI labels: 0 = membrane, 255 = cell interior (PROVENANCE.md).
            stored_foreground = 0 if isbi_foreground == "membrane" else 255
        else:
            channels = {"0": "R", "1": "G", "2": "B"}
            labels = {"background": 0, "nucleus": 1}

        def write_image(source: Path, target: Path) -> None:
            if name == "isbi":
                shutil.copyfile(source, target)
            else:
                Image.open(source).convert("RGB").save(target)

        def write_label(source: Path, target: Path) -> None:
            values = np.asarray(Image.open(source))
            mask = values == stored_foreground if name == "isbi" else values > 0
            Image.fromarray(mask.astype(np.uint8)).save(target)

    for image, label in train:
        write_image(image, folder / "imagesTr" / f"{case_id(name, image)}_0000{ending}")
        write_label(label, folder / "labelsTr" / f"{case_id(name, image)}{ending}")
    for image, _ in test:
        write_image(image, folder / "imagesTs" / f"{case_id(name, image)}_0000{ending}")
    description = {"channel_names": channels, "labels": labels, "numTraining": len(train), "file_ending": ending,
                   "name": dataset_name, "description": f"biounet peers_semantic: the train split of {name}"}
    if ending == ".png":
        description["overwrite_image_reader_writer"] = "NaturalImage2DIO"
    (folder / "dataset.json").write_text(json.dumps(description, indent=2) + "\n")
    return folder


def read_predictions(name: str, predictions: Path, test: list[tuple[str, Path]],
                     isbi_foreground: str) -> list[np.ndarray]:
    """nnU-Net's test predictions as our scorers take them: cell probabilities (isbi) or class maps."""
    from biounet.data.labels import read_label

    if name == "isbi":
        out = []
        for case, _ in test:
            probabilities = np.load(predictions / f"{case}.npz")["probabilities"]  # (classes, 1, H, W)
            cell = probabilities[1] if isbi_foreground == "cell" else probabilities[0]
            out.append(cell[0].astype(np.float32))
        return out
    ending, dims = (".nii.gz", 3) if name == "hippocampus" else (".png", 2)
    return [read_label(predictions / f"{case}{ending}", dims) for case, _ in test]


def score(name: str, predicted: list[np.ndarray], test: list[tuple[str, Path]]) -> dict[str, float]:
    """Our scores, computed as bench_autoplan.score computes them from our model's output."""
    from skimage.measure import label as connected_components

    from biounet.data.labels import read_label
    from biounet.metrics.instances import instance_scores, matching_dataset
    from biounet.metrics.isbi import isbi_challenge_scores
    from biounet.metrics.overlap import dice_iou

    if name == "isbi":
        probs = np.stack(predicted)
        truth = np.stack([read_label(label) for _, label in test])
        scores = isbi_challenge_scores(probs, truth, warping=False)
        return {"rand_error_strict": scores.rand_error, "v_rand": scores.v_rand, "pixel_error": scores.pixel_error}
    if name == "dsb":
        # accuracy@0.5 pooled over the images (StarDist's matching_dataset), as ablation.py scores ours; the
        # mean of the per-image accuracies as bench_autoplan reports it.
        dice, accuracy, found, truths = [], [], [], []
        for mask, (_, label) in zip(predicted, test, strict=True):
            truth = read_label(label)
            found.append(connected_components(mask > 0))
            truths.append(truth)
            dice.append(dice_iou(mask, (truth > 0).astype(np.int64), 2, include_background=False).dice[0])
            accuracy.append(instance_scores(found[-1], truth, 0.5).accuracy)
        pooled = matching_dataset(found, truths, (0.5,))[0].accuracy
        return {"dice": float(np.mean(dice)), "accuracy@0.5": pooled, "accuracy@0.5_mean": float(np.mean(accuracy))}
    per_class = [dice_iou(mask, read_label(label, 3), 3, include_background=False).dice
                 for mask, (_, label) in zip(predicted, test, strict=True)]
    anterior, posterior = np.nanmean(np.asarray(per_class), axis=0)
    return {"dice_anterior": float(anterior), "dice_posterior": float(posterior)}


def nnunet_env(out: Path, threads: int, da_workers: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(nnUNet_raw=str(out / "nnUNet_raw"), nnUNet_preprocessed=str(out / "nnUNet_preprocessed"),
               nnUNet_results=str(out / "nnUNet_results"), nnUNet_compile="f", nnUNet_n_proc_DA=str(da_workers),
               nnUNet_def_n_proc=str(threads), PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    return env


def run_dataset(name: str, args: argparse.Namespace, python: Path | None) -> dict[str, Any]:
    work = args.out / name
    predictions = work / "predictions"
    test = test_cases(name, args.data)
    if args.reuse:
        result = json.loads((work / "result.json").read_text())
    else:
        assert python is not None
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        started = time.perf_counter()
        raw = convert(name, args.data, args.out / "nnUNet_raw", args.isbi_foreground)
        convert_s = time.perf_counter() - started
        dataset_id, _, config = DATASETS[name]
        for sub in ("nnUNet_preprocessed", "nnUNet_results"):
            for old in (args.out / sub).glob(f"Dataset{dataset_id:03d}_*"):
                shutil.rmtree(old)
        command = [str(python), str(Path(__file__).resolve()), "--worker", name, "--config", config,
                   "--raw-dataset", str(raw), "--work", str(work), "--minutes", str(args.minutes),
                   "--seed", str(args.seed), "--threads", str(args.threads), "--da-workers", str(args.da_workers)]
        if args.no_tta:
            command.append("--no-tta")
        if args.preprocessing_outside_budget:
            command.append("--preprocessing-outside-budget")
        print(f"{name}: nnU-Net {config}, {args.minutes:g} min, log in {work / 'worker.log'}", flush=True)
        with (work / "worker.log").open("w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT,
                           env=nnunet_env(args.out, args.threads, args.da_workers))
        result = json.loads((work / "result.json").read_text())
        result.update(convert_s=convert_s, isbi_foreground=args.isbi_foreground)
        (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    result["scores"] = score(name, read_predictions(name, predictions, test, result["isbi_foreground"]), test)
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def report(name: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    plan, schedule, timing = result["plan"], result["schedule"], result["timing"]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result["scores"].items())
    patch = "x".join(map(str, plan["patch_size"]))
    pre = sum(timing[k] for k in PREPROCESSING)
    if schedule["epoch_plans"]:
        last = f", the last {schedule['final_iterations']}" if schedule["final_iterations"] else ""
        epochs = (f"{schedule['epochs_done']:g} x {schedule['iterations']} (+{schedule['val_iterations']} val){last} "
                  f"= {schedule['steps_done']} steps, {schedule['s_per_step']:.2f} s/step, "
                  f"{schedule['s_per_epoch']:.0f} s/epoch")
    else:
        epochs = f"{schedule['steps_done']} steps before any plan, {schedule['s_per_step']:.2f} s/step"
    epochs += f", ended by {schedule['stopped_by']}"
    print(f"| {name} | {result['config']} | patch {patch}, batch {plan['batch_size']}, {plan['n_stages']} stages, "
          f"fold {result['fold']}, TTA {'mirror' if result['tta'] else 'off'} | {epochs} | {pre:.0f} | "
          f"{timing['train_s']:.0f} (whole run {timing['total_s']:.0f} of {60 * result['minutes']:.0f}) | {shown} |",
          flush=True)
    row = {"finished": result["finished"], "scored": time.strftime("%Y-%m-%d %H:%M:%S"), "dataset": name,
           "config": result["config"], "budget_min": result["minutes"],
           "preprocessing_in_budget": result["preprocessing_in_budget"],
           "fold": result["fold"], "tta": result["tta"], "patch": patch, "batch": plan["batch_size"],
           "stages": plan["n_stages"], "epochs": schedule["epochs_done"], "steps": schedule["steps_done"],
           "iterations": schedule["iterations"], "final_iterations": schedule["final_iterations"],
           "val_iterations": schedule["val_iterations"], "stopped_by": schedule["stopped_by"],
           "s_per_step": round(schedule["s_per_step"], 3), "s_per_epoch": round(schedule["s_per_epoch"], 1),
           "convert_s": round(result.get("convert_s", math.nan), 1),
           **{k: round(timing[k], 1) for k in (*PREPROCESSING, "setup_s", "train_s", "total_s", "predict_s")},
           "threads": result["threads"], "da_workers": result["da_workers"], "seed": result["seed"],
           "scores": json.dumps({k: round(v, 5) for k, v in result["scores"].items()})}
    path = args.out / "peers_semantic.csv"
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


# ----------------------------------------------------------------------------------------------- nnU-Net side


def make_trainer_class() -> type:
    """``nnUNetTrainer`` with its epochs sized to a wall-clock deadline (imports nnunetv2: worker only)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerWallClock(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
        deadline = math.inf

        def save_checkpoint(self, filename: str) -> None:
            started = time.perf_counter()
            super().save_checkpoint(filename)
            self.save_seconds = max(getattr(self, "save_seconds", 0.0), time.perf_counter() - started)

        def end_allowance(self) -> float:
            """Seconds kept for on_train_end: the final checkpoint write and the data loaders' shutdown."""
            return 1.5 * getattr(self, "save_seconds", 2.0) + 2.0

        def plan_epochs(self, step_seconds: float, steps_done: int) -> None:
            left = self.deadline - time.perf_counter() - self.end_allowance()
            val_share = VAL_STEP_COST * NNUNET_VAL_ITERATIONS / NNUNET_ITERATIONS
            total = steps_done + max(0, int(left / (step_seconds * (1 + val_share))))
            iterations = min(NNUNET_ITERATIONS, max(MIN_ITERATIONS, math.ceil(total / TARGET_EPOCHS)))
            if total < iterations:
                iterations, epochs = max(total, steps_done), 1
            else:
                epochs = min(NNUNET_EPOCHS, total // iterations)
            self.num_iterations_per_epoch = iterations
            self.num_val_iterations_per_epoch = max(1, round(iterations * NNUNET_VAL_ITERATIONS / NNUNET_ITERATIONS))
            self.set_epochs(epochs)
            self.print_to_log_file(f"wall clock: {step_seconds:.2f} s per training step, about {total} steps fit: "
                                   f"{epochs} epochs x {iterations} iterations "
                                   f"(+{self.num_val_iterations_per_epoch} validation)")

        def set_epochs(self, epochs: int, final_iterations: int = 0) -> None:
            """Plans ``epochs`` epochs in all (the poly schedule's length), the last one ``final_iterations`` long
            if that is not 0."""
            self.num_epochs = epochs
            self.final_iterations = final_iterations
            self.lr_scheduler.max_steps = max(epochs, self.current_epoch + 1)
            self.epoch_plans.append(epochs)

        def replan(self) -> None:
            """After an epoch: as many more epochs as the measured epoch time fits, and a shorter last one in
            what is left over, so the schedule ends when the budget does."""
            left = self.deadline - time.perf_counter() - self.end_allowance()
            epoch_s = statistics.median(self.epoch_seconds)  # the first epoch includes warm-up
            step_s = statistics.median(self.step_seconds[-10:])
            full = max(0, int(left // epoch_s))
            overhead = max(0.0, epoch_s - self.num_iterations_per_epoch * step_s)  # validation, end of epoch
            spare = left - full * epoch_s - overhead
            extra = min(self.num_iterations_per_epoch - 1, int(spare // step_s)) if spare > 0 else 0
            epochs = self.current_epoch + full + (1 if extra > 0 else 0)
            if epochs > NNUNET_EPOCHS:
                epochs, extra = NNUNET_EPOCHS, 0
            self.set_epochs(epochs, extra)
            self.print_to_log_file(f"wall clock: {epoch_s:.1f} s per epoch, {left:.0f} s left: {epochs} epochs in "
                                   "all" + (f", the last one {extra} iterations" if extra else ""))

        def iterations_now(self) -> int:
            last = self.final_iterations and self.current_epoch == self.num_epochs - 1
            return self.final_iterations if last else self.num_iterations_per_epoch

        def val_iterations_now(self) -> int:
            """nnU-Net's 50:250 share of validation steps, for the shorter last epoch too."""
            if self.iterations_now() == self.num_iterations_per_epoch:
                return self.num_val_iterations_per_epoch
            return max(1, round(self.iterations_now() * NNUNET_VAL_ITERATIONS / NNUNET_ITERATIONS))

        def run_training(self) -> None:
            started = time.perf_counter()
            self.on_train_start()
            self.setup_seconds = time.perf_counter() - started
            self.epoch_plans: list[int] = []
            self.final_iterations = 0
            self.step_seconds: list[float] = []
            self.epoch_seconds: list[float] = []
            self.stopped_by = "planned epochs"
            outputs: list[dict[str, Any]] = []
            while self.current_epoch < self.num_epochs:
                epoch_started = time.perf_counter()
                self.on_epoch_start()
                self.on_train_epoch_start()
                outputs = []
                while len(outputs) < self.iterations_now():
                    recent = statistics.median(self.step_seconds[-5:]) if self.step_seconds else 0.0
                    if time.perf_counter() + recent > self.deadline - self.end_allowance():
                        self.stopped_by = "deadline guard"
                        break
                    step_started = time.perf_counter()
                    outputs.append(self.train_step(next(self.dataloader_train)))
                    self.step_seconds.append(time.perf_counter() - step_started)
                    if not self.epoch_plans and len(self.step_seconds) == CALIBRATION_STEPS:
                        # the first step warms up; the others give the step time
                        self.plan_epochs(statistics.median(self.step_seconds[1:]), len(self.step_seconds))
                if self.stopped_by != "planned epochs":
                    if outputs:
                        self.on_train_epoch_end(outputs)
                    break
                self.on_train_epoch_end(outputs)
                with torch.no_grad():
                    self.on_validation_epoch_start()
                    val_outputs = [self.validation_step(next(self.dataloader_val))
                                   for _ in range(self.val_iterations_now())]
                    self.on_validation_epoch_end(val_outputs)
                full_length = len(outputs) == self.num_iterations_per_epoch
                self.on_epoch_end()
                if full_length:  # the time of a whole epoch, for planning
                    self.epoch_seconds.append(time.perf_counter() - epoch_started)
                if self.epoch_seconds and (self.current_epoch < self.num_epochs or self.final_iterations == 0):
                    self.replan()
            # epochs run (the last may be the shorter one), and the share of one the guard cut short
            partial = len(outputs) / self.iterations_now() if self.stopped_by != "planned epochs" else 0.0
            self.epochs_done = round(self.current_epoch + partial, 2)
            self.steps_done = len(self.step_seconds)
            self.on_train_end()

    return nnUNetTrainerWallClock


def worker(args: argparse.Namespace) -> None:
    """Runs in the nnU-Net venv: plan and preprocess, train to the deadline, predict the test images."""
    started = time.perf_counter()
    import importlib.metadata
    import random

    import torch

    torch.set_num_threads(args.threads)
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiment_dataset,
        preprocess_dataset,
    )
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_id, dataset_name, config = DATASETS[args.worker]
    assert config == args.config
    name = f"Dataset{dataset_id:03d}_{dataset_name}"
    timing: dict[str, float] = {}

    t = time.perf_counter()
    verify_dataset_integrity(args.raw_dataset, args.threads)  # what --verify_dataset_integrity runs
    timing["verify_s"] = time.perf_counter() - t
    t = time.perf_counter()
    extract_fingerprint_dataset(dataset_id, num_processes=args.threads, clean=True, verbose=False,
                                show_progress_bar=False)
    timing["fingerprint_s"] = time.perf_counter() - t
    t = time.perf_counter()
    plan_experiment_dataset(dataset_id)
    timing["plan_s"] = time.perf_counter() - t
    t = time.perf_counter()
    preprocess_dataset(dataset_id, "nnUNetPlans", [config], [args.threads], show_progress_bar=False)
    timing["preprocess_s"] = time.perf_counter() - t
    budget_start = time.perf_counter() if args.preprocessing_outside_budget else started

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    plans = load_json(os.path.join(nnUNet_preprocessed, name, "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = load_json(os.path.join(nnUNet_preprocessed, name, "dataset.json"))
    trainer = make_trainer_class()(plans=plans, configuration=config, fold="all", dataset_json=dataset_json,
                                   device=torch.device("cpu"))
    trainer.deadline = budget_start + 60.0 * args.minutes
    t = time.perf_counter()
    trainer.run_training()
    timing["train_s"] = time.perf_counter() - t
    timing["setup_s"] = trainer.setup_seconds
    timing["total_s"] = time.perf_counter() - budget_start
    print(f"wall clock: trained {timing['train_s']:.1f} s; budget {60 * args.minutes:.0f} s, used "
          f"{timing['total_s']:.1f} s", flush=True)

    # Predict with checkpoint_final through nnU-Net's predictor.
    t = time.perf_counter()
    model_dir = Path(trainer.output_folder_base)
    checkpoint = torch.load(model_dir / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    plans_manager = PlansManager(load_json(str(model_dir / "plans.json")))
    trained_json = load_json(str(model_dir / "dataset.json"))
    manager = plans_manager.get_configuration(checkpoint["init_args"]["configuration"])
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, manager, determine_num_input_channels(plans_manager, manager, trained_json),
        plans_manager.get_label_manager(trained_json).num_segmentation_heads, enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not args.no_tta,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, manager, [checkpoint["network_weights"]], trained_json,
                                    checkpoint["trainer_name"], checkpoint["inference_allowed_mirroring_axes"])
    predictor.predict_from_files(str(Path(args.raw_dataset) / "imagesTs"), str(Path(args.work) / "predictions"),
                                 save_probabilities=args.worker == "isbi", overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    timing["predict_s"] = time.perf_counter() - t

    arch = manager.network_arch_init_kwargs
    steps = trainer.step_seconds
    result = {
        "dataset": args.worker, "config": config, "minutes": args.minutes, "seed": args.seed, "fold": "all",
        "tta": not args.no_tta, "mirror_axes": checkpoint["inference_allowed_mirroring_axes"],
        "threads": args.threads, "da_workers": args.da_workers,
        "preprocessing_in_budget": not args.preprocessing_outside_budget,
        "nnunetv2": importlib.metadata.version("nnunetv2"),
        "torch": torch.__version__, "checkpoint": "checkpoint_final.pth",
        "plan": {"patch_size": list(manager.patch_size), "batch_size": manager.batch_size,
                 "n_stages": arch.get("n_stages"), "features_per_stage": arch.get("features_per_stage"),
                 "spacing": list(manager.spacing), "normalization": manager.normalization_schemes,
                 "network": manager.network_arch_class_name,
                 "parameters": sum(p.numel() for p in network.parameters())},
        "schedule": {"epochs_done": trainer.epochs_done, "steps_done": trainer.steps_done,
                     "iterations": trainer.num_iterations_per_epoch, "final_iterations": trainer.final_iterations,
                     "val_iterations": trainer.num_val_iterations_per_epoch, "epoch_plans": trainer.epoch_plans,
                     "stopped_by": trainer.stopped_by,
                     "s_per_step": statistics.median(steps[1:] or steps) if steps else math.nan,
                     "s_first_step": steps[0] if steps else math.nan,
                     "s_per_epoch": statistics.median(trainer.epoch_seconds) if trainer.epoch_seconds else math.nan,
                     "epoch_seconds": [round(s, 2) for s in trainer.epoch_seconds],
                     "checkpoint_write_s": getattr(trainer, "save_seconds", math.nan)},
        "timing": timing, "nnUNet_results": str(nnUNet_results), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (Path(args.work) / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="isbi,dsb,hippocampus")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench_out" / "peers_semantic")
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--venv", type=Path, default=ROOT / "bench_out" / "venv-nnunet")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--da-workers", type=int, default=1, help="nnUNet_n_proc_DA (0: augment in-process)")
    parser.add_argument("--no-tta", action="store_true", help="predict without nnU-Net's mirroring")
    parser.add_argument("--preprocessing-outside-budget", action="store_true",
                        help="give training the whole budget (by default preprocessing counts against it)")
    parser.add_argument("--isbi-foreground", choices=("membrane", "cell"), default="membrane")
    parser.add_argument("--reuse", action="store_true", help="score an earlier run's predictions again")
    # the nnU-Net side, run by this script in the nnU-Net venv
    parser.add_argument("--worker", choices=tuple(DATASETS), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--raw-dataset", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    # score with this checkout's biounet (the project venv's editable install may point at another checkout)
    sys.path.insert(0, str(ROOT / "src"))
    names = args.datasets.split(",")
    unknown = [n for n in names if n not in DATASETS]
    if unknown or args.minutes <= 0:
        parser.error(f"unknown datasets {unknown}" if unknown else "--minutes must be positive")
    args.out = args.out.resolve()
    python = None if args.reuse else ensure_venv(args.venv.resolve())
    print("| dataset | config | plan | epochs x iterations | preprocessing s | training s | scores |\n"
          "|---|---|---|---|---|---|---|", flush=True)
    for name in names:
        try:
            result = run_dataset(name, args, python)
        except subprocess.CalledProcessError:
            lines = (args.out / name / "worker.log").read_text().strip().splitlines()
            print(f"| {name} | {DATASETS[name][2]} | - | - | - | - | failed: {lines[-1] if lines else '?'} |")
            continue
        report(name, result, args)


if __name__ == "__main__":
    main()
