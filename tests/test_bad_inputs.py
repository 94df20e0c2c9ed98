"""A folder of deliberately bad inputs through ``train``, ``predict``, ``evaluate``, ``plan``, ``export`` and
the napari reader.

Every command case must end in exactly one line on stderr that names the problem, a non-zero exit code, no
traceback, and no output written (not even a leftover temporary file). The napari reader returns ``None``
for what is not a biounet output and raises a one-line ``BiounetError`` naming the file for an output it
cannot show. A command interrupted (SIGINT, SIGTERM) between writing a temporary file and renaming it exits
130 or 143 with one line and leaves no temporary or partial file behind. "One line" is what a terminal
shows: a progress bar that clears its line when it closes is not one.

Inputs that are valid however odd (an image of 1 x 1 pixel, a NIfTI volume one slice thick, labels of any
integer or float dtype holding whole non-negative values) are not here: they predict and train.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
import yaml

from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.object_size import ObjectSize
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


def _checkpoint(write: Callable[[Path], None], name: str = "model.pt") -> Callable[[Path], list[str]]:
    """``predict`` on a good image with the model file ``name`` that ``write`` makes."""
    def build(folder: Path) -> list[str]:
        image = folder / "in" / "a.png"
        image.parent.mkdir()
        iio.imwrite(image, GOOD)
        write(folder / name)
        return ["predict", "--model", str(folder / name), str(image), "--out", str(folder / "out")]
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


# ---------------------------------------------------------------------------------------------------------
# More cases. Helpers first, then the cases of each kind added to CASES.

NET = UNetConfig(base_channels=4, depth=2)


def _model3d(folder: Path) -> Path:
    path = folder / "model3d.pt"
    save_checkpoint(path, UNet(UNetConfig(spatial_dims=3, base_channels=2, depth=1)))
    return path


def _predict_with(image_name: str, write: Callable[[Path], None], *extra: str,
                  model: Callable[[Path], Path] = _model) -> Callable[[Path], list[str]]:
    """:func:`_predict` with more arguments, or another model."""
    def build(folder: Path) -> list[str]:
        path = folder / "in" / image_name
        path.parent.mkdir(exist_ok=True)
        write(path)
        return ["predict", "--model", str(model(folder)), str(path), "--out", str(folder / "out"), *extra]
    return build


def _laughs(name: str = "lol") -> str:
    """A "billion laughs" YAML mapping: ``{name}9`` expands to 10**9 strings through 90 aliases."""
    lines = [f"{name}0: &{name}0 [{', '.join(['lol'] * 10)}]"]
    lines += [f"{name}{i}: &{name}{i} [{', '.join([f'*{name}{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


# --- bioimage.io packages (predict --model x.zip) ---

def _weights() -> bytes:
    buffer = io.BytesIO()
    torch.save(UNet(NET).state_dict(), buffer)
    return buffer.getvalue()


def _rdf(weights: bytes, source: str = "weights.pt") -> dict[str, Any]:
    """A description as biounet's exporter writes it, with only what reading it back needs."""
    return {"type": "model", "format_version": "0.5.3",
            "weights": {"pytorch_state_dict": {"source": source, "sha256": hashlib.sha256(weights).hexdigest()}},
            "config": {"biounet": {"format": "biounet.checkpoint", "format_version": 1,
                                   "checkpoint": {"model": NET.to_dict(),
                                                  "class_names": ["background", "foreground"]}}}}


def _write_package(path: Path, description: str | bytes, entries: dict[str, bytes],
                   name: str = "bioimageio.yaml") -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo(name), description, compress_type=zipfile.ZIP_DEFLATED)
        for entry, data in entries.items():
            # A ZipInfo keeps the name as given: ZipFile.write would clean "../" and "/" away.
            archive.writestr(zipfile.ZipInfo(entry), data, compress_type=zipfile.ZIP_DEFLATED)


def _good_package(path: Path) -> None:
    weights = _weights()
    _write_package(path, yaml.safe_dump(_rdf(weights)), {"weights.pt": weights})


def _package(make: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    return _checkpoint(make, "model.zip")


def _package_with(source: str, entry: str | None = None, edit: Callable[[dict[str, Any]], Any] | None = None,
                  extra: dict[str, bytes] | None = None, name: str = "bioimageio.yaml") -> Callable[[Path], None]:
    """A package whose weights are named ``source`` and stored as ``entry``, its description changed by
    ``edit``, with ``extra`` entries."""
    def make(path: Path) -> None:
        weights = _weights()
        rdf = _rdf(weights, source)
        if edit is not None:
            rdf = edit(rdf) or rdf
        _write_package(path, yaml.safe_dump(rdf), {entry or source: weights, **(extra or {})}, name)
    return make


def _patch_headers(path: Path, entry: str, field: str, value: int) -> None:
    """Sets a field of ``entry``'s local header and central directory record: ``size`` (uncompressed) or
    ``flags``."""
    fmt, local, central = {"size": ("<I", 22, 24), "flags": ("<H", 6, 8)}[field]
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        struct.pack_into(fmt, data, archive.getinfo(entry).header_offset + local, value)
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46:at + 46 + length]) == entry.encode():
            struct.pack_into(fmt, data, at + central, value)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def _bomb_weights(path: Path) -> None:
    _good_package(path)
    _patch_headers(path, "weights.pt", "size", 0xF000_0000)  # says 3.75 GiB, as a zip bomb's headers do


def _bomb_description(path: Path) -> None:
    # An honest header this time: 64 MiB of YAML that deflates to 64 KiB.
    weights = _weights()
    _write_package(path, yaml.safe_dump(_rdf(weights)).encode() + b"\n" * 2**26, {"weights.pt": weights})


def _encrypted_weights(path: Path) -> None:
    _good_package(path)
    _patch_headers(path, "weights.pt", "flags", 0x1)  # "encrypted": zipfile wants a password


