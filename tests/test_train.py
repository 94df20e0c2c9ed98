"""Training: config, data loading and sampling, the trainer, resume, divergence, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from biounet.cli.main import main
from biounet.data.examples import WeightMapConfig, load_example, make_targets, pair_files, read_pair, split_validation
from biounet.data.labels import IGNORE_INDEX, LabelConfig
from biounet.data.sampling import PatchSampler
from biounet.errors import BiounetError
from biounet.models import UNetConfig
from biounet.models.checkpoint import load_checkpoint
from biounet.models.normalization import Normalization
from biounet.training.config import TrainConfig, apply_overrides
from biounet.training.run import train
from biounet.training.trainer import TrainingDivergedError
from conftest import write_disc_dataset

TINY = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=4", "batch_size=2",
        "optim.lr=0.001", "optim.scheduler=none", "checkpoint_seconds=0"]


def tiny_config(tmp_path: Path, *extra: str, count: int = 6) -> TrainConfig:
    images, labels = write_disc_dataset(tmp_path / "data", count)
    return apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", *extra])


# -- config -------------------------------------------------------------------------------------------


def test_config_round_trips_through_yaml_with_overrides() -> None:
    config = apply_overrides({}, ["model.base_channels=8", "optim.name=sgd", "augment.rotate=30",
                                 "class_names=[membrane, cell]", "loss.weights.w0=5"])
    assert config.model.base_channels == 8 and config.optim.name == "sgd" and config.loss.weights.w0 == 5
    again = TrainConfig.from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config


@pytest.mark.parametrize(("override", "message"), [
    ("model.widht=3", "unknown model config keys: widht"),
    ("epochs=0", "epochs must be >= 1"),
    ("optim.name=rmsprop", r"unknown optimizer|optim"),
    ("nonsense", "key=value"),
    ("monitor=loss", "monitor"),
])
def test_bad_config_values_are_named(override: str, message: str) -> None:
    with pytest.raises(BiounetError, match=message):
        config = apply_overrides({}, [override])
        if override.startswith("optim.name"):
            from biounet.training.trainer import _optimizer

            _optimizer(config, torch.nn.Linear(1, 1))


def test_object_accuracy_is_a_monitor_for_instance_labels_only() -> None:
    assert apply_overrides({}, ["labels.kind=instances", "monitor=accuracy"]).monitor == "accuracy"
    with pytest.raises(BiounetError, match="monitor accuracy needs instance labels"):
        apply_overrides({}, ["labels.kind=binary", "monitor=accuracy"])


# -- data ---------------------------------------------------------------------------------------------


def test_pairs_are_matched_by_stem_and_mismatches_named(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path, 3)
    assert [(i.name, lbl.name) for i, lbl in pair_files(images, labels)] == [
        ("00.png", "00.png"), ("01.png", "01.png"), ("02.png", "02.png")]
    (labels / "01.png").rename(labels / "07.png")
    with pytest.raises(BiounetError, match=r"01\.png: no label with the same name"):
        pair_files(images, labels)


def test_validation_split_is_reproducible(tmp_path: Path) -> None:
    pairs = [(Path(f"{i}.png"), Path(f"{i}.png")) for i in range(10)]
    a, b = split_validation(pairs, 0.3, seed=1), split_validation(pairs, 0.3, seed=1)
    assert a == b and len(a[1]) == 3 and not set(a[0]) & set(a[1])
    assert split_validation(pairs, 0.3, seed=2)[1] != a[1]


def test_label_conventions() -> None:
    raw = np.array([[0, 255, 255, 7], [0, 255, 0, 7]])
    classes, instances = LabelConfig("binary", foreground=255, ignore=7).targets(raw, 2)
    assert classes.tolist() == [[0, 1, 1, IGNORE_INDEX], [0, 1, 0, IGNORE_INDEX]]
    assert instances.max() == 1
    touching = np.array([[1, 1, 2, 2, 2]] * 5)
    classes, instances = LabelConfig("instances").targets(touching, 2)
    assert set(np.unique(instances)) >= {1, 2}
    assert (classes[:, 1:3] == 0).any(), "touching objects are separated by background"
    with pytest.raises(BiounetError, match=r"label values \[5\]"):
        LabelConfig("classes").targets(np.array([[0, 1, 5]]), 3)


def test_example_loading_checks_shapes(tmp_path: Path) -> None:
    import imageio.v3 as iio

    images, labels = write_disc_dataset(tmp_path, 1)
    kwargs = dict(in_channels=1, num_classes=2, normalization=Normalization(), labels=LabelConfig(),
                  weights=TrainConfig().loss.weights)
    example = load_example(images / "00.png", labels / "00.png", **kwargs)  # type: ignore[arg-type]
    assert example.image.dtype == np.float32 and example.target.dtype == np.int64
    assert example.weight.shape == example.target.shape and example.weight.min() > 0
    iio.imwrite(labels / "00.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(BiounetError, match="does not match its image"):
        load_example(images / "00.png", labels / "00.png", **kwargs)  # type: ignore[arg-type]


def test_read_pair_matches_channels_and_names_the_label_of_a_mismatched_pair(tmp_path: Path) -> None:
    import imageio.v3 as iio

    images, labels = write_disc_dataset(tmp_path, 1)
    image, label, meta = read_pair(images / "00.png", labels / "00.png", 2, in_channels=3)
    assert image.shape == (3, 64, 64) and label.shape == (64, 64) and label.dtype == np.int64
    assert meta.format == "png" and meta.spacing == (1.0, 1.0)
    iio.imwrite(labels / "00.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(BiounetError, match=r"00\.png: label shape \(10, 10\) does not match its image \(64, 64\) "
                                           r"\(.*00\.png\)$") as info:
        read_pair(images / "00.png", labels / "00.png", 2)
    assert info.value.path == str(labels / "00.png")


def test_make_targets_names_the_label_whose_values_do_not_fit() -> None:
    target, weight, objects = make_targets(np.array([[0, 1, 1, 2]]), LabelConfig("instances"), 2,
                                           WeightMapConfig(w0=0.0))
    assert target.tolist() == [[0, 1, 0, 0]], "touching objects are separated by background"
    assert weight.dtype == np.float32 and weight.shape == target.shape
    assert objects is not None and objects.tolist() == [[0, 1, 1, 2]], "objects are kept as drawn"
    with pytest.raises(BiounetError, match=r"^bad\.png: label values \[5\]") as info:
        make_targets(np.array([[0, 1, 5]]), LabelConfig("classes"), 3, WeightMapConfig(), path=Path("bad.png"))
    assert info.value.path == "bad.png"


def test_sampler_reads_input_tiles_around_output_windows(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path, 2, size=50)
    kwargs = dict(in_channels=1, num_classes=2, normalization=Normalization("none"), labels=LabelConfig(),
                  weights=TrainConfig().loss.weights)
    examples = [load_example(i, lbl, **kwargs) for i, lbl in pair_files(images, labels)]  # type: ignore[arg-type]
    config = UNetConfig(base_channels=4, depth=2)
    sampler = PatchSampler(examples, (60, 60), config.output_shape((60, 60)), foreground_oversampling=1.0)
    generator = torch.Generator().manual_seed(0)
    x, y, w = sampler.sample(8, generator)
    assert x.shape == (8, 1, 60, 60) and y.shape == (8, 60, 60) and w.shape == (8, 60, 60)
    # With full oversampling the output window's centre pixel is foreground.
    assert (y[:, 30, 30] == 1).float().mean() > 0.7
    # The image and its label come from the same place: bright pixels are labelled cells.
    assert x[:, 0][y == 1].mean() > x[:, 0][y == 0].mean() + 50


# -- the trainer --------------------------------------------------------------------------------------


def test_training_learns_and_writes_the_run(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "epochs=12", "optim.lr=0.003", "samples_per_epoch=8", "augment.rotate=0",
                         "augment.elastic_sigma=0")
    out = tmp_path / "run"
    trainer = train(config, out, progress=False)
    for name in ("model.pt", "last.pt", "config.yaml", "log.csv", "curves.png"):
        assert (out / name).exists(), name
    assert any((out / "overlays").iterdir())
    history = trainer.state.history
    assert len(history) == 12
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"]
    assert max(row["val_dice"] for row in history) > 0.7
    best = load_checkpoint(out / "model.pt")
    assert best.extra["metrics"]["val_dice"] == max(row["val_dice"] for row in history)
    # The run keeps the label convention it detected (0/255 masks), in the checkpoint and in config.yaml.
    resolved = dataclasses.replace(config, labels=LabelConfig("binary", foreground=255))
    assert trainer.config == resolved
    assert TrainConfig.from_dict(yaml.safe_load(best.extra["train_config"])) == resolved
    assert TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text())) == resolved


def test_cli_trains_on_0_1_masks_and_the_model_learns_the_cells(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v3 as iio

    images, labels = write_disc_dataset(tmp_path / "data", 6)
    for path in labels.iterdir():
        iio.imwrite(path, (iio.imread(path) > 0).astype(np.uint8))   # the common 0/1 mask convention
    out = tmp_path / "run"
    settings = [*TINY, "optim.lr=0.01", "samples_per_epoch=8", "augment.rotate=0", "augment.elastic_sigma=0"]
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "12",
                 "--quiet", *[a for s in settings for a in ("--set", s)]]) == 0
    log = capsys.readouterr().out
    # Detected by the plan's fingerprint over all pairs, then checked on the training split.
    assert "labels: binary labels (0 = background, 1 = foreground); classes: background" in log
    assert "labels: binary labels (0 = background, 1 = foreground), as configured; checked on 5 training " \
           "labels with values [0, 1]" in log
    saved = yaml.safe_load((out / "config.yaml").read_text())["labels"]
    assert saved == {"kind": "binary", "foreground": 1, "ignore": None, "instance_target": "boundary"}
    stored = yaml.safe_load(load_checkpoint(out / "model.pt").extra["train_config"])["labels"]
    assert stored == saved
    # Scored against the 0/1 masks themselves: the model found the discs.
    assert main(["predict", "--model", str(out / "model.pt"), str(images), "--out", str(tmp_path / "pred")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(labels), "--metrics", "dice",
                 "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["mean"]["dice"] > 0.7


def test_cli_train_names_a_label_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v3 as iio

    images, labels = write_disc_dataset(tmp_path / "data", 3)
    bad = np.zeros((64, 64), np.uint8)
    bad[:, 20:40], bad[:, 40:] = 1, 2
    iio.imwrite(labels / "01.png", bad)
    code = main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "run"),
                 "--quiet", "--set", "labels.kind=binary", *[a for s in TINY for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "01.png: label values [0, 1, 2] do not fit binary labels" in err[0]
    assert not (tmp_path / "run").exists()


def test_resume_continues_the_same_run_exactly(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "epochs=4", "deterministic=true")
    straight = train(config, tmp_path / "a", progress=False)
    half = apply_overrides(yaml.safe_load(config.to_yaml()), ["epochs=2"])
    train(half, tmp_path / "b", progress=False)
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert resumed.state.step == straight.state.step == 8
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    log = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert len(log) == 5 and [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4"]


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "epochs=1")
    train(config, tmp_path / "run", progress=False)
    with pytest.raises(BiounetError, match="use --resume"):
        train(config, tmp_path / "run", progress=False)
    with pytest.raises(BiounetError, match="nothing to resume"):
        train(config, tmp_path / "other", resume=True, progress=False)


class NaNAfter(torch.nn.Module):
    """A loss that turns NaN after ``after`` calls, as a diverging run's would."""

    def __init__(self, inner: torch.nn.Module, after: int) -> None:
        super().__init__()
        self.inner, self.after, self.calls = inner, after, 0

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss: torch.Tensor = self.inner(*args)
        return loss * float("nan") if self.calls > self.after else loss


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from biounet.losses import build_loss

    monkeypatch.setattr("biounet.training.trainer.build_loss",
                        lambda name, ignore_index: NaNAfter(build_loss(name, ignore_index=ignore_index), 5))
    out = tmp_path / "run"
    with pytest.raises(TrainingDivergedError, match="loss became nan at step 6"):
        train(tiny_config(tmp_path, "epochs=30"), out, progress=False)
    kept = load_checkpoint(out / "last.pt")
    assert kept.extra["train_state"]["counters"]["step"] == 5
    assert all(torch.isfinite(v).all() for v in kept.model.state_dict().values())
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 3  # diverges again, exit code 3


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 4)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "biounet.cli.main", "train", "--images", str(images), "--labels", str(labels),
               "--out", str(out), "--quiet", "--epochs", "1000", *[a for s in TINY for a in ("--set", s)]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "log.csv").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    saved = load_checkpoint(out / "last.pt").extra["train_state"]["counters"]["step"]
    assert saved >= 2
    assert main(["train", "--out", str(out), "--resume", "--quiet", "--set", f"epochs={saved // 2 + 1}"]) == 0
    assert load_checkpoint(out / "last.pt").extra["train_state"]["counters"]["step"] == (saved // 2 + 1) * 2


def test_cli_train_then_predict_with_the_run(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 4)
    out = tmp_path / "run"
    args = ["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "1",
            "--quiet", *[a for s in TINY for a in ("--set", s)]]
    assert main(args) == 0
    assert main(["predict", "--model", str(out / "model.pt"), str(images / "00.png"), "--out",
                 str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "00_mask.png").exists()


def test_cli_train_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 2)
    (labels / "01.png").write_bytes(b"garbage")
    code = main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "run"),
                 "--quiet", *[a for s in TINY for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "01.png" in err[-1] and "cannot read image" in err[-1]
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    from biounet.training.config import load_config

    config = load_config(path, [])
    assert len(config.class_names) == config.num_classes
    assert config.model.is_valid_input(config.tile_shape)


def test_early_stopping_after_patience_validations_without_improvement(tmp_path: Path) -> None:
    # With a zero learning rate nothing improves after the first validation.
    config = tiny_config(tmp_path, "epochs=20", "patience=2", "optim.lr=0.0")
    trainer = train(config, tmp_path / "run", progress=False)
    assert trainer.state.epoch == 3 and "no improvement" in trainer.stop_reason
    assert trainer.state.best_epoch == 1


def test_a_half_minute_run_ends_within_33_seconds_all_included(tmp_path: Path) -> None:
    # Validation on 256x256 images is a good share of each epoch, so a budget that forgot it would overrun.
    images, labels = write_disc_dataset(tmp_path / "data", 8, size=256)
    config = apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", "epochs=100000",
                                  "minutes=0.5", "samples_per_epoch=40", "model.base_channels=8"])
    started = time.monotonic()
    trainer = train(config, tmp_path / "run", progress=False)
    wall = time.monotonic() - started
    assert trainer.stop_reason == "time budget spent"
    assert 27.0 <= wall <= 33.0, (wall, trainer.state.history[-1], trainer.budget.__dict__)  # used, not overrun
    assert trainer.state.history[-1]["seconds"] <= 30.0
    assert (tmp_path / "run" / "model.pt").exists() and any((tmp_path / "run" / "overlays").iterdir())


