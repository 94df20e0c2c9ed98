"""Test-time augmentation follows what the model was trained on and is switched on only where it pays:
the symmetry of an augmentation, the group each symmetry gives, the checkpoint's record of both, and the end
of training choosing it on the validation images."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from biounet.augment.config import AugmentConfig
from biounet.data.examples import Example
from biounet.errors import BiounetError
from biounet.infer import predict
from biounet.infer.tta import transforms
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization
from biounet.models.symmetry import TTA
from biounet.training import run as run_module
from biounet.training.config import apply_overrides


@pytest.mark.parametrize(("augment", "dims", "symmetry"), [
    ({}, 2, "dihedral"),  # the paper's: any rotation and flips
    ({"rotate": 0.0}, 2, "flips"),
    ({"flip": False}, 2, "turns"),
    ({"flip": False, "rotate": 90.0}, 2, "none"),  # +-90 degrees reach the quarter turns but not the half turn
    ({"rotate": 90.0}, 2, "dihedral"),  # ... which two flips give
    ({"flip": False, "rotate": 15.0}, 3, "none"),  # the hippocampus plan: left and right differ
    ({"flip": False, "rotate": [0.0, 0.0, 180.0]}, 3, "turns"),  # an anisotropic stack turns in its planes
    ({"flip": False, "rotate": [180.0, 0.0, 0.0]}, 3, "none"),  # ... not in a plane through z
    ({"flip": True, "rotate": 0.0}, 3, "flips"),
])
def test_the_symmetry_is_what_the_augmentation_covers(augment: dict, dims: int, symmetry: str) -> None:
    assert AugmentConfig.from_dict(augment).symmetry(dims) == symmetry


def test_each_symmetry_gives_its_group() -> None:
    sizes = {(dims, symmetry, square): len(transforms(dims, symmetry, square))  # type: ignore[arg-type]
             for dims in (2, 3) for symmetry in ("dihedral", "flips", "turns", "none") for square in (True, False)}
    assert sizes[(2, "dihedral", True)] == 8 and sizes[(2, "dihedral", False)] == 4
    assert sizes[(2, "flips", True)] == 4 and sizes[(3, "flips", True)] == 8 and sizes[(3, "dihedral", True)] == 8
    assert sizes[(2, "turns", True)] == 4 and sizes[(2, "turns", False)] == 2 and sizes[(3, "turns", True)] == 2
    assert all(sizes[(d, "none", s)] == 1 for d in (2, 3) for s in (True, False))
    x = torch.arange(2 * 3 * 4 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 4, 5)
    for symmetry in ("dihedral", "flips", "turns"):
        group = transforms(3, symmetry)  # type: ignore[arg-type]
        assert group[0].forward(x).equal(x)  # the identity first
        for t in group:
            assert t.inverse(t.forward(x)).equal(x)
            assert t.forward(x).shape == x.shape
        # Turns leave z alone: every transform maps each z-section onto the same z-section.
        if symmetry == "turns":
            assert all(t.forward(x)[:, :, 1].sum() == x[:, :, 1].sum() for t in group)


def test_a_model_is_averaged_only_over_its_symmetry() -> None:
    """A flip-free model with TTA is its plain prediction; a turns-only model equals the mean of its four
    quarter-turned predictions, each turned back, and is exactly equivariant under quarter turns."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_channels=4, depth=2)).eval()
    image = np.random.default_rng(0).random((1, 92, 92)).astype(np.float32)
    plain = predict(model, image, tile=92)

    def checkpoint(tta: TTA) -> Checkpoint:
        return Checkpoint(model, Normalization("none"), ["a", "b"], tta=tta)

    assert np.array_equal(predict(checkpoint(TTA("none")), image, tile=92, tta=True), plain)
    turned = predict(checkpoint(TTA("turns")), image, tile=92, tta=True)
    expected = np.mean([np.rot90(predict(model, np.rot90(image, k, axes=(1, 2)).copy(), tile=92), -k, axes=(1, 2))
                        for k in range(4)], axis=0)
    assert np.abs(turned - expected).max() <= 1e-5
    assert np.abs(turned - plain).max() > 1e-3
    moved = predict(checkpoint(TTA("turns")), np.rot90(image, 1, axes=(1, 2)).copy(), tile=92, tta=True)
    assert np.abs(moved - np.rot90(turned, 1, axes=(1, 2))).max() <= 1e-5
    # Without a flag, the checkpoint decides: off, then on.
    assert np.array_equal(predict(checkpoint(TTA("turns")), image, tile=92), plain)
    assert np.abs(predict(checkpoint(TTA("turns", enabled=True)), image, tile=92) - turned).max() <= 1e-6
    flipped = predict(checkpoint(TTA("flips", enabled=True)), image, tile=92)
    expected = np.mean([np.flip(predict(model, np.flip(image, axes).copy(), tile=92), axes)
                        for axes in [(), (1,), (2,), (1, 2)]], axis=0)
    assert np.abs(flipped - expected).max() <= 1e-5
    assert np.array_equal(predict(checkpoint(TTA("flips", enabled=True)), image, tile=92, tta=False), plain)


