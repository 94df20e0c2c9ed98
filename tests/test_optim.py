"""The optimiser's options: AdamW and gradient-norm clipping, checked on a real training step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from biounet.data.examples import Example
from biounet.data.sampling import PatchSampler
from biounet.errors import BiounetError
from biounet.models.unet import UNet
from biounet.training.config import apply_overrides
from biounet.training.trainer import Trainer

BASE = ["model.base_channels=4", "model.depth=1", "model.padding=same", "tile=16", "batch_size=1",
        "data_workers=0", "augment.flip=false", "augment.rotate=0", "augment.elastic_sigma=0",
        "optim.name=sgd", "optim.momentum=0", "optim.lr=1.0", "optim.scheduler=none"]


def _update_norm(tmp_path: Path, *settings: str) -> tuple[float, float]:
    """The norm of one step's weight change and of the gradient it came from (SGD, rate 1, no momentum:
    the change is the applied gradient)."""
    config = apply_overrides({}, [*BASE, *settings])
    rng = np.random.default_rng(0)
    example = Example("x", rng.random((1, 16, 16), np.float32), rng.integers(0, 2, (16, 16)).astype(np.int64),
                      np.full((16, 16), 50.0, np.float32))  # heavy weights: a large gradient
    torch.manual_seed(0)
    model = UNet(config.model)
    trainer = Trainer(config, model, PatchSampler([example], (16, 16), (16, 16), 0.0), lambda _m: {}, tmp_path,
                      torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train_step()
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return float(change.norm()), float(grad.norm())


def test_clipping_scales_a_large_gradient_to_the_limit(tmp_path: Path) -> None:
    free, gradient = _update_norm(tmp_path / "a")
    assert free == pytest.approx(gradient, rel=1e-4) and free > 1.0
    clipped, _ = _update_norm(tmp_path / "b", "optim.clip=0.5")
    assert clipped == pytest.approx(0.5, rel=1e-4)
    loose, _ = _update_norm(tmp_path / "c", f"optim.clip={2 * free}")
    assert loose == pytest.approx(free, rel=1e-5)  # a limit above the norm changes nothing


def test_adamw_decays_the_weights_decoupled(tmp_path: Path) -> None:
    config = apply_overrides({}, ["optim.name=adamw", "optim.weight_decay=0.5", "optim.lr=0.1"])
    from biounet.training.trainer import _optimizer

    layer = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(2.0)
    optimizer = _optimizer(config, layer)
    assert isinstance(optimizer, torch.optim.AdamW)
    layer.weight.grad = torch.zeros_like(layer.weight)
    optimizer.step()
    # With a zero gradient Adam's step is 0 and only the decoupled decay acts: w * (1 - lr * wd).
    assert layer.weight.item() == pytest.approx(2.0 * (1 - 0.1 * 0.5))


def test_negative_clip_is_refused() -> None:
    with pytest.raises(BiounetError, match=r"optim\.clip must be >= 0"):
        apply_overrides({}, ["optim.clip=-1"])