def test_lr_schedules_warm_up_then_decay_to_zero() -> None:
    from biounet.training.trainer import lr_factor

    assert lr_factor("poly", 0.0, 0.0) == 1.0 and lr_factor("poly", 1.0, 0.0) == 0.0
    assert lr_factor("poly", 0.5, 0.0) == pytest.approx(0.5**0.9)
    assert lr_factor("cosine", 0.5, 0.0) == pytest.approx(0.5) and lr_factor("cosine", 1.0, 0.0) == 0.0
    # Half-way through a 10 % warm-up: half of the rate the schedule has at its end.
    assert lr_factor("cosine", 0.05, 0.1) == pytest.approx(0.5 * 0.5 * (1 + math.cos(0.1 * math.pi)))
    assert lr_factor("poly", 0.0, 0.1) == 0.0


def test_tensorboard_logs_are_written_when_available(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    train(tiny_config(tmp_path, "epochs=1"), tmp_path / "run", progress=False)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "run" / "tensorboard").iterdir())


def test_poly_schedule_decays_to_zero_over_the_budget(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, "epochs=4", "optim.scheduler=poly", "optim.lr=0.01")
    trainer = train(config, tmp_path / "run", progress=False)
    lrs = [row["lr"] for row in trainer.state.history]
    # lr is set before each step: the last step of epoch e (of 4, 2 steps each) has t = (2e - 1) / 8.
    assert lrs == pytest.approx([0.01 * (1 - (2 * e - 1) / 8) ** 0.9 for e in (1, 2, 3, 4)])


