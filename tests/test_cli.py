"""The ``biounet`` command line: predict, info, export, and its error contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from biounet import __version__
from biounet.cli.main import main
from biounet.infer import predict
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "untrained.pt"
    save_checkpoint(path, UNet(UNetConfig(base_channels=4, depth=3)), Normalization("percentile"))
    return path


def test_predict_on_a_real_isbi_slice(checkpoint: Path, isbi_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", "--model", str(checkpoint), str(isbi_image), "--out", str(out), "--tile", "300"]) == 0
    probs = tifffile.imread(out / "00_prob.tif")
    mask = iio.imread(out / "00_mask.png")
    assert probs.shape == (2, 512, 512) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)
    assert mask.shape == (512, 512) and mask.dtype == np.uint8
    assert np.array_equal(mask, probs.argmax(0))
    # The CLI applies the checkpoint's normalisation, exactly as the Python API does.
    ckpt = load_checkpoint(checkpoint)
    image = iio.imread(isbi_image)[None]
    expected = predict(ckpt.model, image, tile=300, normalization=ckpt.normalization)
    assert np.abs(probs - expected).max() <= 1e-6


def test_directories_and_globs_and_tta(checkpoint: Path, tmp_path: Path) -> None:
    images = tmp_path / "imgs"
    images.mkdir()
    for name, shape in [("a.png", (40, 50)), ("b.tif", (33, 21)), ("c.png", (64, 64, 3))]:
        data = np.random.randint(0, 255, shape, np.uint8)
        (iio.imwrite if name.endswith("png") else tifffile.imwrite)(images / name, data)
    (images / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(checkpoint), str(images), "--out", str(out), "--tta"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_mask.png", "a_prob.tif", "b_mask.png", "b_prob.tif", "c_mask.png", "c_prob.tif"]
    assert tifffile.imread(out / "b_prob.tif").shape == (2, 33, 21)
    out2 = tmp_path / "out2"
    assert main(["predict", "--model", str(checkpoint), str(images / "*.png"), "--out", str(out2)]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["a_mask.png", "a_prob.tif", "c_mask.png", "c_prob.tif"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("biounet", path=str(Path(sys.executable).parent))
    assert exe is not None
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_entry_point_version_help_and_info(checkpoint: Path) -> None:
    assert run_cli("--version").stdout.strip() == f"biounet {__version__}"
    helped = run_cli("predict", "--help")
    assert helped.returncode == 0 and "--tta" in helped.stdout and "--batch-size" in helped.stdout
    info = run_cli("info", str(checkpoint))
    assert info.returncode == 0
    for key in ("base_channels: 4", "normalization:", "class_names:", "default_tile:"):
        assert key in info.stdout


@pytest.mark.parametrize(("args", "named"), [
    (("predict", "x.png", "--out", "o"), "the following arguments are required: --model"),
    (("predict", "x.png", "--model", "nuclei", "--out", "o", "--tile", "0"), "--tile: must be a positive integer"),
    (("predict", "x.png", "--model", "nuclei", "--out", "o", "--tile", "ten"), "--tile: must be a positive integer"),
    (("segment", "x.png"), "invalid choice: 'segment'"),
])
def test_a_usage_error_is_one_line_and_exit_2(args: tuple[str, ...], named: str) -> None:
    result = run_cli(*args)  # argparse's own would print the usage block above the error
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and named in result.stderr and "--help" in result.stderr


@pytest.mark.parametrize("case", ["missing input", "corrupt input", "missing model", "foreign model",
                                  "wrong channels", "nan input"])
def test_bad_input_one_line_exit_2_and_no_outputs(case: str, checkpoint: Path, tmp_path: Path,
                                                   isbi_image: Path) -> None:
    model, inputs = str(checkpoint), [str(isbi_image)]
    bad = tmp_path / "bad.png"
    if case == "missing input":
        inputs.append(str(tmp_path / "absent.png"))
        named = "absent.png"
    elif case == "corrupt input":
        bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
        inputs.append(str(bad))
        named = "bad.png"
    elif case == "missing model":
        model, named = str(tmp_path / "none.pt"), "none.pt"
    elif case == "foreign model":
        (tmp_path / "foreign.pt").write_bytes(b"PK\x03\x04 not really")
        model, named = str(tmp_path / "foreign.pt"), "foreign.pt"
    elif case == "wrong channels":
        # Grey + alpha: two channels for a one-channel model (a 2-page TIFF would be a stack of 2D planes).
        iio.imwrite(tmp_path / "two.png", np.zeros((30, 30, 2), np.uint8))
        inputs.append(str(tmp_path / "two.png"))
        named = "two.png"
    else:
        data = np.ones((30, 30), np.float32)
        data[0, 0] = np.nan
        tifffile.imwrite(tmp_path / "nan.tif", data)
        inputs.append(str(tmp_path / "nan.tif"))
        named = "nan.tif"
    out = tmp_path / "out"
    result = run_cli("predict", "--model", model, *inputs, "--out", str(out))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and named in errors[0] and "Traceback" not in result.stderr
    assert result.stderr.rstrip().endswith(errors[0])
    produced = list(out.iterdir()) if out.exists() else []
    # Inputs are checked before anything is written; a NaN found while reading leaves complete files only.
    assert all(p.name.startswith("00_") for p in produced) and not any(".tmp" in p.name for p in produced)
    if case != "nan input":
        assert produced == []


def test_export_onnx_matches_torch(checkpoint: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    target = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), str(target)]) == 0
    model = load_checkpoint(checkpoint).model.eval()
    session = ort.InferenceSession(str(target))
    import torch

    for size in (92, 140):
        x = np.random.rand(2, 1, size, size + 16).astype(np.float32)
        (logits,) = session.run(None, {"image": x})
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        assert logits.shape == expected.shape and np.abs(logits - expected).max() < 1e-4
