"""The moving average of the weights: its arithmetic, what a run validates and keeps, checkpoint and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from biounet.errors import BiounetError
from biounet.models.checkpoint import load_checkpoint
from biounet.training.config import apply_overrides
from biounet.training.ema import WeightAverage
from biounet.training.run import train
from biounet.training.trainer import lr_factor
from conftest import write_disc_dataset

TINY = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=4", "batch_size=2",
        "optim.lr=0.01", "optim.scheduler=none", "checkpoint_seconds=0", "deterministic=true"]


def test_average_follows_the_warmed_up_decay_by_hand() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    average = WeightAverage(model, decay=0.5)
    weight = model[0].weight
    expected = None
    for n, value in enumerate([2.0, 4.0, 8.0, 16.0]):
        with torch.no_grad():
            weight.fill_(value)
            model[1].num_batches_tracked.fill_(n + 7)
        average.update(model)
        if expected is None:
            expected = value  # the first update copies the weights
        else:
            # n updates before this one: decay min(0.5, (1 + n) / (10 + n)) -> 0.1818, 0.25, 0.3077
            decay = min(0.5, (1 + n) / (10 + n))
            expected = decay * expected + (1 - decay) * value
        assert average.model[0].weight.item() == pytest.approx(expected, rel=1e-6)
    assert average.updates == 4
    assert int(average.model[1].num_batches_tracked) == 10  # integer buffers are copied, not averaged
    # The average is a copy: training the model does not move it, and it takes no gradients.
    assert all(not p.requires_grad for p in average.model.parameters())
    assert not average.model.training


def test_state_dict_round_trips() -> None:
    model = torch.nn.Linear(3, 2)
    average = WeightAverage(model, 0.9)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        average.update(model)
    other = WeightAverage(torch.nn.Linear(3, 2), 0.9)
    other.load_state_dict(average.state_dict())
    assert other.updates == 3
    assert torch.equal(other.model.weight, average.model.weight)


def test_ema_must_be_a_decay() -> None:
    with pytest.raises(BiounetError, match="ema must be in"):
        apply_overrides({}, ["ema=1.0"])


def _config(tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    return apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", *extra])


def test_a_run_validates_and_keeps_the_average(tmp_path: Path) -> None:
    seen: list[torch.nn.Module] = []
    config = _config(tmp_path, "epochs=3", "ema=0.9")
    trainer = train(config, tmp_path / "run", progress=False,
                    callbacks={"on_epoch_end": [lambda t: seen.append(t.evaluated)]})
    assert trainer.ema is not None and trainer.ema.updates == trainer.state.step == 6
    assert all(m is trainer.ema.model for m in seen)
    best = load_checkpoint(tmp_path / "run" / "model.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    averaged, trained = trainer.ema.model.state_dict(), trainer.model.state_dict()
    # last.pt holds the trained weights (to resume from) and the average among its state.
    assert all(torch.equal(v, trained[k]) for k, v in last.model.state_dict().items())
    saved = last.extra["train_state"]["ema"]
    assert all(torch.equal(v, averaged[k]) for k, v in saved["weights"].items())
    # The average differs from the trained weights after a few steps at a high rate; model.pt is one of the
    # averages (the best epoch's), and trainer.best the same.
    assert any(not torch.equal(averaged[k], trained[k]) for k in trained)
    if trainer.state.best_epoch == 3:
        assert all(torch.equal(v, averaged[k]) for k, v in best.model.state_dict().items())
    assert trainer.best is not None
    assert all(torch.equal(v, best.model.state_dict()[k]) for k, v in trainer.best.model.state_dict().items())


def test_resume_continues_the_average_exactly(tmp_path: Path) -> None:
    config = _config(tmp_path, "epochs=4", "ema=0.8")
    straight = train(config, tmp_path / "a", progress=False)
    half = apply_overrides(yaml.safe_load(config.to_yaml()), ["epochs=2"])
    train(half, tmp_path / "b", progress=False)
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert straight.ema is not None and resumed.ema is not None
    assert resumed.ema.updates == straight.ema.updates == 8
    for key, value in straight.ema.model.state_dict().items():
        assert torch.equal(value, resumed.ema.model.state_dict()[key]), key



def test_resume_with_a_longer_budget_continues_the_schedule_and_the_average(tmp_path: Path) -> None:
    """A run of 2 epochs with a decaying rate, resumed with a budget of 6: the steps, the log and the moving
    average go on from where it stopped, and from there the rate follows the 6-epoch schedule, as a run
    planned for 6 epochs has it at the same step (the rate rises again, a warm restart, and decays to 0 at
    the new end)."""
    config = _config(tmp_path, "epochs=6", "ema=0.8", "optim.scheduler=poly", "optim.warmup=0.1")
    straight = train(config, tmp_path / "a", progress=False)
    short = apply_overrides(yaml.safe_load(config.to_yaml()), ["epochs=2"])
    first = train(short, tmp_path / "b", progress=False)
    # 2 steps per epoch: the last of the 4 steps ran at 3/4 of the 2-epoch schedule.
    assert first.state.history[-1]["lr"] == pytest.approx(0.01 * lr_factor("poly", 3 / 4, 0.1))
    resumed = train(config, tmp_path / "b", resume=True, progress=False)
    assert resumed.state.step == straight.state.step == 12
    assert [row["epoch"] for row in resumed.state.history] == [1, 2, 3, 4, 5, 6]
    assert [row["lr"] for row in resumed.state.history[:2]] == [row["lr"] for row in first.state.history]
    assert [row["lr"] for row in resumed.state.history[2:]] == [row["lr"] for row in straight.state.history[2:]]
    # Epoch 3's last step (the 6th of 12) at 5/12 of the 6-epoch schedule: higher than where the short run ended.
    assert resumed.state.history[2]["lr"] == pytest.approx(0.01 * lr_factor("poly", 5 / 12, 0.1))
    assert resumed.state.history[2]["lr"] > first.state.history[-1]["lr"]
    assert resumed.ema is not None and first.ema is not None and resumed.ema.updates == 12
    logged = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in logged[1:]] == ["1", "2", "3", "4", "5", "6"]

@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_saves_the_best_or_the_latest_validated_model(tmp_path: Path, keep: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Validation scores that fall after the first epoch: "best" keeps epoch 1's average, "last" the final one.
    from biounet.training import run as run_module

    scores = iter([0.9, 0.5, 0.4])
    real = run_module.make_validator

    def scripted(*args, **kwargs):  # type: ignore[no-untyped-def]
        validate = real(*args, **kwargs)
        return lambda model: {**validate(model), "dice": next(scores)}

    monkeypatch.setattr(run_module, "make_validator", scripted)
    config = _config(tmp_path, "epochs=3", "ema=0.5", f"keep={keep}")
    seen: list[dict[str, torch.Tensor]] = []
    trainer = train(config, tmp_path / "run", progress=False, callbacks={"on_epoch_end": [
        lambda t: seen.append({k: v.clone() for k, v in t.evaluated.state_dict().items()})]})
    assert trainer.state.best == 0.9 and trainer.state.best_epoch == 1 and trainer.state.last_validated_epoch == 3
    saved = load_checkpoint(tmp_path / "run" / "model.pt").model.state_dict()
    expected, other = (seen[0], seen[2]) if keep == "best" else (seen[2], seen[0])
    assert all(torch.equal(v, expected[k]) for k, v in saved.items())
    assert any(not torch.equal(v, other[k]) for k, v in saved.items())


def test_keep_must_be_best_or_last() -> None:
    with pytest.raises(BiounetError, match="keep 'first'"):
        apply_overrides({}, ["keep=first"])