def _corrupt_deflate(path: Path) -> None:
    _good_package(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("weights.pt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 100:start + 400] = bytes(300)
    path.write_bytes(bytes(data))


def _laughing_rdf(path: Path) -> None:
    weights = _weights()
    rdf = _rdf(weights)
    rdf["config"]["biounet"]["checkpoint"]["laughs"] = "LAUGHS"
    _write_package(path, _laughs() + yaml.safe_dump(rdf).replace("laughs: LAUGHS", "laughs: *lol9"),
                   {"weights.pt": weights})


def _circular_rdf(path: Path) -> None:
    weights = _weights()
    rdf = _rdf(weights)
    rdf["config"]["biounet"]["checkpoint"]["model"]["kernel_sizes"] = "CIRCLE"
    text = yaml.safe_dump(rdf).replace("checkpoint:\n", "checkpoint: &me\n").replace("kernel_sizes: CIRCLE",
                                                                                       "kernel_sizes: [*me]")
    _write_package(path, text, {"weights.pt": weights})


def _weights_on_disk(path: Path) -> None:
    torch.save(UNet(NET).state_dict(), path.parent / "outside.pt")
    _package_with(str(path.parent / "outside.pt"), entry="weights.pt")(path)


def _truncated_package(path: Path) -> None:
    _good_package(path)
    path.write_bytes(path.read_bytes()[:2000])


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(rdf: dict[str, Any]) -> None:
        node = rdf
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return edit


CASES |= {
    "package: weights entry climbs out (../)": _package(_package_with("../weights.pt")),
    "package: weights entry with an absolute name": _package(_package_with("/tmp/weights.pt")),
    "package: weights named by a file on disk": _package(_weights_on_disk),
    "package: another entry climbs out (../../)": _package(_package_with("weights.pt",
                                                                         extra={"../../evil.txt": b"evil"})),
    "package: entry names a drive": _package(_package_with("weights.pt", extra={"C:/evil.txt": b"evil"})),
    "package: weights declare 3.75 GiB (zip bomb)": _package(_bomb_weights),
    "package: description inflates to 64 MiB (zip bomb)": _package(_bomb_description),
    "package: encrypted weights": _package(_encrypted_weights),
    "package: corrupt deflate stream": _package(_corrupt_deflate),
    "package: not a zip": _package(lambda p: p.write_bytes(b"PK\x03\x04 this is not a zip at all")),
    "package: truncated zip": _package(_truncated_package),
    "package: rdf.yaml without weights": _package(_package_with("weights.pt", edit=_drop("weights"),
                                                                name="rdf.yaml")),
    "package: rdf.yaml without config.biounet": _package(_package_with("weights.pt",
                                                                       edit=_drop("config", "biounet"),
                                                                       name="rdf.yaml")),
    "package: rdf.yaml without the weights' source": _package(_package_with(
        "weights.pt", edit=_drop("weights", "pytorch_state_dict", "source"), name="rdf.yaml")),
    "package: checkpoint config without model": _package(_package_with(
        "weights.pt", edit=_drop("config", "biounet", "checkpoint", "model"), name="rdf.yaml")),
    "package: rdf.yaml is a list": _package(lambda p: _write_package(p, "- a\n- b\n", {}, "rdf.yaml")),
    "package: rdf.yaml is not YAML": _package(lambda p: _write_package(p, "weights: {a: [\n", {}, "rdf.yaml")),
    "package: weights fail their sha256": _package(_package_with(
        "weights.pt", edit=lambda rdf: rdf["weights"]["pytorch_state_dict"].update(sha256="0" * 64))),
    "package: weights are not tensors": _package(lambda p: _write_package(
        p, yaml.safe_dump(_rdf(pickle.dumps(Path("/")))), {"weights.pt": pickle.dumps(Path("/"))})),
    "package: alias bomb in bioimageio.yaml": _package(_laughing_rdf),
    "package: bioimageio.yaml contains itself": _package(_circular_rdf),
}


# --- YAML alias bombs, self-reference and deep nesting (config, --set, checkpoints, resumed runs) ---

def _config_text(text: str) -> Callable[[Path, Path], list[str]]:
    def edit(images: Path, labels: Path) -> list[str]:
        config = images.parent / "config.yaml"
        config.write_text(text)
        return ["--config", str(config)]
    return edit


def _laughing_checkpoint(path: Path) -> None:
    save_checkpoint(path, UNet(NET))
    payload = torch.load(path, weights_only=True)
    payload["config"] = _laughs() + "model: {base_channels: 4, depth: 2, kernel_sizes: *lol9}\n"
    torch.save(payload, path)


def _resume_with(text: str) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        run = folder / "out"
        run.mkdir()
        (run / "config.yaml").write_text(text)
        save_checkpoint(run / "last.pt", UNet(NET))
        return ["train", "--out", str(run), "--resume", "--quiet"]
    return build


def _init_with(train_config: str) -> Callable[[Path, Path], list[str]]:
    """Fine-tuning (--init) a checkpoint whose stored training config is ``train_config``."""
    def edit(images: Path, labels: Path) -> list[str]:
        start = images.parent / "start.pt"
        save_checkpoint(start, UNet(NET), extra={"train_config": train_config})
        return ["--init", str(start)]
    return edit


_FLOW_LAUGHS = "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], " + ", ".join(
    f"&{c} [{','.join([f'*{p}'] * 10)}]" for p, c in zip("bcdefgh", "cdefghi", strict=True)) + "]"

CASES |= {
    "alias bomb in --config": _train(_config_text(_laughs())),
    "alias bomb under a known key in --config": _train(_config_text(_laughs() + "model: {kernel_sizes: *lol9}\n")),
    "alias bomb in --set": _train(lambda i, lbl: ["--set", f"model.kernel_sizes={_FLOW_LAUGHS}"]),
    "--config that contains itself": _train(_config_text("model: &m {base_channels: 4, kernel_sizes: [*m]}\n")),
    "--config nested 100000 deep": _train(_config_text("model: " + "[" * 100_000 + "]" * 100_000 + "\n")),
    "alias bomb in a checkpoint's config": _checkpoint(_laughing_checkpoint),
    "alias bomb in a resumed run's config.yaml": _resume_with(_laughs()),
    "resumed config.yaml that contains itself": _resume_with("augment: &a {elastic: *a}\n"),
    "alias bomb in the training config of an --init model": _train(_init_with(_laughs())),
    "training config of an --init model is a list": _train(_init_with("- 1\n- 2\n")),
}


# --- zarr stores with missing chunks or inconsistent metadata (predict) ---

def _zarr(data: np.ndarray, chunks: tuple[int, ...] | None = None, meta: dict[str, Any] | None = None,
          after: Callable[[Path], Any] | None = None) -> Callable[[Path], None]:
    """Writes ``data`` as a zarr 2 array store, then changes its ``.zarray`` by ``meta`` and its files by
    ``after``."""
    def write(path: Path) -> None:
        import zarr

        array = zarr.open_array(str(path), mode="w", shape=data.shape, chunks=chunks or data.shape,
                                dtype=data.dtype, fill_value=0, zarr_format=2)
        array[...] = data
        (path / ".zarray").write_text(json.dumps({**json.loads((path / ".zarray").read_text()), **(meta or {})}))
        if after is not None:
            after(path)
    return write


def _garbage(name: str, data: bytes = b"garbage") -> Callable[[Path], None]:
    return lambda path: (path / name).write_bytes(data)


def _ome_group(axes: str, path_in_store: str = "0", data: np.ndarray = GOOD) -> Callable[[Path], None]:
    """An OME-Zarr image whose metadata names ``axes`` and the array at ``path_in_store``."""
    def write(path: Path) -> None:
        import zarr

        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        root.create_array("0", shape=data.shape, dtype=data.dtype, fill_value=0)[...] = data
        root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": a.lower()} for a in axes],
                                      "datasets": [{"path": path_in_store}]}]
    return write


