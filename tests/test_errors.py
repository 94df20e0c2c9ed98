"""Expected failures end in one line and an exit code, never a traceback; Ctrl-C keeps a run's progress;
temporary files are unique, hidden and cleaned up."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml

from biounet.atomic import atomic_path
from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.interrupts import deferred_interrupt, terminate_as_interrupt
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.training.config import apply_overrides
from biounet.training.run import train
from biounet.training.trainer import Trainer, TrainingInterrupted
from conftest import write_disc_dataset

TINY = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=4", "batch_size=2",
        "optim.lr=0.001", "optim.scheduler=none"]


# -- temporary files ------------------------------------------------------------------------------------

def test_temporary_names_are_hidden_unique_and_removed_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "case.nii.gz"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second  # same process, same target
        assert first.name.startswith(".case.") and first.name.endswith(".tmp.nii.gz")
        assert second.name.startswith(".case.") and first.parent == tmp_path
        first.write_bytes(b"one")
        second.write_bytes(b"two")
    assert target.read_bytes() == b"one"  # the writer that finishes last wins, whole
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz"]


def test_writing_into_a_missing_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match=r"directory .*missing does not exist") as info, \
            atomic_path(tmp_path / "missing" / "s.json"):
        pass
    assert str(info.value).startswith(str(tmp_path / "missing" / "s.json"))


# -- the CLI's error contract ----------------------------------------------------------------------------

def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("biounet ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("error", "code", "line"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB.\nGPU 0 has 1.2 GiB free"), 4,
     "biounet predict: error: out of memory: try a smaller --tile or --batch-size"),
    (MemoryError(), 4, "biounet predict: error: out of memory: try a smaller --tile or --batch-size"),
    (PermissionError(13, "Permission denied", "/data/locked.tif"), 2,
     "biounet predict: error: /data/locked.tif: Permission denied"),
    (yaml.YAMLError("while parsing\n  in line 3"), 2, "biounet predict: error: invalid YAML: while parsing in line 3"),
    (KeyboardInterrupt(), 130, "biounet predict: interrupted"),
])
def test_predict_failures_are_one_line(error: BaseException, code: int, line: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr(importlib.import_module("biounet.infer.predict"), "prepare_model", fail)
    save_checkpoint(tmp_path / "m.pt", UNet(UNetConfig(base_channels=4, depth=2)))
    iio.imwrite(tmp_path / "a.png", np.full((40, 40), 100, np.uint8))
    assert main(["predict", "--model", str(tmp_path / "m.pt"), str(tmp_path / "a.png"),
                 "--out", str(tmp_path / "out")]) == code
    assert one_error_line(capsys) == line


def test_train_out_of_memory_suggests_smaller_tiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def fail(self: Trainer) -> float:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(Trainer, "train_step", fail)
    images, labels = write_disc_dataset(tmp_path / "data", 2)
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "run"),
                 "--quiet", "--epochs", "1", *[a for s in TINY for a in ("--set", s)]]) == 4
    assert one_error_line(capsys) == ("biounet train: error: out of memory: try a smaller tile or batch size "
                                      "(--set tile=N --set batch_size=N)")


def test_evaluate_json_into_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    iio.imwrite(tmp_path / "truth" / "a.png", mask)
    iio.imwrite(tmp_path / "pred" / "a_mask.png", (mask > 0).astype(np.uint8))
    target = tmp_path / "missing" / "s.json"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(tmp_path / "truth"),
                 "--json", str(target)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"biounet evaluate: error: {target}: ") and "does not exist" in line
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("epochs: [1, 2\nseed: 3\n", "not valid YAML"),
    ("- a\n- list\n", "expected a mapping"),
    ("epochs: many\n", "epochs must be an integer"),
    (b"\xff\xfe\x00binary", "not valid YAML"),
])
def test_resume_with_a_damaged_config_names_it(text: str | bytes, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    if isinstance(text, bytes):
        (run / "config.yaml").write_bytes(text)
    else:
        (run / "config.yaml").write_text(text)
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"biounet train: error: {run / 'config.yaml'}: damaged run config") and message in line


# -- Ctrl-C ------------------------------------------------------------------------------------------------

@pytest.fixture
def default_ctrl_c() -> Iterator[None]:
    """Python's own SIGINT handler, also where the test run was started with SIGINT ignored (a CI job)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.usefixtures("default_ctrl_c")
