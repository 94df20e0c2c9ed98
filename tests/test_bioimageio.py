"""BioImage Model Zoo packages: ``biounet export --format bioimageio``, bioimageio.core's own test (offline),
and loading a package back as the checkpoint it was made from."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.export.bioimageio import export_bioimageio, package_info
from biounet.infer import predict
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization
from biounet.pretrained import resolve_model

pytest.importorskip("bioimageio.core")

REPO = Path(__file__).resolve().parents[1]
ISBI_IMAGE = REPO / "data" / "isbi2012" / "images" / "00.png"
DSB_IMAGE = REPO / "tests" / "data" / "dsb2018" / "image_be269669.png"


@pytest.fixture(scope="module")
def offline() -> Iterator[None]:
    """No connection may leave this process: the export and the test must not download or check URLs."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise OSError(f"network access attempted in an offline test: {address}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        yield


@pytest.fixture(scope="module")
def isbi_package(tmp_path_factory: pytest.TempPathFactory, offline: None) -> Path:
    out = tmp_path_factory.mktemp("bioimageio") / "isbi2012-membranes.zip"
    # A shipped model by name; the export itself runs bioimageio.core's test before renaming into place.
    assert main(["export", "isbi2012-membranes", str(out), "--test-image", str(ISBI_IMAGE)]) == 0
    return out


def _rdf(package: Path) -> dict[str, Any]:
    with zipfile.ZipFile(package) as archive:
        rdf: dict[str, Any] = yaml.safe_load(archive.read("bioimageio.yaml"))
    return rdf