def _zarr_beside(write: Callable[[Path], None], spec: str = "") -> Callable[[Path], list[str]]:
    """``in/a.zarr`` written by ``write``, with a good store ``in/b.zarr`` beside it; ``spec`` follows the
    store's name on the command line."""
    def build(folder: Path) -> list[str]:
        (folder / "in").mkdir()
        _zarr(GOOD)(folder / "in" / "b.zarr")
        write(folder / "in" / "a.zarr")
        return ["predict", "--model", str(_model(folder)), f"{folder / 'in' / 'a.zarr'}{spec}", "--out",
                str(folder / "out")]
    return build


CASES |= {
    "zarr: chunk missing, no fill value": _predict("a.zarr", _zarr(np.full((80, 80), 9, np.uint8), (40, 40),
                                                                   {"fill_value": None},
                                                                   lambda p: (p / "0.0").unlink())),
    "zarr: corrupt chunk": _predict("a.zarr", _zarr(GOOD, (20, 20), after=_garbage("1.1"))),
    "zarr: corrupt chunk, zarr output": _predict_with("a.zarr", _zarr(GOOD, (20, 20), after=_garbage("1.1")),
                                                      "--out-format", "zarr"),
    "zarr: chunk shorter than its shape": _predict("a.zarr", _zarr(GOOD, meta={"compressor": None},
                                                                   after=_garbage("0.0", bytes(100)))),
    "zarr: .zarray shape longer than its chunks": _predict("a.zarr", _zarr(GOOD, meta={"shape": [40, 40, 3]})),
    "zarr: .zarray with an unknown dtype": _predict("a.zarr", _zarr(GOOD, meta={"dtype": "<q9"})),
    "zarr: .zarray with object dtype": _predict("a.zarr", _zarr(GOOD, meta={"dtype": "|O"})),
    "zarr: complex dtype": _predict("a.zarr", _zarr(np.ones((40, 40), np.complex64))),
    "zarr: .zarray is not JSON": _predict("a.zarr", _zarr(GOOD, after=_garbage(".zarray", b"{not json"))),
    "zarr: OME axes longer than the array": _predict("a.zarr", _ome_group("zyx")),
    "zarr: OME axes shorter than the array": _predict("a.zarr", _ome_group("x")),
    "zarr: OME dataset path leads out of the store": _zarr_beside(_ome_group("yx", "../b.zarr")),
    "zarr: array spec climbs out of the store": _zarr_beside(_ome_group("yx"), ":../b.zarr"),
    "zarr: array of 0 x 40 pixels": _predict("a.zarr", _zarr(np.zeros((0, 40), np.uint8), (1, 40))),
}


# --- OME-TIFF, ImageJ and tifffile metadata that lie about the axes or sizes (predict) ---

def _ome(order: str = "XYZCT", x: int = 40, z: int = 1, c: int = 1, t: int = 1) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
            f'<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="{order}" Type="uint8" SizeX="{x}" '
            f'SizeY="40" SizeZ="{z}" SizeC="{c}" SizeT="{t}"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
            '<TiffData/></Pixels></Image></OME>')


def _tiff_described(description: str, shape: tuple[int, ...] = (40, 40)) -> Callable[[Path], None]:
    return lambda path: tifffile.imwrite(path, np.full(shape, 100, np.uint8), description=description,
                                         metadata=None)


