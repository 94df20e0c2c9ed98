"""A folder of deliberately bad inputs through ``train``, ``predict`` and ``evaluate``.

Every case must end in exactly one line on stderr that names the problem, a non-zero exit code, no
traceback, and no output written (not even a leftover temporary file).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from biounet.cli.main import main
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import save_checkpoint
from conftest import write_disc_dataset

TINY = ["--set", "model.base_channels=4", "--set", "model.depth=2", "--set", "tile=60", "--set",
        "samples_per_epoch=2", "--epochs", "1", "--quiet"]
GOOD = np.full((40, 40), 100, np.uint8)


def _model(folder: Path) -> Path:
    path = folder / "model.pt"
    save_checkpoint(path, UNet(UNetConfig(base_channels=4, depth=2)))
    return path


def _predict(image_name: str, write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        path = folder / "in" / image_name
        path.parent.mkdir(exist_ok=True)
        write(path)
        return ["predict", "--model", str(_model(folder)), str(path), "--out", str(folder / "out")]
    return build


def _checkpoint(write: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        image = folder / "in" / "a.png"
        image.parent.mkdir()
        iio.imwrite(image, GOOD)
        write(folder / "model.pt")
        return ["predict", "--model", str(folder / "model.pt"), str(image), "--out", str(folder / "out")]
    return build


def _train(edit: Callable[[Path, Path], list[str] | None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        images, labels = write_disc_dataset(folder / "data", 3, size=40)
        extra = edit(images, labels) or []
        return ["train", "--images", str(images), "--labels", str(labels), "--out", str(folder / "out"),
                *TINY, *extra]
    return build


def _evaluate(edit: Callable[[Path, Path], list[str] | None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        pred, truth = folder / "pred", folder / "truth"
        pred.mkdir()
        truth.mkdir()
        iio.imwrite(truth / "a.png", (GOOD > 0).astype(np.uint8) * 255)
        tifffile.imwrite(pred / "a_prob.tif", np.full((2, 40, 40), 0.5, np.float32))
        extra = edit(pred, truth) or []
        return ["evaluate", "--pred", str(pred), "--truth", str(truth), *extra]
    return build


def _write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _png_truncated(path: Path) -> None:
    iio.imwrite(path, GOOD)
    path.write_bytes(path.read_bytes()[:60])


def _tiff_truncated(path: Path) -> None:
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:300])


def _hdf5_two_datasets(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["a"] = GOOD
        f["b"] = GOOD


def _label(name: str, value: np.ndarray) -> Callable[[Path, Path], None]:
    def edit(images: Path, labels: Path) -> None:
        target = labels / name
        for old in labels.glob(f"{Path(name).stem}.*"):
            old.unlink()
        if name.endswith(".tif"):
            tifffile.imwrite(target, value)
        else:
            iio.imwrite(target, value)
    return edit


def _foreign_pickle(path: Path) -> None:
    with path.open("wb") as f:
        pickle.dump({"format": "biounet.checkpoint", "evil": Path("/")}, f)


def _mismatched_weights(path: Path) -> None:
    save_checkpoint(path, UNet(UNetConfig(base_channels=4, depth=2)))
    payload = torch.load(path, weights_only=True)
    payload["config"] = payload["config"].replace("base_channels: 4", "base_channels: 8")
    torch.save(payload, path)


def _damaged_checkpoint_yaml(path: Path) -> None:
    save_checkpoint(path, UNet(UNetConfig(base_channels=4, depth=2)))
    payload = torch.load(path, weights_only=True)
    payload["config"] = "model: [unclosed\n  - :"
    torch.save(payload, path)


def _damaged_config(images: Path, labels: Path) -> list[str]:
    config = images.parent / "config.yaml"
    config.write_text("model: {base_channels: [\n")
    return ["--config", str(config)]


def _missing_label(images: Path, labels: Path) -> None:
    next(labels.iterdir()).unlink()


def _prediction(name: str, value: np.ndarray) -> Callable[[Path, Path], None]:
    def edit(pred: Path, truth: Path) -> None:
        (pred / "a_prob.tif").unlink()
        tifffile.imwrite(pred / name, value)
    return edit


CASES: dict[str, Callable[[Path], list[str]]] = {
    # predict: images
    "empty file": _predict("a.png", _write_bytes(b"")),
    "truncated png": _predict("a.png", _png_truncated),
    "truncated tiff": _predict("a.tif", _tiff_truncated),
    "text named tif": _predict("a.tif", _write_bytes(b"not an image at all\n")),
    "complex dtype": _predict("a.tif", lambda p: tifffile.imwrite(p, np.ones((40, 40), np.complex64))),
    "NaN pixels": _predict("a.tif", lambda p: tifffile.imwrite(p, np.full((40, 40), np.nan, np.float32))),
    "infinite pixels": _predict("a.tif", lambda p: tifffile.imwrite(p, np.full((40, 40), np.inf, np.float32))),
    "5D array": _predict("a.tif", lambda p: tifffile.imwrite(p, np.zeros((2, 3, 2, 40, 40), np.uint8),
                                                             metadata={"axes": "QQQYX"})),
    "channels do not fit": _predict("a.tif", lambda p: tifffile.imwrite(p, np.zeros((5, 40, 40), np.uint8),
                                                                        imagej=True, metadata={"axes": "CYX"})),
    "unsupported suffix": _predict("a.npy", lambda p: np.save(p, GOOD)),
    "HDF5 with two datasets": _predict("a.h5", _hdf5_two_datasets),
    "corrupt HDF5": _predict("a.h5", _write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)),
    "truncated NIfTI": _predict("a.nii.gz", _write_bytes(b"\x1f\x8b\x08\x00broken")),
    "missing input": lambda folder: ["predict", "--model", str(_model(folder)), str(folder / "nope.png"),
                                     "--out", str(folder / "out")],
    # predict: checkpoints
    "checkpoint of random bytes": _checkpoint(_write_bytes(b"\x00\x01garbage" * 10)),
    "pickled foreign object": _checkpoint(_foreign_pickle),
    "plain state_dict": _checkpoint(lambda p: torch.save(UNet(UNetConfig(base_channels=4, depth=2)).state_dict(), p)),
    "weights do not fit the config": _checkpoint(_mismatched_weights),
    "damaged YAML in checkpoint": _checkpoint(_damaged_checkpoint_yaml),
    # train
    "label shape mismatch": _train(_label("00.png", np.zeros((30, 30), np.uint8))),
    "image without label": _train(_missing_label),
    "label with fractions": _train(_label("00.tif", np.full((40, 40), 0.5, np.float32))),
    "RGB label": _train(_label("00.png", np.zeros((40, 40, 3), np.uint8))),
    "NaN label": _train(_label("00.tif", np.full((40, 40), np.nan, np.float32))),
    "damaged config YAML": _train(_damaged_config),
    "invalid config value": _train(lambda i, lbl: ["--set", "batch_size=0"]),
    "all-background labels": _train(lambda i, lbl: [_label(p.name, np.zeros((40, 40), np.uint8))(i, lbl)
                                                    for p in sorted(lbl.iterdir())] and None),
    # evaluate
    "prediction shape mismatch": _evaluate(_prediction("a_prob.tif", np.full((2, 30, 30), 0.5, np.float32))),
    "prediction values out of range": _evaluate(_prediction("a_prob.tif", np.full((2, 40, 40), 1.5, np.float32))),
    "truth without prediction": _evaluate(_prediction("b_prob.tif", np.full((2, 40, 40), 0.5, np.float32))),
    "JSON into a missing folder": _evaluate(lambda p, t: ["--json", str(p.parent / "missing" / "s.json")]),
    "resume with damaged config.yaml": lambda folder: _resume_damaged(folder),
}


def _resume_damaged(folder: Path) -> list[str]:
    run = folder / "out"
    run.mkdir()
    (run / "config.yaml").write_text("epochs: [1\n")
    save_checkpoint(run / "last.pt", UNet(UNetConfig(base_channels=4, depth=2)))
    return ["train", "--out", str(run), "--resume", "--quiet"]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_nonzero_exit_and_no_output(case: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = CASES[case](tmp_path)
    before = _files(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, f"{case}: exit 0"
    assert len(lines) == 1 and lines[0].startswith(f"biounet {argv[0]}: error: "), f"{case}: {err!r}"
    assert "Traceback" not in err
    assert _files(tmp_path) == before, f"{case}: wrote {sorted(map(str, _files(tmp_path) - before))}"