def write_ball_volumes(folder: Path, count: int, sparse_slices: int = 0) -> tuple[Path, Path]:
    """NIfTI volumes of a bright ball in noise; class 1 inside it. Sparse labels keep a few slices per axis."""
    import nibabel as nib

    from biounet.data.sparse import sparsify

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (18, 20, 16)], indexing="ij"))
    for i in range(count):
        centre = rng.uniform(6, 11, 3)
        label = (np.linalg.norm(grid - centre[:, None, None, None], axis=0) < rng.uniform(3.5, 5.5)).astype(np.uint8)
        image = (label + rng.normal(0, 0.3, label.shape)).astype(np.float32)
        if sparse_slices:
            label = sparsify(label, sparse_slices, ignore=255)
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(image, affine), folder / "images" / f"case_{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), folder / "labels" / f"case_{i:02d}.nii.gz")
    return folder / "images", folder / "labels"


def test_cli_trains_a_3d_unet_on_sparse_nifti_labels_then_predicts_and_evaluates(tmp_path: Path) -> None:
    import nibabel as nib

    images, labels = write_ball_volumes(tmp_path / "data", 6, sparse_slices=2)
    out = tmp_path / "run"
    settings = ["model.spatial_dims=3", "model.base_channels=4", "model.depth=2", "model.padding=same",
                "model.norm=instance", "labels.kind=classes", "labels.ignore=255", "loss.name=ce_dice",
                "loss.weights.w0=0", "normalization.mode=zscore", "tile=[16, 16, 16]", "batch_size=2",
                "samples_per_epoch=8", "optim.lr=0.01", "optim.scheduler=none", "augment.elastic_spacing=8",
                "augment.elastic_sigma=1", "augment.rotate=10", "checkpoint_seconds=0", "foreground_oversampling=0",
                "loss.weights.class_balance=false"]
    args = ["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "12",
            "--quiet", *[a for s in settings for a in ("--set", s)]]
    assert main(args) == 0
    # Scored on the annotated voxels of the (sparse) validation labels.
    assert load_checkpoint(out / "model.pt").extra["metrics"]["val_dice"] > 0.7
    assert any((out / "overlays").glob("case_*.png"))
    # The same commands on volumes: predict writes NIfTI with the input's header, evaluate scores it.
    pred = tmp_path / "pred"
    assert main(["predict", "--model", str(out / "model.pt"), str(images / "case_00.nii.gz"), "--out",
                 str(pred)]) == 0
    mask = nib.load(pred / "case_00_mask.nii.gz")
    assert mask.shape == (18, 20, 16) and np.allclose(mask.header.get_zooms(), (1.0, 1.0, 2.0))
    assert main(["evaluate", "--pred", str(pred / "case_00_mask.nii.gz"), "--truth",
                 str(labels / "case_00.nii.gz"), "--metrics", "dice", "--ignore", "255",
                 "--json", str(tmp_path / "e.json")]) == 0
    # Scored on the annotated voxels only, as validation scores them.
    assert json.loads((tmp_path / "e.json").read_text())["mean"]["dice"] > 0.7