CASES |= {
    "OME-XML names 5 planes, the file has 1": _predict("a.ome.tif", _tiff_described(_ome(z=5))),
    "OME-XML names 3 channels, the file has 2": _predict("a.ome.tif", _tiff_described(_ome("XYCZT", c=3),
                                                                                      (2, 40, 40))),
    "OME-XML plane size differs from the pages": _predict("a.ome.tif", _tiff_described(_ome(x=50))),
    "OME-XML with SizeZ 0": _predict("a.ome.tif", _tiff_described(_ome(z=0))),
    "OME-XML names 2 planes, the file has 4": _predict("a.ome.tif", _tiff_described(_ome(z=2), (4, 40, 40))),
    "ImageJ metadata names 5 slices, the file has 1": _predict("a.tif", _tiff_described(
        "ImageJ=1.11a\nimages=5\nslices=5\n")),
    "tifffile axes shorter than the shape": _predict("a.tif", _tiff_described(
        json.dumps({"shape": [40, 40], "axes": "ZYX"}))),
    "tifffile shape larger than the data": _predict("a.tif", _tiff_described(json.dumps({"shape": [5, 40, 40]}))),
}


# --- symlink loops ---

def _made(path: Path, make: Callable[[Path], Any]) -> Path:
    make(path)
    return path


def _predict_to(out: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    """Predicting a good image into the output ``out`` makes."""
    def build(folder: Path) -> list[str]:
        argv = _predict("a.png", lambda p: iio.imwrite(p, GOOD))(folder)
        return [*argv[:-1], str(out(folder))]
    return build

def _loop(path: Path) -> None:
    path.symlink_to(path.name)


def _folder_with_loop(folder: Path) -> list[str]:
    (folder / "in").mkdir()
    iio.imwrite(folder / "in" / "a.png", GOOD)
    _loop(folder / "in" / "b.png")
    return ["predict", "--model", str(_model(folder)), str(folder / "in"), "--out", str(folder / "out")]


def _glob_through_loop(folder: Path) -> list[str]:
    (folder / "in").mkdir()
    iio.imwrite(folder / "in" / "a.png", GOOD)
    (folder / "in" / "again").symlink_to(".")  # in/again/again/... is in/ again
    return ["predict", "--model", str(_model(folder)), str(folder / "in" / "**" / "*.png"), "--out",
            str(folder / "out")]


CASES |= {
    "input folder holds a symlink loop": _folder_with_loop,
    "input file is a link to itself": _predict("a.png", _loop),
    "input glob through a folder link loop": _glob_through_loop,
    "training images hold a symlink loop": _train(lambda i, lbl: _loop(i / "03.png")),
    "training labels hold a symlink loop": _train(lambda i, lbl: _loop(lbl / "03.png")),
    "evaluated predictions hold a symlink loop": _evaluate(lambda p, t: _loop(p / "b_prob.tif")),
    "--out is a symlink loop": _predict_to(lambda folder: _made(folder / "out", _loop)),
}


# --- outputs that are files, folders, or the input itself ---

def _file(path: Path) -> Path:
    path.write_text("someone's file\n")
    return path


def _folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "keep.txt").write_text("someone's folder\n")
    return path


