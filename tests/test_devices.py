"""Devices: ``--device`` parsing, prediction that never moves or changes the caller's model, validation on
the training device, and CUDA generator state in ``last.pt`` (exercised on the CPU with patched torch)."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr

from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.infer import predict
from biounet.infer.predict import resolve_device
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization
from biounet.training.config import TrainConfig, apply_overrides
from biounet.training.run import train
from conftest import write_disc_dataset

TINY = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=4", "batch_size=2",
        "optim.lr=0.001", "optim.scheduler=none", "checkpoint_seconds=0"]


def pretend_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 2) -> None:
    """A machine whose torch reports CUDA devices (none can be used: any real CUDA call would fail)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(("text", "expected"), [("cpu", "cpu"), ("CPU", "cpu"), ("cuda", "cuda"),
                                                ("cuda:1", "cuda:1"), (None, "cpu")])
def test_device_names_resolve(text: str | None, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cuda(monkeypatch, count=2)
    assert resolve_device(text) == torch.device(expected)


@pytest.mark.parametrize(("text", "message"), [
    ("gpu", "unknown device 'gpu': use cpu, cuda, cuda:N or mps"),
    ("cuda:x", "unknown device"),
    ("cuda:2", "device cuda:2 does not exist: this machine has 2 CUDA device"),
    ("mps", "MPS backend is not available"),
])
def test_bad_device_names_are_one_line_errors(text: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cuda(monkeypatch, count=2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BiounetError, match=message) as info:
        resolve_device(text)
    assert "\n" not in str(info.value)


def test_cuda_without_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BiounetError, match="no CUDA device is available"):
        resolve_device("cuda:0")


def test_predict_leaves_the_callers_model_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model in training, on the CPU, with batch norms, while CUDA is available: device=None means the
    model's device, and its mode, parameters, buffers, layout and layers are untouched."""
    pretend_cuda(monkeypatch)
    model = UNet(UNetConfig(base_channels=4, depth=2, norm="batch"))
    model.train()
    before = copy.deepcopy(model.state_dict())
    modules = [type(m) for m in model.modules()]
    probs = predict(model, np.random.rand(1, 60, 70).astype(np.float32), tile=60)
    assert probs.shape == (2, 60, 70)
    assert model.training and all(m.training for m in model.modules())
    assert [type(m) for m in model.modules()] == modules
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu", key
        assert value.is_contiguous(), key  # not converted to channels-last
        assert torch.equal(value, before[key]), key  # batch-norm running statistics included
    assert all(p.requires_grad for p in model.parameters())


def test_a_channels_last_model_keeps_its_own_tensors() -> None:
    """The prepared model may view the caller's weights, but never replaces or rewrites them."""
    model = UNet(UNetConfig(base_channels=4, depth=2, norm="batch")).to(memory_format=torch.channels_last)
    model.eval()
    tensors = {k: (v, v.data_ptr(), v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    predict(model, np.random.rand(1, 60, 70).astype(np.float32), tile=60)
    for key, value in model.state_dict(keep_vars=True).items():
        tensor, pointer, copied = tensors[key]
        assert value is tensor and value.data_ptr() == pointer and torch.equal(value, copied), key
        if value.ndim == 4:
            assert value.is_contiguous(memory_format=torch.channels_last), key
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_predict_runs_on_the_models_device_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_cuda(monkeypatch)
    seen: list[torch.device] = []
    # The package exports the function under the module's name; the module itself is in sys.modules.
    module = importlib.import_module("biounet.infer.predict")
    real = module.prepare_model

    def spy(model: UNet, device: torch.device) -> UNet:
        seen.append(device)
        return real(model, device)

    monkeypatch.setattr(module, "prepare_model", spy)
    model = UNet(UNetConfig(base_channels=4, depth=2))
    image = np.random.rand(40, 40).astype(np.float32)
    predict(model, image)
    predict(model, image, device="cpu")
    assert seen == [torch.device("cpu"), torch.device("cpu")]


def test_predict_accepts_a_checkpoint_and_uses_its_normalization(tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    save_checkpoint(tmp_path / "m.pt", model, Normalization("zscore"))
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    image = (np.random.rand(1, 80, 90) * 1000 + 50).astype(np.float32)
    expected = predict(checkpoint.model, image, tile=60, normalization=Normalization("zscore"))
    assert np.array_equal(predict(checkpoint, image, tile=60), expected)
    # Without normalisation the raw intensities give a clearly different result.
    assert np.abs(predict(checkpoint.model, image, tile=60) - expected).max() > 1e-3
    # An explicit normalisation wins over the checkpoint's.
    percentile = predict(checkpoint, image, tile=60, normalization=Normalization("percentile"))
    assert np.array_equal(percentile, predict(checkpoint.model, image, tile=60,
                                              normalization=Normalization("percentile")))


@pytest.mark.parametrize("store", ["h5py", "zarr"])
def test_single_channel_hdf5_and_zarr_arrays_predict_without_a_channel_axis(store: str, tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    data = np.random.rand(90, 110).astype(np.float32)
    if store == "h5py":
        handle = h5py.File(tmp_path / "image.h5", "w")
        array = handle.create_dataset("raw", data=data)
    else:
        array = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=data.shape, dtype="float32")
        array[...] = data
    norm = Normalization("percentile")
    got = predict(model, array, tile=60, normalization=norm)
    assert np.array_equal(got, predict(model, data, tile=60, normalization=norm))
    if store == "h5py":
        handle.close()


def tiny_config(tmp_path: Path, *extra: str) -> TrainConfig:
    images, labels = write_disc_dataset(tmp_path / "data", 4)
    return apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", *extra])


def test_validation_runs_on_the_training_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`train --device cpu` on a machine with CUDA: validation must not move the model to CUDA."""
    pretend_cuda(monkeypatch)
    trainer = train(tiny_config(tmp_path, "epochs=2"), tmp_path / "run", device="cpu", progress=False)
    assert trainer.state.epoch == 2 and "val_dice" in trainer.state.history[-1]
    assert all(p.device.type == "cpu" for p in trainer.model.parameters())


def test_cli_train_device_is_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 2)
    code = main(["train", "--images", str(images), "--labels", str(labels), "--out", str(tmp_path / "run"),
                 "--device", "gpu", "--quiet", *[a for s in TINY for a in ("--set", s)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["biounet train: error: unknown device 'gpu': use cpu, cuda, cuda:N or mps"]


def test_cuda_generator_states_are_saved_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    config = tiny_config(tmp_path, "epochs=1")
    train(config, tmp_path / "run", progress=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt").extra["train_state"]["rng"]["cuda"]
    assert len(saved) == 2 and all(torch.equal(a, b) for a, b in zip(saved, states, strict=True))

    # Resumed on a machine with one GPU: its generator gets the first saved state.
    restored: list[list[torch.Tensor]] = []
    pretend_cuda(monkeypatch, count=1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda new: restored.append(list(new)))
    longer = apply_overrides(config.to_dict(), ["epochs=2"])
    train(longer, tmp_path / "run", resume=True, progress=False)
    assert len(restored) == 1 and len(restored[0]) == 1 and torch.equal(restored[0][0], states[0])
