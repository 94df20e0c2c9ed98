"""Fine-tuning: a run that starts from a checkpoint's weights (``init``), and refuses a foreign architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from biounet.errors import BiounetError
from biounet.models import UNet
from biounet.models.checkpoint import save_checkpoint
from biounet.training.config import apply_overrides
from biounet.training.run import initial_model

TINY = ["model.base_channels=4", "model.depth=2"]


def test_init_loads_the_checkpoint_weights(tmp_path: Path) -> None:
    config = apply_overrides({}, TINY)
    source = UNet(config.model)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)  # differ from any fresh initialisation
    save_checkpoint(tmp_path / "source.pt", source)
    model = initial_model(apply_overrides({}, [*TINY, f"init={tmp_path / 'source.pt'}"]))
    for (name, a), b in zip(model.state_dict().items(), source.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fresh = initial_model(config)
    assert not torch.equal(next(fresh.parameters()), next(source.parameters()))


def test_init_with_another_architecture_is_an_error_naming_the_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "other.pt", UNet(apply_overrides({}, ["model.base_channels=8", "model.depth=2"]).model))
    with pytest.raises(BiounetError, match=r"other\.pt: init checkpoint's model differs"):
        initial_model(apply_overrides({}, [*TINY, f"init={tmp_path / 'other.pt'}"]))
