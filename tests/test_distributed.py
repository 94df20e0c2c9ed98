"""Distributed training with torchrun on the CPU (gloo): N ranks train as one process with N times their batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biounet.cli.main import main
from biounet.models.checkpoint import load_checkpoint
from biounet.training.config import apply_overrides
from biounet.training.distributed import Ranks, environment_ranks
from conftest import write_disc_dataset

BASE = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=40", "epochs=1", "optim.lr=0.001",
        "optim.scheduler=none", "checkpoint_seconds=1000", "deterministic=true", "loss.weights.w0=10"]


def _torchrun(args: list[str], ranks: int = 2) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "-m", "biounet", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_two_ranks_train_as_one_process_with_their_batch(tmp_path: Path) -> None:
    """20 steps of 2 ranks x batch 1 (gloo, torchrun) against 20 steps of 1 process x batch 2, same seed:
    the same patches, augmentations and averaged gradients give the same weights; only rank 0 writes."""
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    config = tmp_path / "config.yaml"
    config.write_text(apply_overrides({}, [*BASE, f"data.images={images}", f"data.labels={labels}"]).to_yaml())
    assert main(["train", "--config", str(config), "--set", "batch_size=2", "--out", str(tmp_path / "one"),
                 "--quiet"]) == 0
    result = _torchrun(["train", "--config", str(config), "--set", "batch_size=1", "--out", str(tmp_path / "ddp"),
                        "--quiet"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("stopped after epoch 1 (step 20,") == 1  # rank 0 alone reports
    assert result.stdout.count("labels: binary labels") == 1
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert one.extra["train_state"]["counters"]["step"] == ddp.extra["train_state"]["counters"]["step"] == 20
    for key, value in one.model.state_dict().items():
        torch.testing.assert_close(ddp.model.state_dict()[key], value, atol=1e-5, rtol=0, msg=key)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_resume_with_another_number_of_ranks_and_a_bad_config_stops_every_rank(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    config = tmp_path / "config.yaml"
    config.write_text(apply_overrides({}, [*BASE, f"data.images={images}", f"data.labels={labels}",
                                           "batch_size=1"]).to_yaml())
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    resumed = _torchrun(["train", "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--quiet"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = load_checkpoint(tmp_path / "run" / "last.pt").extra["train_state"]["counters"]
    assert state["epoch"] == 2 and state["step"] == 40 + 20  # the second epoch's 40 patches in 20 steps of 2
    broken = _torchrun(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")])
    assert broken.returncode != 0 and "missing.yaml" in broken.stderr


def test_ranks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert environment_ranks() == Ranks(0, 1, 0) and Ranks().agree(True) and Ranks().broadcast(3) == 3
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert environment_ranks() == Ranks(1, 2, 1) and not environment_ranks().main
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(Exception, match="inconsistent torchrun environment"):
        environment_ranks()


def test_dataloader_workers_draw_the_patches_of_the_in_process_path(tmp_path: Path) -> None:
    from biounet.data.sampling import PatchSampler
    from biounet.models.unet import UNet
    from biounet.training.run import load_examples
    from biounet.training.trainer import Trainer

    images, labels = write_disc_dataset(tmp_path / "data", 4)
    batches = {}
    for workers in (0, 2):
        config = apply_overrides({}, [*BASE, f"data.images={images}", f"data.labels={labels}", "batch_size=3",
                                      f"data_workers={workers}"])
        config, examples, _ = load_examples(config, progress=False)
        shape = config.model.valid_input_shape(config.tile_shape, min_output=config.model.alignment)
        sampler = PatchSampler(examples, shape, config.model.output_shape(shape))
        trainer = Trainer(config, UNet(config.model), sampler, lambda m: {}, tmp_path, torch.device("cpu"))
        drawn = []
        for step in range(3):
            trainer.state.step = step
            drawn.append(trainer._next_batch())
        trainer.state.step = 1  # a resumed run starts again at its step counter
        drawn.append(trainer._next_batch())
        batches[workers] = drawn
    for a, b in zip(batches[0], batches[2], strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
    assert all(torch.equal(x, y) for x, y in zip(batches[0][1], batches[0][3], strict=True))
    assert not torch.equal(batches[0][0][0], batches[0][1][0])


def test_amp_is_read_from_yaml_and_refused_on_the_cpu(tmp_path: Path) -> None:
    from biounet.errors import BiounetError

    assert apply_overrides({}, ["amp=off"]).amp == "off" and apply_overrides({}, ["amp=on"]).amp == "auto"
    images, labels = write_disc_dataset(tmp_path / "data", 3)
    code = main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "run"),
                 "--quiet", "--amp", "--epochs", "1", *[a for s in BASE[:3] for a in ("--set", s)]])
    assert code == 2 and not (tmp_path / "run" / "last.pt").exists()
    with pytest.raises(BiounetError, match="invalid training config: amp"):
        apply_overrides({}, ["amp=half"])