def test_interrupt_inside_a_deferred_block_waits_for_its_end() -> None:
    finished = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("after the signal")
    assert finished == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # A second Ctrl-C does not wait.
    with pytest.raises(KeyboardInterrupt), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("never")
    assert finished == ["after the signal"]


@pytest.mark.usefixtures("default_ctrl_c")
def test_sigterm_as_an_interrupt_also_waits_for_the_end_of_a_deferred_block() -> None:
    finished, received = [], []
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt(received), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        finished.append("after the signal")
        assert not received  # noted by the deferring handler, not yet by the command's
    assert finished == ["after the signal"] and received == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    # A second signal (either one) does not wait; an application's own SIGTERM handler is left alone.
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt(received), deferred_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        finished.append("never")
    assert finished == ["after the signal"] and received == [signal.SIGTERM]  # the SIGINT raised, by its own handler
    own = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: own.append(signum))
    try:
        with deferred_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            assert own == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_ctrl_c_saves_the_run_and_resume_continues_it_exactly(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    config = apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", "epochs=4",
                                  "deterministic=true", "checkpoint_seconds=3600"])
    straight = train(config, tmp_path / "straight", progress=False)

    from biounet.training.callbacks import ProgressBar

    original = ProgressBar.on_step

    def interrupt_at_step_5(self: ProgressBar, trainer: Trainer) -> None:
        original(self, trainer)
        if trainer.state.step == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressBar, "on_step", interrupt_at_step_5)
    out = tmp_path / "interrupted"
    with pytest.raises(TrainingInterrupted, match="at step 5"):
        train(config, out, progress=False)
    counters = load_checkpoint(out / "last.pt").extra["train_state"]["counters"]
    assert (counters["step"], counters["epoch"], counters["epoch_step"]) == (5, 2, 1)
    monkeypatch.setattr(ProgressBar, "on_step", original)

    resumed = train(config, out, resume=True, progress=False)
    assert resumed.state.step == straight.state.step == 8
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert [row["epoch"] for row in resumed.state.history] == [1, 2, 3, 4]
    # The interrupted epoch's loss averages all its steps, before and after the interruption.
    assert resumed.state.history[2]["train_loss"] == pytest.approx(straight.state.history[2]["train_loss"])


def test_sigint_to_biounet_train_exits_130_with_its_progress_saved(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 4)
    out = tmp_path / "run"
    settings = [*TINY, "samples_per_epoch=100000", "checkpoint_seconds=2"]
    command = [sys.executable, "-m", "biounet.cli.main", "train", "--images", str(images), "--labels", str(labels),
               "--out", str(out), "--quiet", "--epochs", "1", *[a for s in settings for a in ("--set", s)]]
    # A shell runs background jobs with SIGINT ignored and children inherit that (CI does); a terminal's
    # Ctrl-C reaches a process with the default disposition, so the child gets that back before exec.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "last.pt").exists():
        time.sleep(0.05)
    periodic = load_checkpoint(out / "last.pt").extra["train_state"]["counters"]["step"]
    time.sleep(1.0)  # steps are milliseconds; the next periodic save is 2 s away
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack goes to stderr
        _, err = process.communicate()
        pytest.fail(f"no exit 60 s after SIGINT:\n{err}")
    assert process.returncode == 130, err
    saved = load_checkpoint(out / "last.pt").extra["train_state"]["counters"]["step"]
    assert saved > periodic
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"biounet train: interrupted: saved {out / 'last.pt'} at step {saved}; "
                                        "resume the run to continue"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
