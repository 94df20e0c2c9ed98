"""Stacks for 2D models: multi-page TIFFs, hyperstacks, HDF5/zarr with axes, NIfTI; ``--axes``; palette PNGs;
hidden temporary files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from biounet.cli.main import build_parser, main
from biounet.errors import BiounetError
from biounet.infer import predict
from biounet.io.axes import check_axes, plan_stack
from biounet.io.files import expand_inputs, list_image_files
from biounet.io.readers import probe_image, read_image
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization
from biounet.pretrained import resolve_model

ISBI_IMAGES = Path(__file__).resolve().parents[1] / "data" / "isbi2012" / "images"
CROP = 96  # keeps the shipped model fast on the CPU; the slices stay real EM


def isbi_slices(first: int, count: int) -> np.ndarray:
    return np.stack([iio.imread(ISBI_IMAGES / f"{i:02d}.png")[:CROP, :CROP] for i in range(first, first + count)])


@pytest.fixture(scope="module")
def isbi_singles() -> dict[int, np.ndarray]:
    """The shipped model's prediction of each of ISBI slices 25-29, one slice at a time."""
    ckpt = load_checkpoint(resolve_model("isbi2012-membranes"))
    return {25 + z: predict(ckpt.model, s[None], normalization=ckpt.normalization)
            for z, s in enumerate(isbi_slices(25, 5))}


def small_checkpoint(folder: Path, in_channels: int = 1, name: str = "small.pt") -> Path:
    """A random-weight valid 2D U-Net with percentile normalisation (so that per-slice statistics matter)."""
    path = folder / name
    save_checkpoint(path, UNet(UNetConfig(in_channels=in_channels, base_channels=4, depth=2)),
                    Normalization("percentile"))
    return path


def single_predictions(checkpoint: Path, planes: list[np.ndarray]) -> list[np.ndarray]:
    """Each ``(C, Y, X)`` plane predicted on its own, as a file holding only it would be."""
    ckpt = load_checkpoint(checkpoint)
    return [predict(ckpt.model, p, normalization=ckpt.normalization) for p in planes]


def run_predict(*args: str | Path) -> int:
    return main(["predict", *(str(a) for a in args)])


# --- the ISBI user's story: a plain multi-page TIFF for the shipped 2D model ---------------------------------

