"""The Python API's one-call workflows give what the CLI commands give: ``biounet.train`` and ``biounet.plan``
here (``predict_files`` and ``evaluate`` are compared with their commands in test_predict_files.py and
test_evaluate.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

import biounet
from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.models.checkpoint import load_checkpoint
from conftest import write_disc_dataset

TINY = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=4", "batch_size=2",
        "optim.lr=0.001", "optim.scheduler=none", "checkpoint_seconds=0"]


def log_without_time(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_train_from_python_equals_the_cli(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    cli_run, api_run = tmp_path / "cli", tmp_path / "api"
    # An epoch budget: the plan then times nothing, and both runs are the same computation.
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(cli_run), "--epochs", "3",
                 "--quiet", *[a for s in TINY for a in ("--set", s)]]) == 0
    trainer = biounet.train(images, labels, api_run, epochs=3, overrides=TINY, progress=False)
    assert (api_run / "config.yaml").read_text() == (cli_run / "config.yaml").read_text()
    assert log_without_time(api_run) == log_without_time(cli_run)
    cli_model, api_model = load_checkpoint(cli_run / "model.pt"), load_checkpoint(api_run / "model.pt")
    for (name, a), (_, b) in zip(cli_model.model.state_dict().items(), api_model.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    # The best model the run returns is the one it saved.
    assert trainer.best is not None
    for a, b in zip(trainer.best.model.state_dict().values(), api_model.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert trainer.state.epoch == 3


def test_train_from_python_takes_a_config_object_and_resumes(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    planned, _ = biounet.plan(images, labels, epochs=2, progress=False)
    run = tmp_path / "run"
    biounet.train(out=run, config=planned.config(TINY), progress=False)
    with pytest.raises(BiounetError, match="a run already exists here"):
        biounet.train(out=run, config=planned.config(TINY), progress=False)
    resumed = biounet.train(out=run, overrides=["epochs=3"], resume=True, progress=False)
    assert resumed.state.epoch == 3


def test_plan_from_python_equals_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    assert main(["plan", "--images", str(images), "--labels", str(labels), "--epochs", "5",
                 "--out", str(tmp_path / "plan.yaml")]) == 0
    printed = capsys.readouterr().out
    plan, fingerprint = biounet.plan(images, labels, epochs=5, progress=False)
    assert plan.to_yaml() == (tmp_path / "plan.yaml").read_text()
    assert fingerprint.report() in printed and plan.report() in printed
    assert yaml.safe_load(plan.to_yaml())["epochs"] == 5