def _plan(edit: Callable[[Path, Path], list[str] | None]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        images, labels = write_disc_dataset(folder / "data", 3, size=40)
        extra = edit(images, labels) or []
        return ["plan", "--images", str(images), "--labels", str(labels), "--epochs", "1", *extra]
    return build


def _export(output: Callable[[Path], Path], *extra: str,
            write: Callable[[Path], None] = lambda p: save_checkpoint(p, UNet(NET))) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        write(folder / "model.pt")
        return ["export", str(folder / "model.pt"), str(output(folder)), *extra]
    return build


def _zarr_output_over(target: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def build(folder: Path) -> list[str]:
        (folder / "in").mkdir()
        iio.imwrite(folder / "in" / "a.png", GOOD)
        return ["predict", "--model", str(_model(folder)), str(folder / "in" / "a.png"), "--out",
                str(target(folder)), "--out-format", "zarr"]
    return build


def _zarr_input_beside_its_output(folder: Path) -> list[str]:
    (folder / "in").mkdir()
    _zarr(GOOD)(folder / "in" / "a.zarr")
    return ["predict", "--model", str(_model(folder)), str(folder / "in" / "a.zarr"), "--out", str(folder / "in"),
            "--out-format", "zarr"]


CASES |= {
    "predict --out is a file": _predict_to(lambda folder: _file(folder / "out")),
    "predict zarr store over a file": _zarr_output_over(lambda folder: _file(folder / "a.zarr")),
    "predict zarr store over a folder of other things": _zarr_output_over(lambda folder: _folder(folder / "a.zarr")),
    "predict zarr store over its own input": _zarr_input_beside_its_output,
    "train --out is a file": _train(lambda i, lbl: ["--out", str(_file(i.parent / "run"))]),
    "plan --out is a folder": _plan(lambda i, lbl: ["--out", str(_folder(i.parent / "plan.yaml"))]),
    "plan --out in a missing folder": _plan(lambda i, lbl: ["--out", str(i.parent / "missing" / "plan.yaml")]),
    "plan --out under a file": _plan(lambda i, lbl: ["--out", str(_file(i.parent / "file") / "plan.yaml")]),
    "evaluate --json is a folder": _evaluate(lambda p, t: ["--json", str(_folder(p.parent / "s.json"))]),
    "evaluate --csv under a file": _evaluate(lambda p, t: ["--csv", str(_file(p.parent / "file") / "s.csv")]),
    "export to a folder that is a file": _export(lambda folder: _file(folder / "file") / "m.onnx"),
    "export OUT is a folder": _export(lambda folder: _folder(folder / "m.onnx")),
    "export with an unknown suffix": _export(lambda folder: folder / "m.bin"),
    "export a checkpoint with an alias bomb": _export(lambda folder: folder / "m.onnx", write=_laughing_checkpoint),
    "export a package with a missing card": _export(lambda folder: folder / "m.zip", "--card",
                                                    "/nonexistent/card.md"),
    "export a package with a negative pixel size": _export(lambda folder: folder / "m.zip", "--pixel-size", "-1"),
}


# --- images of 0 and 1 pixels, and volumes 1 voxel thick ---
# (1 x 1 images and NIfTI volumes one slice thick are valid for predict and train; test_tiling.py tests the 1 x 1
# image with instance norm, which crashed.)

def _nifti(shape: tuple[int, ...]) -> Callable[[Path], None]:
    import nibabel

    return lambda path: nibabel.save(nibabel.Nifti1Image(np.full(shape, 100, np.uint8), np.eye(4)), str(path))


def _hdf5(data: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with h5py.File(path, "w") as f:
            f["raw"] = data
    return write


def _pair(image: Callable[[Path], None], label: Callable[[Path], None],
          image_name: str = "00.tif", label_name: str | None = None) -> Callable[[Path, Path], None]:
    """Replaces training pair 00 by ``image`` and ``label``."""
    def edit(images: Path, labels: Path) -> None:
        for old in [*images.glob("00.*"), *labels.glob("00.*")]:
            old.unlink()
        image(images / image_name)
        label(labels / (label_name or image_name))
    return edit


CASES |= {
    "image of 0 x 0 pixels (HDF5)": _predict("a.h5", _hdf5(np.zeros((0, 0), np.uint8))),
    "image of 0 x 40 pixels (HDF5)": _predict("a.h5", _hdf5(np.zeros((0, 40), np.uint8))),
    "image of 0 x 40 pixels (TIFF)": _predict("a.tif", lambda p: tifffile.imwrite(p, np.zeros((0, 40), np.uint8))),
    "NIfTI of 0 voxels": _predict("a.nii.gz", _nifti((0, 40, 1))),
    "volume of 0 slices for a 3D model (HDF5)": _predict_with("a.h5", _hdf5(np.zeros((0, 40, 40), np.uint8)),
                                                              model=_model3d),
    "2D image of 1 x 1 pixel for a 3D model": _predict_with("a.tif", lambda p: tifffile.imwrite(
        p, np.full((1, 1), 100, np.uint8)), model=_model3d),
    # ImageJ keeps no Z axis of length 1: the file is a 2D image. (A NIfTI volume 1 slice thick is a volume, and
    # valid; so are such volumes for training.)
    "ImageJ stack of 1 slice for a 3D model": _predict_with("a.tif", lambda p: tifffile.imwrite(
        p, np.full((1, 40, 40), 100, np.uint8), imagej=True, metadata={"axes": "ZYX"}), model=_model3d),
    "train: image of 0 x 40 pixels": _train(_pair(_hdf5(np.zeros((0, 40), np.uint8)),
                                                   _hdf5(np.zeros((0, 40), np.uint8)), "00.h5")),
    "train: volumes of 0 slices (HDF5)": _train(_pair(_hdf5(np.zeros((0, 40, 40), np.uint8)),
                                                      _hdf5(np.zeros((0, 40, 40), np.uint8)), "00.h5")),
}


# --- labels of every dtype, where the values are invalid ---

def _labels_of(values: np.ndarray, *extra: str) -> Callable[[Path], list[str]]:
    """Training with every label a TIFF of ``values`` (a disc of them on 0); ``extra`` arguments follow."""
    def edit(images: Path, labels: Path) -> list[str]:
        for i, old in enumerate(sorted(labels.iterdir())):
            old.unlink()
            label = np.zeros((40, 40), values.dtype)
            label[10:20, 10:20] = values[i % len(values)]
            label[25:35, 25:35] = values[-1]
            tifffile.imwrite(labels / f"{i:02d}.tif", label)
        return list(extra)
    return _train(edit)


def _truth(value: np.ndarray, *extra: str) -> Callable[[Path, Path], list[str]]:
    """Evaluating against a TIFF truth of ``value``."""
    def edit(pred: Path, truth: Path) -> list[str]:
        (truth / "a.png").unlink()
        tifffile.imwrite(truth / "a.tif", value)
        return list(extra)
    return edit


CLASSES = ("--set", "labels.kind=classes")
CASES |= {
    "int8 labels with -1": _labels_of(np.array([1, -1], np.int8)),
    "int16 labels with -300": _labels_of(np.array([1, -300], np.int16)),
    "int32 labels with -1 as classes": _labels_of(np.array([1, -1], np.int32), *CLASSES),
    "int64 labels with -2**40": _labels_of(np.array([1, -2**40], np.int64)),
    "uint8 binary labels with two foregrounds": _labels_of(np.array([1, 2], np.uint8), "--set", "labels.kind=binary"),
    "uint16 class 40000": _labels_of(np.array([1, 40000], np.uint16), *CLASSES),
    "uint32 class 4294967295": _labels_of(np.array([1, 2**32 - 1], np.uint32), *CLASSES),
    "int64 class 2**62": _labels_of(np.array([1, 2**62], np.int64), *CLASSES),
    "uint64 ids beyond int64": _labels_of(np.array([1, 2**64 - 1], np.uint64)),
    "float16 labels with fractions": _labels_of(np.array([1.0, 0.5], np.float16)),
    "float32 labels with -1": _labels_of(np.array([1.0, -1.0], np.float32)),
    "float64 labels of 1e20": _labels_of(np.array([1.0, 1e20], np.float64)),
    "float64 labels with infinity": _labels_of(np.array([1.0, np.inf], np.float64)),
    "uint8 classes beyond the model's outputs": _labels_of(np.array([1, 5], np.uint8), *CLASSES, "--set",
                                                           "model.out_channels=3"),
    "evaluate: int16 truth with -1": _evaluate(_truth(np.full((40, 40), -1, np.int16))),
    "evaluate: float32 truth with fractions": _evaluate(_truth(np.full((40, 40), 0.5, np.float32))),
    "evaluate: uint32 truth of class 2**31": _evaluate(_truth(np.full((40, 40), 2**31, np.uint32), "--truth-kind",
                                                              "classes")),
}


# --- object sizes (--object-size, --pixel-size) ---


def _sized_model(folder: Path) -> Path:
    """A model that records the size of its objects (20 px, pixels of unknown size)."""
    path = folder / "sized.pt"
    save_checkpoint(path, UNet(NET), object_size=ObjectSize(20.0))
    return path


def _png(path: Path) -> None:
    iio.imwrite(path, GOOD)


CASES |= {
    "object size for a model that records none": _predict_with("a.png", _png, "--object-size", "20"),
    "auto object size for a model that records none": _predict_with("a.png", _png, "--object-size", "auto"),
    "object size 0": _predict_with("a.png", _png, "--object-size", "0", model=_sized_model),
    "object size not a number": _predict_with("a.png", _png, "--object-size", "big", model=_sized_model),
    "object size 9x off the model's": _predict_with("a.png", _png, "--object-size", "180", model=_sized_model),
    "pixel size for a model of uncalibrated images": _predict_with("a.png", _png, "--pixel-size", "0.5",
                                                                   model=_sized_model),
    "object size and pixel size": _predict_with("a.png", _png, "--object-size", "20", "--pixel-size", "0.5",
                                                model=_sized_model),
    "auto object size with zarr outputs for a model that records none": _predict_with(
        "a.png", _png, "--object-size", "auto", "--out-format", "zarr"),
    "object size with zarr outputs, 9x off the model's": _predict_with(
        "a.png", _png, "--object-size", "180", "--out-format", "zarr", model=_sized_model),
    "object size for an empty image": _predict_with("a.h5", _hdf5(np.zeros((0, 40), np.uint8)), "--object-size", "20",
                                                    model=_sized_model),
}

def _shown(stderr: str) -> list[str]:
    """The lines a terminal shows of ``stderr``: a progress bar redraws its line after ``\r`` and clears it."""
    return [shown for line in stderr.split("\n") if (shown := line.rsplit("\r", 1)[-1]).strip()]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


class _TooSlow(BaseException):
    """Raised by :func:`_deadline`; a BaseException, so that no handler of the CLI takes it for its own."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Fails a case that hangs (an alias bomb walked value by value) instead of hanging the test run."""
    def expire(signum: int, frame: Any) -> None:
        raise _TooSlow(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_there_are_at_least_100_cases() -> None:
    assert len(CASES) + len(READER_CASES) + len(INTERRUPTS) + len(UNWRITABLE) >= 100


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_line_nonzero_exit_and_no_output(case: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    argv = CASES[case](tmp_path)
    before = _files(tmp_path)
    capsys.readouterr()
    with _deadline(60):
        code = main(argv)
    err = capsys.readouterr().err
    lines = _shown(err)
    assert code != 0, f"{case}: exit 0"
    assert len(lines) == 1 and lines[0].startswith(f"biounet {argv[0]}: error: "), f"{case}: {err!r}"
    assert "Traceback" not in err
    assert _files(tmp_path) == before, f"{case}: wrote {sorted(map(str, _files(tmp_path) - before))}"


def test_the_package_helper_makes_packages_that_load(tmp_path: Path) -> None:
    """The package cases fail for what they change, not because the helper's packages never loaded."""
    _good_package(tmp_path / "model.zip")
    assert load_checkpoint(tmp_path / "model.zip").config == NET
    _package_with("weights.pt", name="rdf.yaml")(tmp_path / "rdf.zip")
    assert load_checkpoint(tmp_path / "rdf.zip").config == NET


# ---------------------------------------------------------------------------------------------------------
# The napari reader: None for what is not a biounet output, a one-line BiounetError naming the file for an
# output it cannot show, never another exception.

def _store(edit: Callable[[Any], Any] | None = None, name: str = "a.zarr") -> Callable[[Path], str]:
    """A prediction store as ``biounet predict --out-format zarr`` writes one, changed by ``edit(root)``."""
    def build(folder: Path) -> str:
        import zarr

        root = zarr.open_group(str(folder / name), mode="w", zarr_format=2)
        for image, data, axes in (("prob", np.full((2, 40, 40), 0.5, np.float32), "cyx"),
                                  ("mask", np.zeros((40, 40), np.uint8), "yx")):
            group = root.create_group(image)
            group.create_array("0", shape=data.shape, dtype=data.dtype, fill_value=0)[...] = data
            group.attrs["multiscales"] = [{
                "version": "0.4", "name": image, "axes": [{"name": a} for a in axes],
                "datasets": [{"path": "0",
                              "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}]}]}]
        root.create_array("blocks", shape=(1, 1), dtype="uint8", fill_value=0)[...] = 1
        root.attrs["biounet"] = {"job": {}}
        if edit is not None:
            edit(root)
        return str(folder / name)
    return build


def _scales(image: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[Any], None]:
    """Changes the ``multiscales[0]`` of an image of the store."""
    def edit(root: Any) -> None:
        scales = root[image].attrs["multiscales"]
        change(scales[0])
        root[image].attrs["multiscales"] = scales
    return edit


def _output(name: str, write: Callable[[Path], Any]) -> Callable[[Path], str]:
    def build(folder: Path) -> str:
        write(folder / name)
        return str(folder / name)
    return build


def _replace_array(image: str, data: np.ndarray) -> Callable[[Any], None]:
    def edit(root: Any) -> None:
        del root[image]["0"]
        root[image].create_array("0", shape=data.shape, dtype=data.dtype, fill_value=0)[...] = data
    return edit


def _two_channel_mask(root: Any) -> None:
    _replace_array("mask", np.zeros((2, 40, 40), np.uint8))(root)
    _scales("mask", lambda s: s.update(axes=[{"name": a} for a in "cyx"], datasets=[{"path": "0"}]))(root)


READER_CASES: dict[str, tuple[Callable[[Path], str | list[str]], str]] = {
    "prob TIFF that is text": (_output("a_prob.tif", lambda p: p.write_text("not a TIFF\n")), "error"),
    "truncated mask PNG": (_output("a_mask.png", _png_truncated), "error"),
    "prob TIFF without a class axis": (_output("a_prob.tif", lambda p: tifffile.imwrite(
        p, np.full((40, 40), 0.5, np.float32))), "error"),
    "prob TIFF of integers": (_output("a_prob.tif", lambda p: tifffile.imwrite(p, np.ones((2, 40, 40), np.int32))),
                              "error"),
    "instances TIFF of floats": (_output("a_instances.tif", lambda p: tifffile.imwrite(
        p, np.full((40, 40), 1.5, np.float32))), "error"),
    "mask TIFF of 0 x 40 pixels": (_output("a_mask.tif", lambda p: tifffile.imwrite(p, np.zeros((0, 40), np.uint8))),
                                   "error"),
    "OME-TIFF prob that names 5 planes and has 2": (_output("a_prob.tif", _tiff_described(_ome(z=5), (2, 40, 40))),
                                                    "error"),
    "ImageJ mask that names 5 slices and has 1": (_output("a_mask.tif", _tiff_described(
        "ImageJ=1.11a\nimages=5\nslices=5\n")), "error"),
    "prob TIFF that is a link to itself": (_output("a_prob.tif", _loop), "none"),
    "a folder named like a prob TIFF": (_output("a_prob.tif", _folder), "none"),
    "not an output's name": (_output("a.tif", lambda p: tifffile.imwrite(p, GOOD)), "none"),
    "zarr store that is a link loop": (_output("a.zarr", _loop), "none"),
    "zarr store without OME metadata": (_store(lambda root: root["prob"].attrs.pop("multiscales")), "error"),
    "zarr store with empty multiscales": (_store(lambda root: root["mask"].attrs.update(multiscales=[])), "error"),
    "zarr axes longer than the array": (_store(_scales("prob", lambda s: s["axes"].insert(0, {"name": "t"}))),
                                        "error"),
    "zarr scale shorter than the array": (_store(_scales("mask", lambda s: s["datasets"][0].update(
        coordinateTransformations=[{"type": "scale", "scale": [1.0]}]))), "error"),
    "zarr scale negative": (_store(_scales("mask", lambda s: s["datasets"][0].update(
        coordinateTransformations=[{"type": "scale", "scale": [-1.0, 1.0]}]))), "error"),
    "zarr prob without a channel axis": (_store(_scales("prob", lambda s: s.update(
        axes=[{"name": a} for a in "zyx"]))), "error"),
    "zarr mask of floats": (_store(_replace_array("mask", np.full((40, 40), 0.5, np.float32))), "error"),
    "zarr mask with 2 channels": (_store(_two_channel_mask), "error"),
    "zarr prob/0 missing": (_store(lambda root: root["prob"].__delitem__("0")), "error"),
    "zarr .zarray not JSON": (_store(lambda root: (Path(str(root.store.root)) / "mask" / "0" / ".zarray")
                                     .write_text("{not json")), "error"),
    "zarr prob of complex numbers": (_store(_replace_array("prob", np.ones((2, 40, 40), np.complex64))), "error"),
    "zarr store unfinished (chunks missing)": (_store(lambda root: root["blocks"].__setitem__((0, 0), 0)), "error"),
    "a list with one damaged output": (lambda folder: [_store()(folder), _output(
        "b_mask.png", _png_truncated)(folder)], "error"),
}


def test_the_store_helper_makes_stores_the_reader_opens(tmp_path: Path) -> None:
    """The store cases fail for what they change, not because the helper's stores never opened."""
    from biounet.napari.reader import get_reader, read_outputs

    path = _store()(tmp_path)
    assert get_reader(path) is read_outputs
    assert [kind for _, _, kind in read_outputs(path)] == ["image", "labels"]


@pytest.mark.parametrize("case", sorted(READER_CASES))
def test_napari_reader_offers_nothing_or_fails_in_one_line(case: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from biounet.napari.reader import get_reader, read_outputs

    build, expected = READER_CASES[case]
    target = build(tmp_path)
    before = _files(tmp_path)
    capsys.readouterr()
    reader = get_reader(target)
    if expected == "none":
        assert reader is None, f"{case}: offered a reader"
    else:
        assert reader is read_outputs, f"{case}: offered no reader"
        with pytest.raises(BiounetError) as failure:
            read_outputs(target)
        message = str(failure.value)
        bad = target[-1] if isinstance(target, list) else target
        assert "\n" not in message and message.startswith(bad), f"{case}: {message!r}"
    assert capsys.readouterr().err == "", f"{case}: printed to stderr"
    assert _files(tmp_path) == before


# ---------------------------------------------------------------------------------------------------------
# SIGINT and SIGTERM between a temporary file's writing and its renaming: exit 130 or 143, one line, and no
# temporary or partial file anywhere. The command runs in a child process that sends the signal to itself
# when atomic_path renames its temporary file to a name matching the case's pattern.

INTERRUPTER = r"""
import fnmatch, os, signal, sys, time
from pathlib import Path

# As in a terminal: a child of a background job (make test &) inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

signum, pattern, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
rename = os.replace


def replace(src, dst, *args, **kwargs):
    # atomic_path's temporary files are hidden and hold the process id.
    if Path(src).name.startswith(".") and f".{os.getpid()}." in Path(src).name \
            and fnmatch.fnmatch(Path(dst).name, pattern):
        os.kill(os.getpid(), signum)
        time.sleep(2)  # the signal's handler raises in here; without one (or deferred) the rename goes ahead
    return rename(src, dst, *args, **kwargs)


os.replace = replace
from biounet.cli.main import main

sys.exit(main(argv))
"""


def _interrupt_train(folder: Path) -> list[str]:
    return _train(lambda i, lbl: None)(folder)


def _interrupt_predict(folder: Path) -> list[str]:
    return _predict("a.png", lambda p: iio.imwrite(p, GOOD))(folder)


def _interrupt_evaluate(folder: Path) -> list[str]:
    return _evaluate(lambda p, t: ["--json", str(p.parent / "scores.json")])(folder)


def _interrupt_plan(folder: Path) -> list[str]:
    return _plan(lambda i, lbl: ["--out", str(i.parent / "plan.yaml")])(folder)


def _interrupt_export(folder: Path) -> list[str]:
    return _export(lambda f: f / "model.onnx")(folder)


# (command, the file name the signal arrives at)
_WRITERS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "train": (_interrupt_train, "*.pt"), "predict": (_interrupt_predict, "*_prob.tif"),
    "evaluate": (_interrupt_evaluate, "*.json"), "plan": (_interrupt_plan, "*.yaml"),
    "export": (_interrupt_export, "*.onnx"),
}
INTERRUPTS = [(command, signum) for command in _WRITERS for signum in (signal.SIGINT, signal.SIGTERM)]


@pytest.mark.parametrize(("command", "signum"), INTERRUPTS,
                         ids=[f"{c}-{signal.Signals(s).name}" for c, s in INTERRUPTS])
def test_a_signal_while_writing_leaves_no_temporary_or_partial_file(command: str, signum: int,
                                                                    tmp_path: Path) -> None:
    build, pattern = _WRITERS[command]
    argv = build(tmp_path)
    before = _files(tmp_path)
    # Bytes: text mode would turn the progress bars' "\r" into line ends.
    done = subprocess.run([sys.executable, "-c", INTERRUPTER, str(signum), pattern, *argv], capture_output=True,
                          timeout=300, cwd=tmp_path)
    stderr = done.stderr.decode()
    lines = _shown(stderr)
    assert done.returncode == 128 + signum, f"exit {done.returncode}: {stderr!r}"
    assert len(lines) == 1 and lines[0].startswith(f"biounet {command}: interrupted"), stderr
    assert "Traceback" not in stderr
    written = _files(tmp_path) - before
    assert not [p for p in written if p.name.startswith(".") or ".tmp" in p.name], sorted(map(str, written))
    if command == "train":
        # Training saves a resumable last.pt when interrupted; every checkpoint left is whole.
        for path in written:
            if path.suffix == ".pt":
                load_checkpoint(path)
    else:
        # The interrupted write is the command's output: nothing of it stays.
        assert not [p for p in written if fnmatch.fnmatch(p.name, pattern)], sorted(map(str, written))


# ---------------------------------------------------------------------------------------------------------
# Folders the command may not write to. Root ignores permission bits, so as root the child runs without the
# capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): still uid 0, it can read its own files
# under tmp_path, but writes only where the bits allow, as any user.

UNWRITABLE_CHILD = r"""
import sys
from pathlib import Path

folder, argv = Path(sys.argv[1]), sys.argv[2:]
try:
    (folder / "probe").touch()
except PermissionError:
    pass
else:
    (folder / "probe").unlink()
    sys.exit(77)  # the folder is writable after all: nothing to test
from biounet.cli.main import main

sys.exit(main(argv))
"""


def _without_override() -> None:
    """In the child, before exec: drop root's permission overrides from the bounding set, which exec keeps."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for capability in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _locked(folder: Path) -> Path:
    folder.mkdir()
    folder.chmod(0o555)
    return folder


UNWRITABLE: dict[str, Callable[[Path], tuple[list[str], Path]]] = {
    "predict": lambda folder: ([*_predict("a.png", lambda p: iio.imwrite(p, GOOD))(folder)[:-1],
                                str(_locked(folder / "out"))], folder / "out"),
    "train": lambda folder: (_train(lambda i, lbl: ["--out", str(_locked(folder / "locked") / "run")])(folder),
                             folder / "locked"),
    "evaluate": lambda folder: (_evaluate(lambda p, t: ["--json", str(_locked(folder / "locked") / "s.json")])(
        folder), folder / "locked"),
    "plan": lambda folder: (_plan(lambda i, lbl: ["--out", str(_locked(folder / "locked") / "plan.yaml")])(folder),
                            folder / "locked"),
    "export": lambda folder: (_export(lambda f: _locked(f / "locked") / "m.onnx")(folder), folder / "locked"),
}


@pytest.mark.parametrize("command", sorted(UNWRITABLE))
def test_an_unwritable_output_folder_gives_one_line(command: str, tmp_path: Path) -> None:
    argv, locked = UNWRITABLE[command](tmp_path)
    before = _files(tmp_path)
    try:
        done = subprocess.run([sys.executable, "-c", UNWRITABLE_CHILD, str(locked), *argv], capture_output=True,
                              timeout=300, preexec_fn=_without_override if os.geteuid() == 0 else None)
    finally:
        locked.chmod(0o755)
    if done.returncode == 77:
        pytest.skip("cannot make a folder unwritable here (a user or capability that ignores permission bits)")
    stderr = done.stderr.decode()
    lines = _shown(stderr)
    assert done.returncode != 0, "exit 0"
    assert len(lines) == 1 and lines[0].startswith(f"biounet {command}: error: "), stderr
    assert "Traceback" not in stderr
    assert _files(tmp_path) == before, sorted(map(str, _files(tmp_path) - before))