@pytest.mark.parametrize("pages", [3, 5])
def test_plain_tiff_stack_of_isbi_slices_is_predicted_slice_by_slice(
        pages: int, tmp_path: Path, isbi_singles: dict[int, np.ndarray]) -> None:
    stack = isbi_slices(25, pages)
    with warnings.catch_warnings():
        # tifffile (2026.3) stores a (3, Y, X) array as planar RGB and warns that this default will change.
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(tmp_path / "volume.tif", stack)
    out = tmp_path / "out"
    assert run_predict("--model", "isbi2012-membranes", tmp_path / "volume.tif", "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["volume_mask.tif", "volume_prob.tif"]
    with tifffile.TiffFile(out / "volume_prob.tif") as tif:
        assert tif.series[0].axes == "CZYX"
        probs = tif.series[0].asarray()
    assert probs.shape == (2, pages, CROP, CROP) and probs.dtype == np.float32
    with tifffile.TiffFile(out / "volume_mask.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        mask = tif.series[0].asarray()
    assert mask.shape == (pages, CROP, CROP) and mask.dtype == np.uint8
    assert np.array_equal(mask, probs.argmax(0))
    for z in range(pages):
        assert np.abs(probs[:, z] - isbi_singles[25 + z]).max() <= 1e-6


# --- other stacks, with a small random model -----------------------------------------------------------------

def test_imagej_tzyx_hyperstack_is_predicted_plane_by_plane(tmp_path: Path) -> None:
    checkpoint = small_checkpoint(tmp_path)
    data = np.random.randint(0, 4000, (2, 3, 40, 36)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "movie.tif", data, imagej=True, resolution=(2.0, 4.0),
                     metadata={"axes": "TZYX", "spacing": 3.0})
    out = tmp_path / "out"
    assert run_predict("--model", checkpoint, tmp_path / "movie.tif", "--out", out) == 0
    with tifffile.TiffFile(out / "movie_prob.tif") as tif:
        assert tif.series[0].axes == "CTZYX"
        probs = tif.series[0].asarray()
    with tifffile.TiffFile(out / "movie_mask.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX"
        assert tif.imagej_metadata["spacing"] == 3.0                # the input's calibration, kept
        assert tuple(float(r) for r in tif.pages.first.resolution) == (2.0, 4.0)
        mask = tif.series[0].asarray()
    assert probs.shape == (2, 2, 3, 40, 36) and mask.shape == (2, 3, 40, 36)
    planes = [data[t, z][None] for t in range(2) for z in range(3)]
    for (t, z), expected in zip(np.ndindex(2, 3), single_predictions(checkpoint, planes), strict=True):
        assert np.abs(probs[:, t, z] - expected).max() <= 1e-6


def test_nifti_volume_for_a_2d_model_keeps_voxel_order_and_header(tmp_path: Path) -> None:
    checkpoint = small_checkpoint(tmp_path)
    data = (np.random.rand(30, 34, 4) * 1000).astype(np.int16)
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    assert run_predict("--model", checkpoint, tmp_path / "scan.nii.gz", "--out", out) == 0
    prob, mask = nib.load(out / "scan_prob.nii.gz"), nib.load(out / "scan_mask.nii.gz")
    probs = np.asarray(prob.dataobj)
    assert probs.shape == (30, 34, 4, 2) and mask.shape == (30, 34, 4)
    assert np.allclose(prob.affine, affine) and np.allclose(mask.affine, affine)
    # A 2D model sees the planes of the slice axis k, each as (i, j).
    expected = single_predictions(checkpoint, [data[:, :, k][None] for k in range(4)])
    for k in range(4):
        assert np.abs(np.moveaxis(probs[:, :, k], -1, 0) - expected[k]).max() <= 1e-6


def test_hdf5_zyxc_by_axes_or_ilastik_axistags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = small_checkpoint(tmp_path, in_channels=2)
    data = np.random.rand(3, 40, 44, 2).astype(np.float32)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f.create_dataset("raw", data=data)
    tags = {"axes": [{"key": k, "typeFlags": 2, "resolution": 0, "description": ""} for k in "zyxc"]}
    with h5py.File(tmp_path / "ilastik.h5", "w") as f:
        f.create_dataset("exported_data", data=data).attrs["axistags"] = json.dumps(tags)
    expected = single_predictions(checkpoint, [data[z].transpose(2, 0, 1) for z in range(3)])
    # Without metadata a 4D array fits no 2D layout; the error says how to name its axes.
    assert run_predict("--model", checkpoint, f"{tmp_path / 'plain.h5'}:raw", "--out", tmp_path / "o") == 2
    assert "--axes" in capsys.readouterr().err and not (tmp_path / "o").exists()
    sources: list[tuple[str | Path, list[str]]] = [(f"{tmp_path / 'plain.h5'}:raw", ["--axes", "ZYXC"]),
                                                   (tmp_path / "ilastik.h5", [])]
    for source, extra in sources:
        out = tmp_path / f"out_{len(extra)}"
        assert run_predict("--model", checkpoint, source, "--out", out, *extra) == 0
        probs = tifffile.imread(out / f"{Path(str(source).split(':')[0]).stem}_prob.tif")
        assert probs.shape == (2, 3, 40, 44)
        for z in range(3):
            assert np.abs(probs[:, z] - expected[z]).max() <= 1e-6


def test_zarr_stack_by_axes_or_ome_zarr_multiscales(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = small_checkpoint(tmp_path)
    data = np.random.randint(0, 255, (5, 36, 40)).astype(np.uint8)
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=data.shape, dtype=data.dtype)
    plain[:] = data
    ome = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w")
    ome.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}, {"path": "1"}],
                                 "axes": [{"name": n, "type": "space"} for n in "zyx"]}]
    ome.create_array("0", shape=data.shape, dtype=data.dtype)[:] = data
    ome.create_array("1", shape=(5, 18, 20), dtype=data.dtype)[:] = 0
    # Today's convention without metadata: a 3D array for a 2D model is (C, Y, X), 5 channels here
    # (4 would pass as RGBA, as today).
    assert run_predict("--model", checkpoint, tmp_path / "plain.zarr", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "5 channel(s)" in err and "--axes" in err
    expected = single_predictions(checkpoint, [data[z][None] for z in range(5)])
    for source, extra in [(tmp_path / "plain.zarr", ["--axes", "zyx"]), (tmp_path / "ome.zarr", [])]:
        out = tmp_path / f"out_{len(extra)}"
        assert run_predict("--model", checkpoint, source, "--out", out, *extra) == 0
        probs = tifffile.imread(out / f"{source.stem}_prob.tif")
        assert probs.shape == (2, 5, 36, 40)                          # the OME-Zarr image at full resolution
        for z in range(5):
            assert np.abs(probs[:, z] - expected[z]).max() <= 1e-6


def test_three_pages_for_a_three_channel_model_are_ambiguous(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = small_checkpoint(tmp_path, in_channels=3)
    data = np.random.randint(0, 255, (3, 40, 40)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "pages.tif", data, photometric="minisblack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(tmp_path / "planar.tif", data)             # tifffile's default: planar "RGB"
    for name in ("pages.tif", "planar.tif"):
        assert run_predict("--model", checkpoint, tmp_path / name, "--out", tmp_path / "o") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0]
        assert "channels or a stack" in err[0] and "--axes CYX or --axes ZYX" in err[0]
    assert not (tmp_path / "o").exists()
    # Told, it is one 3-channel image; an RGB TIFF (samples per pixel) needs no telling.
    assert run_predict("--model", checkpoint, tmp_path / "pages.tif", "--out", tmp_path / "o", "--axes", "CYX") == 0
    tifffile.imwrite(tmp_path / "rgb.tif", data.transpose(1, 2, 0), photometric="rgb")
    assert run_predict("--model", checkpoint, tmp_path / "rgb.tif", "--out", tmp_path / "o") == 0
    expected = single_predictions(checkpoint, [data])[0]
    for stem in ("pages", "rgb"):
        probs = tifffile.imread(tmp_path / "o" / f"{stem}_prob.tif")
        assert probs.shape == (2, 40, 40) and np.abs(probs - expected).max() <= 1e-6
        assert (tmp_path / "o" / f"{stem}_mask.png").exists()


@pytest.mark.parametrize(("axes", "message"), [
    ("ZYXQ", "unknown letter(s) Q"),
    ("ZZX", "repeat Z"),
    ("ZYXC", "4 letter(s) but the array has 3 dimension(s)"),
    ("ZCY", "need both Y and X"),
])
def test_bad_axes_are_one_line_errors(axes: str, message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = small_checkpoint(tmp_path)
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((3, 20, 20), np.uint8), photometric="minisblack")
    assert run_predict("--model", checkpoint, tmp_path / "stack.tif", "--out", tmp_path / "o", "--axes", axes) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stack.tif" in err[0] and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_device_accepts_any_name_for_resolve_device_to_check() -> None:
    for device in ("cpu", "cuda:1", "mps"):
        args = build_parser().parse_args(["predict", "x.png", "--model", "m.pt", "--out", "o", "--device", device])
        assert args.device == device


# --- the plan, by hand ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("axes", "shape", "dims", "channels", "resolved", "batch", "out"), [
    ("?YX", (5, 8, 9), 2, 1, "ZYX", "Z", "ZYX"),           # plain multi-page TIFF, 1-channel model: a stack
    ("?YX", (5, 8, 9), 2, 3, "ZYX", "Z", "ZYX"),           # 5 pages match no 3-channel model: still a stack
    ("?YX", (3, 8, 9), 2, 3, None, "", ""),                # ... but 3 pages are ambiguous
    ("?YXC", (4, 8, 9, 3), 2, 1, "ZYXC", "Z", "ZYX"),      # RGB pages: the channels are named
    ("TZCYX", (1, 4, 1, 8, 9), 2, 1, "-Z-YX", "Z", "ZYX"),  # singletons dropped
    ("TZCYX", (2, 4, 3, 8, 9), 3, 3, "TZCYX", "T", "TZYX"),
    ("Z?YX", (6, 2, 8, 9), 3, 1, "ZTYX", "T", "ZTYX"),       # a 3D model: the unnamed axis is time
    ("??YX", (2, 3, 8, 9), 2, 1, None, "", ""),            # two unnamed axes
    ("YX", (8, 9), 3, 1, None, "", ""),                    # no Z for a 3D model
])
def test_plan_stack(axes: str, shape: tuple[int, ...], dims: int, channels: int, resolved: str | None,
                    batch: str, out: str) -> None:
    if resolved is None:
        with pytest.raises(BiounetError, match=r"--axes|no Z axis"):
            plan_stack(axes, shape, dims, channels, "f.tif")
        return
    plan = plan_stack(axes, shape, dims, channels, "f.tif")
    assert (plan.axes, plan.batch_axes, plan.out_axes) == (resolved, batch, out)
    array = np.arange(int(np.prod(shape))).reshape(shape)
    items = list(plan.items(array))
    assert len(items) == int(np.prod(plan.batch_shape))
    assert items[0][1].shape == (plan.channels, *plan.spatial_shape)
    # Items put back in stored order give the array itself (channels moved first).
    stacked = np.zeros((plan.channels, *plan.batch_shape, *plan.spatial_shape), array.dtype)
    for index, item in items:
        region: tuple[slice | int, ...] = (slice(None), *index)
        stacked[region] = item
    squeezed = array.reshape([n for n, a in zip(shape, plan.axes, strict=True) if a != "-"])
    kept = plan.axes.replace("-", "")
    expected = np.moveaxis(squeezed, kept.index("C"), 0) if "C" in kept else squeezed[None]
    assert np.array_equal(plan.to_stored_order(stacked), expected)


