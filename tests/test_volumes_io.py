"""Volumes in and out: TIFF stacks, NIfTI, HDF5 and zarr readers, writers, and predict/evaluate on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr

from biounet.atomic import atomic_path
from biounet.cli.main import main
from biounet.data.examples import pair_files
from biounet.errors import BiounetError
from biounet.infer import predict
from biounet.io.files import expand_inputs, file_stem
from biounet.io.readers import guess_spatial_dims, probe_image, read_image, read_image_meta
from biounet.io.writers import write_prediction
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.normalization import Normalization

HIPPOCAMPUS = Path(__file__).parent / "data" / "hippocampus"


def volume(shape: tuple[int, ...] = (6, 7, 8), dtype: type = np.uint16) -> np.ndarray:
    return np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)


def write_nifti(path: Path, data: np.ndarray, zooms: tuple[float, ...] = (2.0, 1.0, 1.0)) -> nib.Nifti1Image:
    """A NIfTI file with distinct sform (code 2, rotated) and qform (code 1), so that both must survive."""
    sform = np.array([[0.0, -zooms[1], 0, 10], [zooms[0], 0, 0, -5], [0, 0, zooms[2], 7], [0, 0, 0, 1]])
    image = nib.Nifti1Image(data, sform)
    image.header.set_qform(np.diag([*zooms[:3], 1.0]), code=1)
    image.header.set_sform(sform, code=2)
    image.header.set_zooms((*zooms, *([1.0] * (data.ndim - 3))))
    image.header["descrip"] = b"biounet test"
    nib.save(image, path)
    return nib.load(path)


def assert_one_line_naming(info: pytest.ExceptionInfo[BiounetError], name: str) -> None:
    assert name in str(info.value) and "\n" not in str(info.value)


# --- TIFF stacks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("array", "kwargs", "expected"), [
    (volume(), {"metadata": {"axes": "ZYX"}}, lambda a: a[None]),
    (volume(), {}, lambda a: a[None]),                                        # plain multi-page stack
    (volume((2, 6, 7, 8)), {"metadata": {"axes": "CZYX"}, "photometric": "minisblack"}, lambda a: a),
    (volume((6, 2, 7, 8)), {"imagej": True, "metadata": {"axes": "ZCYX"}}, lambda a: a.transpose(1, 0, 2, 3)),
    (volume((6, 7, 8, 3), np.uint8), {"photometric": "rgb"}, lambda a: np.moveaxis(a, -1, 0)),
])
def test_tiff_stacks_read_as_channels_zyx(tmp_path: Path, array: np.ndarray, kwargs: dict[str, object],
                                          expected: object) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, array, **kwargs)  # type: ignore[arg-type]
    image, meta = read_image_meta(path, 3)
    want = expected(array)  # type: ignore[operator]
    assert image.dtype == array.dtype and np.array_equal(image, want)
    assert probe_image(path, 3).shape == want.shape
    assert meta.format == "tiff" and meta.spacing == (1.0, 1.0, 1.0)


def test_imagej_calibration_gives_the_spacing(tmp_path: Path) -> None:
    path = tmp_path / "calibrated.tif"
    tifffile.imwrite(path, volume(), imagej=True, resolution=(1 / 0.5, 1 / 0.25),
                     metadata={"axes": "ZYX", "spacing": 2.5, "unit": "um"})
    assert read_image_meta(path, 3)[1].spacing == pytest.approx((2.5, 0.25, 0.5))
    assert probe_image(path, 3).spacing == pytest.approx((2.5, 0.25, 0.5))
    assert guess_spatial_dims(path) == 3
    # Print resolution (dots per inch) is not a pixel size.
    tifffile.imwrite(tmp_path / "dpi.tif", volume(), resolution=(300, 300), resolutionunit="INCH")
    assert read_image_meta(tmp_path / "dpi.tif", 3)[1].spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(("array", "kwargs", "dims", "message"), [
    (np.zeros((7, 8), np.uint8), {}, 3, "2D image .* 3D model"),
    (np.zeros((2, 7, 8), np.uint8), {"imagej": True, "metadata": {"axes": "CYX"}}, 3, "2D image .* 3D model"),
    (volume(), {"metadata": {"axes": "ZYX"}}, 2, "axes ZYX .* as a 2D image"),
    (volume((6, 2, 7, 8)), {}, 3, "cannot tell the Z axis from channels"),
    (volume((3, 6, 7, 8)), {"imagej": True, "metadata": {"axes": "TZYX"}}, 3, "axes TZYX .* as a 3D image"),
])
def test_tiffs_that_do_not_fit_the_model_are_errors(tmp_path: Path, array: np.ndarray, kwargs: dict[str, object],
                                                    dims: int, message: str) -> None:
    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, array, **kwargs)  # type: ignore[arg-type]
    for reader in (read_image, probe_image):
        with pytest.raises(BiounetError, match=message) as info:
            reader(path, dims)
        assert_one_line_naming(info, "odd.tif")


# --- NIfTI ---------------------------------------------------------------------------------------------------

def test_nifti_keeps_nibabel_axis_order_and_zooms(tmp_path: Path) -> None:
    data = volume((5, 6, 7), np.int16)
    write_nifti(tmp_path / "case_001.nii.gz", data, zooms=(2.0, 1.0, 0.5))
    image, meta = read_image_meta(tmp_path / "case_001.nii.gz", 3)
    assert image.shape == (1, 5, 6, 7) and image.dtype == np.int16 and np.array_equal(image[0], data)
    assert meta.format == "nifti" and meta.spacing == (2.0, 1.0, 0.5) and meta.header is not None
    assert probe_image(tmp_path / "case_001.nii.gz", 3).shape == (1, 5, 6, 7)
    # An uncompressed .nii, with a 4th axis of channels that moves first.
    channels = volume((5, 6, 7, 2), np.float32)
    write_nifti(tmp_path / "two.nii", channels)
    assert np.array_equal(read_image(tmp_path / "two.nii", 3), np.moveaxis(channels, -1, 0))
    with pytest.raises(BiounetError, match=r"3D volume .* 2D model") as info:
        read_image(tmp_path / "case_001.nii.gz", 2)
    assert_one_line_naming(info, "case_001.nii.gz")


def test_nifti_prediction_keeps_the_header(tmp_path: Path) -> None:
    source = write_nifti(tmp_path / "in.nii.gz", volume((5, 6, 7), np.int16), zooms=(2.0, 1.5, 0.5))
    _, meta = read_image_meta(tmp_path / "in.nii.gz", 3)
    probs = np.random.dirichlet(np.ones(3), (5, 6, 7)).transpose(3, 0, 1, 2).astype(np.float32)
    mask = probs.argmax(0).astype(np.uint8)
    out = tmp_path / "out"
    out.mkdir()
    written = write_prediction(out, "in", probs, mask, meta)
    assert written == [out / "in_prob.nii.gz", out / "in_mask.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == ["in_mask.nii.gz", "in_prob.nii.gz"]  # no temporaries
    prob_image, mask_image = nib.load(written[0]), nib.load(written[1])
    assert prob_image.get_data_dtype() == np.float32 and mask_image.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(prob_image.dataobj), np.moveaxis(probs, 0, -1))
    assert np.array_equal(np.asarray(mask_image.dataobj), mask)
    for image in (prob_image, mask_image):
        header = image.header
        assert np.allclose(image.affine, source.affine)
        assert int(header["sform_code"]) == 2 and int(header["qform_code"]) == 1
        assert np.allclose(header.get_sform(), source.header.get_sform())
        assert np.allclose(header.get_qform(), source.header.get_qform())
        assert header.get_zooms()[:3] == (2.0, 1.5, 0.5) and header["descrip"] == b"biounet test"
    # Read back through the readers: same spacing, classes first.
    back, back_meta = read_image_meta(written[0], 3)
    assert back.shape == (3, 5, 6, 7) and back_meta.spacing == (2.0, 1.5, 0.5)


def test_atomic_temporary_keeps_the_nii_gz_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x_mask.nii.gz") as tmp:
        assert tmp.name.endswith(".tmp.nii.gz")
        tmp.write_bytes(b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["x_mask.nii.gz"]


def test_missing_optional_library_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_nifti(tmp_path / "a.nii.gz", volume())
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("raw", data=volume())
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(BiounetError, match=r"reading \.nii\.gz needs nibabel: pip install 'biounet\[nifti\]'"):
        read_image(tmp_path / "a.nii.gz", 3)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(BiounetError, match=r"needs h5py: pip install 'biounet\[hdf5\]'"):
        read_image(f"{tmp_path / 'a.h5'}:raw", 3)


def test_real_hippocampus_case() -> None:
    image, meta = read_image_meta(HIPPOCAMPUS / "images" / "hippocampus_165.nii.gz", 3)
    label = read_image(HIPPOCAMPUS / "labels" / "hippocampus_165.nii.gz", 3)
    # Stored as uint8 in nibabel's (i, j, k) order: 34 x 49 x 29 voxels of 1 mm.
    assert image.shape == (1, 34, 49, 29) and image.dtype == np.uint8 and image.max() > 0
    assert meta.spacing == (1.0, 1.0, 1.0)
    assert label.shape == image.shape and set(np.unique(label).tolist()) == {0, 1, 2}
    pairs = pair_files(HIPPOCAMPUS / "images", HIPPOCAMPUS / "labels")
    assert [(i.name, lab.parent.name) for i, lab in pairs] == [("hippocampus_165.nii.gz", "labels")]


# --- HDF5 and zarr -------------------------------------------------------------------------------------------

def test_hdf5_datasets_by_spec(tmp_path: Path) -> None:
    path = tmp_path / "stack.h5"
    data = volume()
    with h5py.File(path, "w") as f:
        f.create_dataset("volumes/raw", data=data).attrs["element_size_um"] = [2.0, 0.5, 0.5]
        f.create_dataset("two_channels", data=volume((2, 6, 7, 8), np.float32))
    image, meta = read_image_meta(f"{path}:volumes/raw", 3)
    assert image.shape == (1, 6, 7, 8) and np.array_equal(image[0], data)
    assert meta.format == "hdf5" and meta.spacing == (2.0, 0.5, 0.5)
    assert read_image(f"{path}:two_channels", 3).shape == (2, 6, 7, 8)
    # Without axes metadata the model decides: for a 2D model three dimensions are (C, Y, X), and four are
    # no 2D image.
    assert read_image(f"{path}:volumes/raw", 2).shape == (6, 7, 8)
    with pytest.raises(BiounetError, match=r"shape \(2, 6, 7, 8\) as a 2D image"):
        read_image(f"{path}:two_channels", 2)
    assert guess_spatial_dims(f"{path}:volumes/raw") == 3


@pytest.mark.parametrize(("spec", "message"), [
    ("stack.h5:missing", "stack.h5:missing: no dataset 'missing' in the file"),
    ("stack.h5:group", "stack.h5:group: 'group' is a group, not a dataset"),
    ("stack.h5", r"stack.h5: holds 2 datasets \(group/a, raw\); name one as stack.h5:NAME"),
    ("absent.h5:raw", "absent.h5: file not found"),
    ("flat.h5", r"a 2D array \(shape \(7, 8\)\) cannot be used with a 3D model"),
])
def test_hdf5_errors_name_the_file_and_dataset(tmp_path: Path, spec: str, message: str) -> None:
    with h5py.File(tmp_path / "stack.h5", "w") as f:
        f.create_dataset("raw", data=volume())
        f.create_dataset("group/a", data=volume())
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f.create_dataset("only", data=np.zeros((7, 8), np.uint8))
    for reader in (read_image, probe_image):
        with pytest.raises(BiounetError, match=message) as info:
            reader(f"{tmp_path / spec}", 3)
        assert_one_line_naming(info, spec.split(":")[0])


def test_zarr_arrays_and_groups(tmp_path: Path) -> None:
    data = volume()
    single = zarr.create_array(str(tmp_path / "single.zarr"), shape=data.shape, dtype=data.dtype)
    single[:] = data
    single.attrs["resolution"] = [4.0, 1.0, 1.0]
    image, meta = read_image_meta(tmp_path / "single.zarr", 3)
    assert np.array_equal(image[0], data) and meta.format == "zarr" and meta.spacing == (4.0, 1.0, 1.0)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    nested = group.create_array("raw/c2", shape=(2, *data.shape), dtype="float32")
    nested[:] = 0.5
    other = group.create_array("labels", shape=data.shape, dtype="uint8")
    other[:] = 1
    assert read_image(f"{tmp_path / 'group.zarr'}:raw/c2", 3).shape == (2, 6, 7, 8)
    assert probe_image(f"{tmp_path / 'group.zarr'}:labels", 3).shape == (1, 6, 7, 8)
    with pytest.raises(BiounetError, match=r"holds 2 arrays \(labels, raw/c2\)"):
        read_image(tmp_path / "group.zarr", 3)
    with pytest.raises(BiounetError, match="no array 'nope' in the store"):
        read_image(f"{tmp_path / 'group.zarr'}:nope", 3)


# --- names, listings, pairing --------------------------------------------------------------------------------

def test_file_stems_listings_and_pairing(tmp_path: Path) -> None:
    assert file_stem("x/case_001.nii.gz") == "case_001" and file_stem("case_001.NII") == "case_001"
    assert file_stem("d/a.h5:raw") == "a" and file_stem("s.zarr:group/arr") == "s"
    assert file_stem("img.ome.tif") == "img.ome"                   # unchanged for other names
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for name in ("case_001", "case_002"):
        write_nifti(images / f"{name}.nii.gz", volume())
    tifffile.imwrite(labels / "case_001.tif", volume(dtype=np.uint8), metadata={"axes": "ZYX"})
    store = zarr.create_array(str(labels / "case_002.zarr"), shape=(6, 7, 8), dtype="uint8")
    store[:] = 0
    (images / "notes.txt").write_text("ignored")
    assert pair_files(images, labels) == [(images / "case_001.nii.gz", labels / "case_001.tif"),
                                          (images / "case_002.nii.gz", labels / "case_002.zarr")]
    # A .zarr directory is one input, not a folder to list; a spec names an array inside a file.
    assert expand_inputs([str(labels)]) == [labels / "case_001.tif", labels / "case_002.zarr"]
    assert expand_inputs([str(labels / "case_002.zarr")]) == [labels / "case_002.zarr"]
    for name in ("a", "b"):
        with h5py.File(tmp_path / f"{name}.h5", "w") as f:
            f.create_dataset("raw", data=volume())
    assert expand_inputs([f"{tmp_path / 'a.h5'}:raw"]) == [Path(f"{tmp_path / 'a.h5'}:raw")]
    assert expand_inputs([f"{tmp_path}/*.h5:raw"]) == [Path(f"{tmp_path / n}.h5:raw") for n in "ab"]
    # Listed without a dataset name, a file holding one dataset is read as that dataset.
    assert expand_inputs([str(tmp_path / "*.h5")]) == [tmp_path / "a.h5", tmp_path / "b.h5"]
    assert read_image(tmp_path / "a.h5", 3).shape == (1, 6, 7, 8)
    with pytest.raises(BiounetError, match=r"a\.h5:nope: no dataset 'nope'"):
        expand_inputs([f"{tmp_path / 'a.h5'}:nope"])
    with pytest.raises(BiounetError, match="share the name 'case_001'"):
        expand_inputs([str(images / "case_001.nii.gz"), str(labels / "case_001.tif")])


# --- biounet predict on volumes ------------------------------------------------------------------------------

@pytest.fixture
def checkpoint_3d(tmp_path: Path) -> Path:
    path = tmp_path / "tiny3d.pt"
    config = UNetConfig(spatial_dims=3, out_channels=3, base_channels=2, depth=1, padding="same")
    save_checkpoint(path, UNet(config), Normalization("zscore"))
    return path


def test_predict_nifti_volume_keeps_the_header(checkpoint_3d: Path, tmp_path: Path) -> None:
    data = np.random.rand(9, 10, 11).astype(np.float32) * 100
    source = write_nifti(tmp_path / "case_007.nii.gz", data, zooms=(2.0, 1.0, 1.5))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(checkpoint_3d), str(tmp_path / "case_007.nii.gz"), "--out", str(out),
                 "--tile", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case_007_mask.nii.gz", "case_007_prob.nii.gz"]
    prob, mask = nib.load(out / "case_007_prob.nii.gz"), nib.load(out / "case_007_mask.nii.gz")
    probs, labels = np.asarray(prob.dataobj), np.asarray(mask.dataobj)
    assert probs.shape == (9, 10, 11, 3) and probs.dtype == np.float32 and labels.dtype == np.uint8
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert np.array_equal(labels, probs.argmax(-1))
    ckpt = load_checkpoint(checkpoint_3d)
    expected = predict(ckpt.model, data[None], tile=8, normalization=ckpt.normalization)
    assert np.abs(np.moveaxis(probs, -1, 0) - expected).max() <= 1e-6
    for image in (prob, mask):
        assert np.allclose(image.affine, source.affine) and image.header.get_zooms()[:3] == (2.0, 1.0, 1.5)
        assert int(image.header["sform_code"]) == 2 and int(image.header["qform_code"]) == 1


def test_predict_tiff_stack_and_hdf5_volume(checkpoint_3d: Path, tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", volume((5, 9, 10), np.uint8), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 3.0})
    with h5py.File(tmp_path / "vol.h5", "w") as f:
        f.create_dataset("raw", data=volume((6, 7, 8), np.float32))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(checkpoint_3d), str(tmp_path / "stack.tif"),
                 f"{tmp_path / 'vol.h5'}:raw", "--out", str(out), "--tile", "8"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["stack_mask.tif", "stack_prob.tif", "vol_mask.tif",
                                                     "vol_prob.tif"]
    with tifffile.TiffFile(out / "stack_prob.tif") as tif:
        assert tif.series[0].axes == "CZYX" and tif.series[0].shape == (3, 5, 9, 10)
        assert tif.series[0].dtype == np.float32
    mask, meta = read_image_meta(out / "stack_mask.tif", 3)
    assert mask.shape == (1, 5, 9, 10) and mask.dtype == np.uint8
    assert meta.spacing == pytest.approx((3.0, 0.5, 0.5))            # the input's calibration, kept
    assert read_image(out / "vol_mask.tif", 3).shape == (1, 6, 7, 8)


@pytest.mark.parametrize("case", ["2D file to a 3D model", "missing dataset", "corrupt nifti", "nan volume"])
def test_bad_volumes_one_line_exit_2_and_no_outputs(case: str, checkpoint_3d: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.nii.gz"
    write_nifti(good, np.random.rand(6, 7, 8).astype(np.float32))
    if case == "2D file to a 3D model":
        tifffile.imwrite(tmp_path / "flat.tif", np.zeros((20, 20), np.uint8))
        bad, named = str(tmp_path / "flat.tif"), "flat.tif"
    elif case == "missing dataset":
        with h5py.File(tmp_path / "v.h5", "w") as f:
            f.create_dataset("raw", data=volume())
        bad, named = f"{tmp_path / 'v.h5'}:label", "v.h5:label"
    elif case == "corrupt nifti":
        (tmp_path / "broken.nii.gz").write_bytes(good.read_bytes()[:200])
        bad, named = str(tmp_path / "broken.nii.gz"), "broken.nii.gz"
    else:
        data = np.ones((6, 7, 8), np.float32)
        data[1, 2, 3] = np.nan
        write_nifti(tmp_path / "nan.nii.gz", data)
        bad, named = str(tmp_path / "nan.nii.gz"), "nan.nii.gz"
    out = tmp_path / "out"
    code = main(["predict", "--model", str(checkpoint_3d), bad, str(good), "--out", str(out), "--tile", "8"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error" in line]               # the rest is tqdm's progress bar
    assert code == 2 and len(errors) == 1 and errors[0] == err[-1]
    assert named in errors[0] and errors[0].startswith("biounet predict: error:")
    # Headers are checked before anything is written; NaNs and truncated data, found only when reading, come
    # first here, so nothing is written either.
    assert not out.exists() or list(out.iterdir()) == []


# --- biounet evaluate on volumes -----------------------------------------------------------------------------

def three_class_case(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """Truth: two 4x4x4 cubes (classes 1 and 2); prediction: cube 1 shifted by one voxel along axis 0."""
    truth = np.zeros((10, 14, 8), np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    truth[2:6, 8:12, 2:6] = 2
    pred = np.where(truth == 1, 0, truth).astype(np.uint8)
    pred[3:7, 2:6, 2:6] = 1
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    write_nifti(tmp_path / "truth" / "case_001.nii.gz", truth, zooms=(2.0, 1.0, 1.0))
    write_nifti(tmp_path / "pred" / "case_001_mask.nii.gz", pred, zooms=(2.0, 1.0, 1.0))
    return tmp_path / "pred", tmp_path / "truth", pred


@pytest.mark.parametrize("prediction", ["mask", "probabilities"])
def test_evaluate_volumes_per_class_dice_and_hd95_in_file_spacing(tmp_path: Path, prediction: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    preds, truths, pred = three_class_case(tmp_path)
    if prediction == "probabilities":
        (preds / "case_001_mask.nii.gz").unlink()
        one_hot = np.eye(3, dtype=np.float32)[pred]                  # classes on the 4th axis
        write_nifti(preds / "case_001_prob.nii.gz", one_hot, zooms=(2.0, 1.0, 1.0))
    report = tmp_path / "scores.json"
    assert main(["evaluate", "--pred", str(preds), "--truth", str(truths), "--json", str(report)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["image", "dice", "dice_1", "dice_2", "iou", "iou_1", "iou_2", "hd95", "hd95_1", "hd95_2"]
    row = json.loads(report.read_text())["images"][0]
    assert row["image"] == "case_001"
    # Cube 1 overlaps its truth in 3 of 4 layers: Dice 2 * 48 / (64 + 64); cube 2 is exact.
    assert row["dice_1"] == pytest.approx(0.75) and row["dice_2"] == 1.0 and row["dice"] == pytest.approx(0.875)
    # Edge voxels of the shifted cube: 16 one voxel (2 mm along axis 0) away, 4 at 1 mm, 36 at 0 -> HD95 2 mm.
    assert row["hd95_1"] == pytest.approx(2.0) and row["hd95_2"] == 0.0 and row["hd95"] == pytest.approx(1.0)
    assert main(["evaluate", "--pred", str(preds), "--truth", str(truths), "--json", str(report),
                 "--spacing", "1", "1", "1"]) == 0
    assert json.loads(report.read_text())["images"][0]["hd95_1"] == pytest.approx(1.0)


def test_evaluate_real_hippocampus_labels_against_themselves(tmp_path: Path) -> None:
    report = tmp_path / "s.json"
    labels = HIPPOCAMPUS / "labels" / "hippocampus_165.nii.gz"
    assert main(["evaluate", "--pred", str(labels), "--truth", str(labels), "--metrics", "dice,hd95",
                 "--json", str(report)]) == 0
    mean = json.loads(report.read_text())["mean"]
    assert mean == {"dice": 1.0, "dice_1": 1.0, "dice_2": 1.0, "hd95": 0.0, "hd95_1": 0.0, "hd95_2": 0.0}


@pytest.mark.parametrize("case", ["shape mismatch", "2D truth as volume", "spacing count"])
def test_evaluate_volume_errors_are_one_line(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    preds, truths, _ = three_class_case(tmp_path)
    extra: list[str] = []
    if case == "shape mismatch":
        write_nifti(preds / "case_001_mask.nii.gz", np.zeros((10, 14, 9), np.uint8))
        expected = ["case_001_mask.nii.gz", "truth/case_001.nii.gz", "does not match"]
    elif case == "2D truth as volume":
        tifffile.imwrite(truths / "case_001.tif", np.zeros((14, 8), np.uint8))
        (truths / "case_001.nii.gz").unlink()
        extra = ["--spatial-dims", "3"]
        expected = ["case_001.tif", "cannot be used with a 3D model"]
    else:
        extra = ["--spacing", "1", "1"]
        expected = ["--spacing has 2 value(s) for 3 spatial axes"]
    code = main(["evaluate", "--pred", str(preds), "--truth", str(truths), "--metrics", "dice", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and all(text in err[0] for text in expected), err