def test_package_describes_the_valid_unet(isbi_package: Path) -> None:
    rdf = _rdf(isbi_package)
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    inputs, outputs = rdf["inputs"][0], rdf["outputs"][0]
    y_in, y_out = inputs["axes"][2], outputs["axes"][2]
    # Depth 4, 3x3 valid convolutions: inputs 188 + 16 n, outputs 184 smaller.
    assert y_in["size"] == {"min": 188, "step": 16}
    assert y_out["size"] == {"tensor_id": "input", "axis_id": "y", "offset": -184}
    assert y_in["scale"] == pytest.approx(0.004) and y_in["unit"] == "micrometer"
    assert [p["id"] for p in inputs["preprocessing"]] == ["ensure_dtype", "scale_range"]
    assert inputs["preprocessing"][1]["kwargs"] == {"axes": ["y", "x"], "min_percentile": 1.0,
                                                    "max_percentile": 99.8}
    assert outputs["postprocessing"] == [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["import_from"] == "biounet.models.bioimageio"
    assert {c["doi"] for c in rdf["cite"]} == {"10.1007/978-3-319-24574-4_28", "10.1007/978-3-319-46723-8_49"}
    assert rdf["license"] == "MIT" and "2d" in rdf["tags"]
    assert rdf["config"]["biounet"]["checkpoint"]["normalization"]["mode"] == "percentile"
    with zipfile.ZipFile(isbi_package) as archive:
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
        cover = iio.imread(archive.read("cover.png"))
        readme = archive.read("README.md").decode()
    # Raw intensities in (before preprocessing), probabilities out (after postprocessing).
    assert test_input.shape == (1, 1, 252, 252) and test_input.max() > 100
    assert test_output.shape == (1, 2, 68, 68)
    np.testing.assert_allclose(test_output.sum(1), 1.0, rtol=1e-5)
    assert cover.shape[1] == 2 * cover.shape[0]
    assert "isbi2012-membranes" in readme and "## Validation" in readme


def test_bioimageio_core_test_passes_offline(isbi_package: Path, offline: None) -> None:
    from bioimageio.core import test_model

    summary = test_model(str(isbi_package), devices=["cpu"])
    assert summary.status == "passed", summary.format()
    tested = {d.name for d in summary.details}
    for fmt in ("pytorch_state_dict", "torchscript", "onnx"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in tested


def test_bioimageio_cli_test_passes(isbi_package: Path) -> None:
    # The command `make test` documents, in a fresh process; a proxy that nothing listens on makes any
    # attempt to reach the network fail instead of succeed.
    env = dict(os.environ, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    bioimageio = Path(sys.executable).parent / "bioimageio"
    result = subprocess.run([str(bioimageio), "test", str(isbi_package)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "status           passed" in result.stdout
    assert "Failed to validate URL" not in result.stdout + result.stderr


def test_package_loads_back_as_the_same_checkpoint(isbi_package: Path) -> None:
    original = load_checkpoint(resolve_model("isbi2012-membranes"))
    loaded = load_checkpoint(isbi_package)
    assert loaded.describe() == original.describe()
    assert loaded.extra["train_config"] == original.extra["train_config"]
    image = iio.imread(ISBI_IMAGE)[None]
    assert np.array_equal(predict(loaded, image), predict(original, image))


def test_predict_with_the_package(isbi_package: Path, tmp_path: Path) -> None:
    for model, out in ((isbi_package, tmp_path / "zip"), (resolve_model("isbi2012-membranes"), tmp_path / "pt")):
        assert main(["predict", "--model", str(model), str(ISBI_IMAGE), "--out", str(out),
                     "--outputs", "mask"]) == 0
    assert np.array_equal(iio.imread(tmp_path / "zip" / "00_mask.png"), iio.imread(tmp_path / "pt" / "00_mask.png"))


def test_instance_model_package(tmp_path: Path, offline: None) -> None:
    out = tmp_path / "nuclei.zip"
    assert main(["export", "nuclei", str(out), "--test-image", str(DSB_IMAGE)]) == 0
    rdf = _rdf(out)
    assert rdf["inputs"][0]["axes"][1]["channel_names"] == ["red", "green", "blue"]
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["background", "interior", "boundary"]
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -88
    assert "unit" not in rdf["inputs"][0]["axes"][2]  # DSB 2018 has no single pixel size
    original, loaded = load_checkpoint(resolve_model("nuclei")), load_checkpoint(out)
    assert loaded.instances == original.instances and loaded.describe() == original.describe()


@pytest.mark.parametrize(("config", "normalization", "post", "pre"), [
    (UNetConfig(padding="same", depth=2, base_channels=4, out_channels=1, norm="batch"), Normalization("zscore"),
     "sigmoid", "zero_mean_unit_variance"),
    (UNetConfig(spatial_dims=3, in_channels=2, out_channels=3, depth=2, base_channels=4), Normalization("none"),
     "softmax", None),
    # Residual encoder and an auxiliary head: the package holds the head's weights, its graphs only forward's.
    (UNetConfig(depth=2, base_channels=4, block="residual", encoder_blocks=(1, 2, 3), deep_supervision=1),
     Normalization("none"), "softmax", None),
])
def test_user_checkpoints(config: UNetConfig, normalization: Normalization, post: str, pre: str | None,
                          tmp_path: Path, offline: None) -> None:
    # An untrained user checkpoint, no card and no test image: a card is made from the checkpoint and the
    # test tensors from a synthetic image; bioimageio.core's test runs inside the export.
    save_checkpoint(tmp_path / "mine.pt", UNet(config), normalization)
    checkpoint = load_checkpoint(tmp_path / "mine.pt")
    out = tmp_path / "mine.zip"
    export_bioimageio(checkpoint, out, package_info("my model", checkpoint, None))
    rdf = _rdf(out)
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == post
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"]][1:] == ([pre] if pre else [])
    offset = rdf["outputs"][0]["axes"][2]["size"]["offset"]
    assert offset == (0 if config.padding == "same" else -config.halo_size()[0])
    loaded = load_checkpoint(out)
    image = np.random.default_rng(0).random((config.in_channels,) + (36,) * config.spatial_dims, np.float32)
    assert np.array_equal(predict(loaded, image), predict(checkpoint, image))


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_foreign_and_damaged_zips_fail_in_one_line(isbi_package: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    other = tmp_path / "other-zoo-model.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("bioimageio.yaml", yaml.safe_dump({"type": "model", "format_version": "0.5.3"}))
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(isbi_package) as source, zipfile.ZipFile(tampered, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, data[:-1] + bytes([data[-1] ^ 1]) if name == "weights.pt" else data)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(isbi_package.read_bytes()[: isbi_package.stat().st_size // 2])
    expected = {foreign: "not a biounet checkpoint", other: "not made by biounet", tampered: "sha256",
                truncated: "not a biounet checkpoint"}
    for path, words in expected.items():
        err = _one_line_error(capsys, ["predict", "--model", str(path), str(ISBI_IMAGE), "--out",
                                       str(tmp_path / "out")])
        assert str(path) in err and words in err, err
        with pytest.raises(BiounetError, match=words):
            load_checkpoint(path)


def test_export_without_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "bioimageio.core", None)  # import raises ImportError
    err = _one_line_error(capsys, ["export", "isbi2012-membranes", str(tmp_path / "m.zip")])
    assert "pip install 'biounet[bioimageio]'" in err
    assert not (tmp_path / "m.zip").exists()


def test_export_format_from_suffix_or_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(capsys, ["export", "isbi2012-membranes", str(tmp_path / "model.bin")])
    assert "--format" in err
    # An explicit flag wins over the suffix: ONNX into a file named .zip.
    assert main(["export", "--format", "onnx", "isbi2012-membranes", str(tmp_path / "model.zip")]) == 0
    assert not zipfile.is_zipfile(tmp_path / "model.zip")