def test_the_checkpoint_keeps_its_tta_and_older_ones_read_as_the_full_group_off(tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_channels=2, depth=1))
    save_checkpoint(tmp_path / "a.pt", model, tta=TTA("turns", enabled=True))
    assert load_checkpoint(tmp_path / "a.pt").tta == TTA("turns", True)
    assert load_checkpoint(tmp_path / "a.pt").describe()["tta"] == {"symmetry": "turns", "enabled": True}
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    payload["config"] = payload["config"].split("tta:")[0]  # as checkpoints were written before
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").tta == TTA("dihedral", False)
    with pytest.raises(BiounetError, match="symmetry"):
        TTA("mirror")  # type: ignore[arg-type]
    with pytest.raises(BiounetError, match="cannot be enabled"):
        TTA("none", enabled=True)


def _examples(count: int) -> list[Example]:
    rng = np.random.default_rng(1)
    return [Example(f"v{i}", rng.random((1, 20, 20), np.float32), (rng.random((20, 20)) > 0.5).astype(np.int64),
                    np.ones((20, 20), np.float32)) for i in range(count)]


def _perfect(example: Example) -> np.ndarray:
    """Probabilities whose argmax is the target, 0.9 sure."""
    fg = np.where(example.target == 1, 0.9, 0.1).astype(np.float32)
    return np.stack([1 - fg, fg])


@pytest.mark.parametrize(("tta_errors", "expected"), [(0, True), (16, True), (20, False), (24, False), (-1, False)])
def test_training_keeps_tta_only_where_it_lowers_the_validation_error_enough(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tta_errors: int, expected: bool) -> None:
    """Plain predictions get 20 of 400 pixels wrong per image, TTA ones ``tta_errors``: TTA stays only with a
    gain of 5 % or more of the error (1 - Dice), and the saved checkpoint records the choice. With no
    error to lower (both perfect: ``-1``), nothing pays for the extra time."""
    examples = _examples(2)

    def fake(model: Checkpoint, example: Example, tta: bool = False) -> np.ndarray:
        probs = _perfect(example).reshape(2, -1)
        wrong = max(tta_errors, 0) if tta else 20 * (tta_errors >= 0)
        probs[:, :wrong] = probs[::-1, :wrong]
        return probs.reshape(2, 20, 20)

    monkeypatch.setattr(run_module, "predict_example", fake)
    config = apply_overrides({}, ["model.base_channels=2", "model.depth=1"])
    best = Checkpoint(UNet(config.model), Normalization(), ["background", "foreground"])
    finished, probabilities = run_module.finish_model(best, tmp_path / "model.pt", examples, config)
    assert finished.tta == TTA("dihedral", expected) == load_checkpoint(tmp_path / "model.pt").tta
    out = capsys.readouterr().out
    assert f"tta: {'on' if expected else 'off'}: averaging over 8 dihedral transforms" in out
    assert np.array_equal(probabilities[0], fake(best, examples[0], tta=expected))


def test_training_without_flips_or_turns_keeps_tta_off_and_predicts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[bool] = []

    def fake(model: Checkpoint, example: Example, tta: bool = False) -> np.ndarray:
        calls.append(tta)
        return _perfect(example)

    monkeypatch.setattr(run_module, "predict_example", fake)
    config = apply_overrides({}, ["model.base_channels=2", "model.depth=1", "augment.flip=false",
                                  "augment.rotate=15"])
    best = Checkpoint(UNet(config.model), Normalization(), ["background", "foreground"])
    finished, _ = run_module.finish_model(best, tmp_path / "model.pt", _examples(3), config)
    assert finished.tta == TTA("none", False) and calls == [False, False, False]
    assert "covered no flips or turns" in capsys.readouterr().out


def test_group_transforms_are_all_distinct() -> None:
    x = torch.arange(36, dtype=torch.float32).reshape(1, 1, 6, 6)
    for dims, symmetry in itertools.product((2,), ("dihedral", "flips", "turns")):
        outs = [t.forward(x) for t in transforms(dims, symmetry)]  # type: ignore[arg-type]
        assert len({tuple(o.flatten().tolist()) for o in outs}) == len(outs)


def test_the_end_of_a_run_is_budgeted_with_its_test_time_transforms_and_its_tuning() -> None:
    """An instance run reserves the final validation, a plain prediction and one per transform of its group,
    plus its post-processing search at the measured cost of a validation's objects."""
    from biounet.training.budget import MARGIN, Budget
    from biounet.training.trainer import TUNING_POINTS

    budget = Budget(600.0)
    budget.ending_validations, budget.tuning_points = 2 + 8, TUNING_POINTS
    budget.note_validation(2.0, 0.5)
    budget.note_validation(1.5, 0.25)  # the slowest recent one counts, shrunk by DECAY per later one
    budget.note_save(0.5)
    assert TUNING_POINTS == 31
    assert budget.ending_seconds() == pytest.approx(10 * 1.8 + 31 * 0.45 + 2 * 0.5 + MARGIN * 600)


def test_a_cold_first_validation_is_forgotten_after_a_few_warm_ones() -> None:
    """The validation timed before training (cold, on a loaded machine) must not reserve its time to the end."""
    from biounet.training.budget import Budget

    budget = Budget(60.0)
    budget.note_validation(1.0)
    for _ in range(30):
        budget.note_validation(0.1)
    assert budget.validation_seconds == pytest.approx(0.1)
    budget.note_validation(0.5)  # a slow one now counts at once
    assert budget.validation_seconds == 0.5
