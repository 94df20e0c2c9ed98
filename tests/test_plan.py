"""The training plan: choices from hand-made fingerprints, overrides, the CLI, and a planned run's budget."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from biounet.cli.main import main
from biounet.data.labels import LabelConfig
from biounet.models.checkpoint import load_checkpoint
from biounet.planning.fingerprint import ChannelStats, ClassStats, Fingerprint, ObjectStats
from biounet.planning.planner import MIN_STEPS, make_plan
from biounet.training.config import load_config
from conftest import write_disc_dataset, write_lines_dataset

CPU = torch.device("cpu")


def fake(shape: tuple[int, ...] = (512, 512), *, classes: tuple[ClassStats, ...] | None = None,
         objects: ObjectStats | None = None, spacing: tuple[float, ...] | None = None, channels: int = 1,
         kind: str = "grey", labels: LabelConfig | None = None, low: float = 0.0, count: int = 20) -> Fingerprint:
    stats = ChannelStats(p0_5=low, p1=low, p50=100.0, p99=200.0, p99_5=210.0, mean=100.0, std=40.0,
                         foreground_mean=150.0, background_mean=60.0)
    classes = classes or (ClassStats(0.8, 0.02, 40.0), ClassStats(0.2, 0.05, 20.0))
    return Fingerprint(count=count, spatial_dims=len(shape), shapes=(shape,) * count, stored_channels=channels,
                       channels=channels, channel_kind=kind, dtype="uint8", intensity=(stats,) * channels,
                       spacing=spacing or (1.0,) * len(shape),
                       labels=labels or LabelConfig(kind="binary", foreground=255), num_classes=len(classes),
                       classes=classes, objects=objects)


def plan_of(fingerprint: Fingerprint, minutes: float = 20.0):  # type: ignore[no-untyped-def]
    return make_plan(fingerprint, "imgs", "lbls", CPU, minutes=minutes, measure=False)


def test_membranes_get_the_paper_network_weighted_loss_and_rand_error() -> None:
    # ISBI-like: cells (class 1) fill 78 % and are separated by 4-px-thin membranes (class 0).
    fp = fake(classes=(ClassStats(0.22, 0.3, 4.0), ClassStats(0.78, 0.02, 50.0)),
              objects=ObjectStats(per_image=120, diameter=45.0, diameter_p10=15.0, diameter_p90=80.0,
                                  near_fraction=0.95))
    config = plan_of(fp).config()
    assert (config.model.depth, config.model.padding, config.tile_shape) == (4, "valid", (572, 572))
    assert config.loss.name == "ce" and config.loss.weights.w0 == 10.0 and config.monitor == "rand_error"
    assert config.keep == "best"
    assert config.batch_size == 1 and config.augment.rotate == 180.0


def test_rare_thin_colour_foreground_gets_dice_balance_and_oversampling() -> None:
    fp = fake((256, 256), classes=(ClassStats(0.97, 0.01, 60.0), ClassStats(0.03, 0.6, 2.0)),
              objects=ObjectStats(3, 12.0, 8.0, 20.0, 0.0), channels=3, kind="rgb")
    plan = plan_of(fp)
    config = plan.config()
    assert config.model.in_channels == 3 and config.loss.name == "ce_dice" and config.loss.weights.class_balance
    assert config.foreground_oversampling > 0 and config.monitor == "dice"
    output = config.model.output_shape(config.tile_shape)
    assert config.model.padding == "valid" and 256 <= output[0] < 256 + config.model.alignment[0]
    assert config.batch_size == 2  # about 388^2 supervised pixels per step
    assert any("thin foreground" in reason for _, reason in plan.reasons)


def test_instance_labels_plan_background_interior_boundary_and_pick_by_object_accuracy() -> None:
    fp = fake((320, 320), classes=(ClassStats(0.85, 0.02, 50.0), ClassStats(0.15, 0.1, 14.0)),
              objects=ObjectStats(30, 16.0, 10.0, 24.0, 0.4), labels=LabelConfig(kind="instances"))
    config = plan_of(fp).config()
    assert config.model.out_channels == 3 and config.instance_task and config.monitor == "accuracy"
    assert config.keep == "last"  # accuracy of a few validation images would pick an epoch by luck
    # Classes balanced (the boundary is thin) plus the paper's border term scaled to the nuclei.
    assert config.loss.name == "ce_dice" and config.loss.weights.class_balance
    assert config.loss.weights.w0 == 10.0 and config.loss.weights.sigma == 2.0
    assert config.model.depth == 3  # 89 px of receptive field covers a 16-px nucleus and its neighbours
    assert config.augment.elastic_sigma == 3.0


def test_crowded_binary_cells_get_border_weights_scaled_to_their_size() -> None:
    fp = fake((320, 320), classes=(ClassStats(0.85, 0.02, 50.0), ClassStats(0.15, 0.1, 14.0)),
              objects=ObjectStats(30, 16.0, 10.0, 24.0, 0.4), labels=LabelConfig(kind="binary", foreground=1))
    config = plan_of(fp).config()
    assert config.model.out_channels == 2 and config.monitor == "dice"
    assert config.loss.name == "ce" and config.loss.weights.sigma == 2.0


def test_instance_volumes_plan_three_classes_too() -> None:
    fp = fake((40, 160, 160), spacing=(4.0, 1.0, 1.0), classes=(ClassStats(0.9, 0.01, 30.0),
                                                               ClassStats(0.1, 0.05, 12.0)),
              objects=ObjectStats(10, 12.0, 8.0, 16.0, 0.3), labels=LabelConfig(kind="instances"))
    config = plan_of(fp).config()
    assert config.model.spatial_dims == 3 and config.instance_task and config.monitor == "accuracy"


def test_small_images_get_same_padding() -> None:
    config = plan_of(fake((64, 64), objects=ObjectStats(2, 10.0, 8.0, 12.0, 0.0))).config()
    assert config.model.padding == "same" and config.model.norm == "instance"
    assert config.tile_shape == (64, 64)


def test_anisotropic_volumes_pool_the_coarse_axis_late_and_rotate_in_plane_only() -> None:
    fp = fake((40, 160, 160), spacing=(4.0, 1.0, 1.0), classes=(ClassStats(0.9, 0.01, 30.0),
                                                               ClassStats(0.1, 0.05, 12.0)))
    config = plan_of(fp).config()
    model = config.model
    assert model.spatial_dims == 3 and model.padding == "same" and model.norm == "instance"
    assert model.pool_sizes is not None and tuple(model.pool_sizes[0]) == (1, 2, 2)
    assert any(p[0] == 2 for p in model.pool_sizes)  # z is pooled once in-plane has caught up with its spacing
    assert config.augment.plane_limits(3) == (0.0, 0.0, 180.0) and not config.augment.flip
    assert np.prod(config.tile_shape) <= 64**3 * 1.25 and config.normalization.mode == "zscore"
    assert model.is_valid_input(config.tile_shape)


def test_ct_intensities_are_windowed() -> None:
    fp = fake((64, 64, 64), low=-1024.0)
    assert plan_of(fp).config().normalization.mode == "percentile"


def test_width_is_the_widest_that_trains_enough_steps_in_the_budget() -> None:
    # measure=False stands in 0.01 * (w / 8)^2 s per step: 0.01, 0.04, 0.16 s for 8, 16, 32.
    fp = fake()
    long, short = plan_of(fp, minutes=60).config(), plan_of(fp, minutes=1).config()
    assert MIN_STEPS <= 60 * 60 * 0.85 / 0.16 and long.model.base_channels == 32
    assert MIN_STEPS > 60 * 0.85 / 0.04 and short.model.base_channels == 8
    # Validation runs several times even in a short budget, and the schedule runs over the minutes.
    assert short.samples_per_epoch <= 60 * 0.85 / 0.01 / 2 and short.minutes == 1
    assert short.optim.scheduler == "poly" and short.optim.warmup > 0
    # The moving average of the weights spans a twentieth of the planned steps: 60 * 60 * 0.85 / 0.16 steps
    # for the long run, 60 * 0.85 / 0.01 for the short one.
    assert 1 / (1 - long.ema) == pytest.approx(60 * 60 * 0.85 / 0.16 / 20, abs=1.0)
    assert 1 / (1 - short.ema) == pytest.approx(60 * 0.85 / 0.01 / 20, abs=1.0)


def test_set_overrides_win_over_the_plan() -> None:
    plan = plan_of(fake())
    config = plan.config(["model.base_channels=4", "loss.name=dice", "tile=188"])
    assert (config.model.base_channels, config.loss.name, config.tile) == (4, "dice", 188)
    assert config.model.depth == plan.config().model.depth


def test_plan_cli_prints_fingerprint_and_plan_and_writes_a_usable_config(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 5, size=96)
    assert main(["plan", "--images", str(images), "--labels", str(labels), "--minutes", "5",
                 "--out", str(tmp_path / "plan.yaml")]) == 0
    out = capsys.readouterr().out
    assert "5 training pairs" in out and "model.base_channels" in out and "timed on this device" in out
    config = load_config(tmp_path / "plan.yaml", [])
    assert config.minutes == 5 and config.labels.kind == "binary" and config.labels.foreground == 255
    assert yaml.safe_load((tmp_path / "plan.yaml").read_text())["data"]["images"] == str(images)


def test_train_without_config_on_thin_colour_lines_learns_within_one_minute(tmp_path: Path) -> None:
    images, labels = write_lines_dataset(tmp_path / "data", 10)
    out = tmp_path / "run"
    started = time.monotonic()
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(out),
                 "--minutes", "1", "--quiet", "--set", "augment.rotate=90"]) == 0
    wall = time.monotonic() - started
    assert wall <= 63.0, wall  # planning, reading, training, validations, checkpoints and overlays
    config = load_config(out / "config.yaml", [])
    assert config.model.in_channels == 3 and config.loss.name == "ce_dice" and config.labels.foreground == 1
    assert config.augment.rotate == 90.0  # --set wins over the plan's 180
    best = load_checkpoint(out / "model.pt").extra["metrics"]
    assert best["val_dice"] > 0.8, best
