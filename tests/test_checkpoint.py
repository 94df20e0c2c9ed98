"""Checkpoints: self-describing, atomic, and never unpickling arbitrary objects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from biounet.errors import BiounetError
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization


def test_round_trip_keeps_weights_config_normalization_and_classes(tmp_path: Path) -> None:
    config = UNetConfig(base_channels=4, depth=2, out_channels=3, norm="batch")
    model = UNet(config)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, Normalization("zscore"), ["bg", "membrane", "cell"], extra={"step": 7})
    loaded = load_checkpoint(path)
    assert loaded.config == config
    assert loaded.normalization == Normalization("zscore")
    assert loaded.class_names == ["bg", "membrane", "cell"]
    assert loaded.extra == {"step": 7}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_the_config_inside_is_readable_yaml(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m.pt", UNet(UNetConfig(base_channels=4, depth=1)))
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert payload["format"] == FORMAT
    meta = yaml.safe_load(payload["config"])
    assert meta["model"]["base_channels"] == 4 and meta["class_names"] == ["background", "foreground"]


class Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def write_foreign(path: Path, kind: str) -> None:
    good = path.parent / "good.pt"
    save_checkpoint(good, UNet(UNetConfig(base_channels=4, depth=1)))
    if kind == "pickle":
        torch.save({"format": FORMAT, "x": Payload()}, path)
    elif kind == "plain torch":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:3000])
    elif kind == "text":
        path.write_text("hello\n")
    elif kind == "wrong weights":
        payload = torch.load(good, weights_only=True)
        payload["state_dict"] = {k: v[..., :1] for k, v in payload["state_dict"].items()}
        torch.save(payload, path)
    elif kind == "newer":
        payload = torch.load(good, weights_only=True)
        payload["format_version"] = 99
        torch.save(payload, path)
    elif kind == "bad config":
        payload = torch.load(good, weights_only=True)
        payload["config"] = "model: {depth: -3}"
        torch.save(payload, path)


@pytest.mark.parametrize(("kind", "message"), [
    ("pickle", "arbitrary Python objects"),
    ("plain torch", "without biounet's format marker"),
    ("truncated", "not a biounet checkpoint"),
    ("text", "not a biounet checkpoint"),
    ("wrong weights", "weights do not match"),
    ("newer", "newer than this biounet"),
    ("bad config", "bad checkpoint config"),
])
def test_foreign_and_broken_files_are_refused_by_name(tmp_path: Path, kind: str, message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.pt"
    write_foreign(path, kind)
    with pytest.raises(BiounetError, match=message) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    assert "must never run" not in capsys.readouterr().out


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_class_names_must_match_the_outputs(tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match="3 class names"):
        save_checkpoint(tmp_path / "m.pt", UNet(UNetConfig(base_channels=4, depth=1)), class_names=["a", "b", "c"])