def test_check_axes_upper_cases() -> None:
    assert check_axes("zyxc", (2, 3, 4, 5)) == "ZYXC"


# --- palette PNGs and hidden temporary files -----------------------------------------------------------------

def test_palette_png_label_reads_as_its_indices(tmp_path: Path) -> None:
    labels = np.random.randint(0, 4, (20, 30)).astype(np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    image.save(tmp_path / "label.png")
    read = read_image(tmp_path / "label.png")
    assert read.shape == (1, 20, 30) and read.dtype == np.uint8 and np.array_equal(read[0], labels)
    assert probe_image(tmp_path / "label.png").shape == (1, 20, 30)


def test_hidden_temporary_files_are_not_inputs(tmp_path: Path) -> None:
    iio.imwrite(tmp_path / "00.png", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / ".00_prob.1234.tmp.tif", np.zeros((2, 8, 8), np.float32))
    iio.imwrite(tmp_path / ".00_mask.1234.tmp.png", np.zeros((8, 8), np.uint8))
    assert list_image_files(tmp_path) == [tmp_path / "00.png"]
    assert expand_inputs([str(tmp_path)]) == [tmp_path / "00.png"]
    assert expand_inputs([str(tmp_path / "*")]) == [tmp_path / "00.png"]
    with pytest.raises(BiounetError, match="no image files match"):
        expand_inputs([str(tmp_path / ".*.tif")])


def test_channel_segments_one_channel_of_several(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--channel N``: a fluorescence file of several channels (here a ZCYX hyperstack and a CYX image)
    is segmented as the file of channel N alone would be, a grey image that a 3-channel model repeats into
    RGB, on both output paths; the objects table still measures every channel."""
    checkpoint = small_checkpoint(tmp_path, in_channels=3)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 2, 40, 44), dtype=np.uint8)                     # Z, C, Y, X
    tifffile.imwrite(tmp_path / "hyper.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(tmp_path / "two.tif", data[0], imagej=True, metadata={"axes": "CYX"})
    # Without it, two channels cannot be a 3-channel model's input, and the message says what to do.
    assert run_predict("--model", checkpoint, tmp_path / "two.tif", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two.tif" in err[0] and "2 channel(s)" in err[0] and "--channel N" in err[0]
    for channel in (0, 1):
        expected = single_predictions(checkpoint, [np.repeat(data[z, channel][None], 3, 0) for z in range(3)])
        out = tmp_path / f"c{channel}"
        assert run_predict("--model", checkpoint, tmp_path / "hyper.tif", tmp_path / "two.tif", "--out", out,
                           "--channel", str(channel), "--outputs", "prob,instances,objects") == 0
        stack = tifffile.imread(out / "hyper_prob.tif")
        assert stack.shape == (2, 3, 40, 44)
        for z in range(3):
            assert np.abs(stack[:, z] - expected[z]).max() <= 1e-6
        assert np.abs(tifffile.imread(out / "two_prob.tif") - expected[0]).max() <= 1e-6
        header = (out / "two_objects.csv").read_text().splitlines()[0].split(",")
        assert {"mean_intensity_0", "mean_intensity_1", "max_intensity_1"} <= set(header)
        assert "mean_intensity_2" not in header
        # Block by block into zarr: the same probabilities.
        store = tmp_path / f"c{channel}.zarr"
        assert run_predict("--model", checkpoint, tmp_path / "two.tif", "--out", store, "--channel", str(channel),
                           "--out-format", "zarr", "--block", "16") == 0
        assert np.abs(np.asarray(zarr.open_group(str(store), mode="r")["prob/0"]) - expected[0]).max() <= 1e-6


@pytest.mark.parametrize(("channel", "message"), [
    ("2", "there is no channel 2: the image (axes CYX and shape (2, 20, 20)) has channels 0 to 1"),
    ("-1", "must be a channel index from 0, got -1"),
    ("one", "must be a channel index from 0, got one"),
])
def test_a_channel_the_file_lacks_is_a_one_line_error(channel: str, message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = small_checkpoint(tmp_path, in_channels=3)
    tifffile.imwrite(tmp_path / "two.tif", np.zeros((2, 20, 20), np.uint8), imagej=True, metadata={"axes": "CYX"})
    try:
        code = run_predict("--model", checkpoint, tmp_path / "two.tif", "--out", tmp_path / "o", "--channel", channel)
    except SystemExit as exc:  # a usage error: argparse exits itself
        code = int(str(exc.code))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o").exists()


def test_plan_stack_channel() -> None:
    """A channel picks one plane of the C axis; an unnamed axis is the channels once a channel is asked for
    (three unnamed pages are otherwise ambiguous for a 3-channel model); a grey image has channel 0 only."""
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    plan = plan_stack("ZCYX", data.shape, 2, 3, channel=2)
    assert plan.channels == 1 and plan.stored_channels == 3
    items = list(plan.items(data))
    assert [i for i, _ in items] == [(0,), (1,)]
    assert all(np.array_equal(item, data[z, 2:3]) for (z,), item in items)
    with pytest.raises(BiounetError, match="channels or a stack"):
        plan_stack("?YX", (3, 4, 5), 2, 3)
    assert plan_stack("?YX", (3, 4, 5), 2, 3, channel=1).axes == "CYX"
    assert plan_stack("YX", (4, 5), 2, 3, channel=0).channel is None
    with pytest.raises(BiounetError, match="has one channel"):
        plan_stack("YX", (4, 5), 2, 3, channel=1)


@pytest.mark.parametrize(("name", "write", "in_channels", "said"), [
    ("stains3.tif", lambda p, d: tifffile.imwrite(p, d[:3], imagej=True, metadata={"axes": "CYX"}), 3,
     "reads them as red, green and blue"),
    ("stains4.tif", lambda p, d: tifffile.imwrite(p, d, imagej=True, metadata={"axes": "CYX"}), 3,
     "the fourth left out as alpha"),
    ("stains3-grey.tif", lambda p, d: tifffile.imwrite(p, d[:3], imagej=True, metadata={"axes": "CYX"}), 1,
     "a colour picture turned grey"),
    ("rgb.tif", lambda p, d: tifffile.imwrite(p, np.moveaxis(d[:3], 0, -1), photometric="rgb"), 3, None),
    ("rgba.png", lambda p, d: iio.imwrite(p, np.moveaxis(d, 0, -1)), 3, None),
])
def test_separate_channels_read_as_colour_are_noted(name: str, write: object, in_channels: int, said: str | None,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fluorescence file of 3 or 4 channels (an ImageJ hyperstack's) is read by an RGB or grey model as a
    colour picture, as before, but a note on stderr says so and how to segment one stain; a colour picture
    (an RGB TIFF, an RGBA PNG) gets none, nor does a picked channel."""
    data = np.random.default_rng(1).integers(0, 255, (4, 24, 28), dtype=np.uint8)
    write(tmp_path / name, data)  # type: ignore[operator]
    checkpoint = small_checkpoint(tmp_path, in_channels=in_channels)
    assert run_predict("--model", checkpoint, tmp_path / name, "--out", tmp_path / "o") == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    if said is None:
        assert notes == []
    else:
        assert len(notes) == 1 and name in notes[0] and said in notes[0] and "--channel N" in notes[0]
        assert run_predict("--model", checkpoint, tmp_path / name, "--out", tmp_path / "c", "--channel", "0") == 0
        assert "note:" not in capsys.readouterr().err
