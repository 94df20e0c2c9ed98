"""One reader per format: ``read_image`` is the one item that ``image_plan`` makes of ``read_stored``."""

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

from biounet.errors import BiounetError
from biounet.io.axes import StoredAxes, image_plan
from biounet.io.formats import FORMATS, image_format
from biounet.io.readers import guess_spatial_dims, probe_image, read_image, read_image_meta
from biounet.io.stored import open_stored, read_stored


def rgb_png(folder: Path) -> tuple[str, np.ndarray]:
    array = np.random.randint(0, 255, (20, 30, 3), np.uint8)
    iio.imwrite(folder / "rgb.png", array)
    return str(folder / "rgb.png"), np.moveaxis(array, -1, 0)


def planar_tiff(folder: Path) -> tuple[str, np.ndarray]:
    array = np.random.randint(0, 255, (3, 20, 30), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(folder / "planar.tif", array)  # tifffile's default: planar "RGB", axes SYX
    return str(folder / "planar.tif"), array


def pages_tiff(folder: Path) -> tuple[str, np.ndarray]:
    array = np.random.randint(0, 4000, (5, 20, 30), np.uint16)
    tifffile.imwrite(folder / "pages.tif", array)  # no metadata: axes QYX
    return str(folder / "pages.tif"), array[None]


def nifti_4d(folder: Path) -> tuple[str, np.ndarray]:
    array = np.random.rand(5, 6, 7, 2).astype(np.float32)
    image = nib.Nifti1Image(array, np.eye(4))
    image.header.set_zooms((2.0, 1.0, 0.5, 1.0))
    nib.save(image, folder / "four.nii.gz")
    return str(folder / "four.nii.gz"), np.moveaxis(array, -1, 0)


def hdf5_czyx(folder: Path) -> tuple[str, np.ndarray]:
    array = np.random.rand(2, 6, 7, 8).astype(np.float32)
    with h5py.File(folder / "stack.h5", "w") as f:
        f.create_dataset("raw", data=array)
    return f"{folder / 'stack.h5'}:raw", array


@pytest.mark.parametrize(("make", "dims"), [(rgb_png, 2), (planar_tiff, 2), (pages_tiff, 3), (nifti_4d, 3),
                                            (hdf5_czyx, 3)])
def test_read_image_is_the_one_item_of_image_plan(tmp_path: Path, make: object, dims: int) -> None:
    path, expected = make(tmp_path)  # type: ignore[operator]
    array, stored = read_stored(path, dims)
    plan = image_plan(stored, dims, path)
    items = list(plan.items(array))
    assert len(items) == 1 and items[0][0] == ()
    image = read_image(path, dims)
    assert image.dtype == expected.dtype and np.array_equal(image, expected)
    assert np.array_equal(items[0][1], image)
    assert probe_image(path, dims).shape == image.shape
    # Opening reads the same array, in place where the format allows.
    with open_stored(path, dims) as (opened, opened_stored):
        assert opened_stored == stored and np.array_equal(np.asarray(opened[...]), array)


def test_every_format_has_one_reader(tmp_path: Path) -> None:
    assert set(FORMATS) == {"png", "jpeg", "tiff", "nifti", "hdf5", "zarr"}
    names = ["a.png", "a.JPG", "a.tif", "a.nii.gz", "a.h5:raw", "a.zarr", "a.txt"]
    assert [image_format(n) for n in names] == ["png", "jpeg", "tiff", "nifti", "hdf5", "zarr", None]


def test_nifti_keeps_its_spatial_order_and_spacing(tmp_path: Path) -> None:
    path, _ = nifti_4d(tmp_path)
    _, meta = read_image_meta(path, 3)
    plan = image_plan(read_stored(path, 3)[1], 3, path)
    assert plan.spatial_axes == "YXZ" and meta.spacing == (2.0, 1.0, 0.5)


def test_guess_spatial_dims_per_format(tmp_path: Path) -> None:
    iio.imwrite(tmp_path / "a.png", np.zeros((8, 9), np.uint8))
    tifffile.imwrite(tmp_path / "pages.tif", np.zeros((4, 8, 9), np.uint8))  # a plain multi-page TIFF: 2D
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((4, 8, 9), np.uint8), imagej=True, metadata={"axes": "ZYX"})
    nib.save(nib.Nifti1Image(np.zeros((8, 9), np.uint8), np.eye(4)), tmp_path / "flat.nii")
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 4), np.uint8), np.eye(4)), tmp_path / "vol.nii")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        for n in (2, 3, 4):
            f.create_dataset(f"d{n}", data=np.zeros((2, 3, 4, 5)[-n:], np.uint8))
    guessed = [guess_spatial_dims(tmp_path / n) for n in ("a.png", "pages.tif", "z.tif", "flat.nii", "vol.nii")]
    guessed += [guess_spatial_dims(f"{tmp_path / 'c.h5'}:d{n}") for n in (2, 3, 4)]
    assert guessed == [2, 2, 3, 2, 3, 2, 3, 3]


def test_container_axes_metadata_decides_for_read_image(tmp_path: Path) -> None:
    # ilastik's axistags: Y, X, C. Read as (C, Y, X) for a 2D model, and guessed 2D (no Z).
    array = np.random.randint(0, 255, (8, 9, 2), np.uint8)
    with h5py.File(tmp_path / "ilastik.h5", "w") as f:
        f.create_dataset("data", data=array).attrs["axistags"] = json.dumps(
            {"axes": [{"key": k} for k in "yxc"]})
    spec = f"{tmp_path / 'ilastik.h5'}:data"
    assert np.array_equal(read_image(spec, 2), np.moveaxis(array, -1, 0))
    assert guess_spatial_dims(spec) == 2


@pytest.mark.parametrize(("axes", "shape", "dims", "message"), [
    ("??YX", (2, 3, 8, 9), 3, "cannot tell the Z axis from channels"),
    ("YX", (8, 9), 3, r"2D image .* 3D model"),
    ("ZYX", (4, 8, 9), 2, r"3D volume with axes ZYX .* as a 2D image"),
    ("TZYX", (2, 4, 8, 9), 3, r"axes TZYX .* as a 3D image \(a time series\)"),
    ("C?YX", (2, 3, 8, 9), 2, "more than one channel axis"),
    ("YX", (0, 9), 2, "is empty"),
])
def test_image_plan_errors(axes: str, shape: tuple[int, ...], dims: int, message: str) -> None:
    stored = StoredAxes(shape, np.dtype(np.uint8), axes, (1.0,) * len(shape))
    with pytest.raises(BiounetError, match=message):
        image_plan(stored, dims, "f.tif")


def test_image_plan_drops_singletons_and_keeps_stored_order() -> None:
    stored = StoredAxes((1, 6, 1, 8, 9), np.dtype(np.uint8), "TYCXZ", (1.0,) * 5)
    plan = image_plan(stored, 3, "f.tif")
    assert plan.axes == "-Y-XZ" and plan.spatial_axes == "YXZ" and plan.batch_shape == ()
    # A 3D model with a named Z: an unnamed axis is channels.
    plan = image_plan(StoredAxes((3, 4, 8, 9), np.dtype(np.uint8), "?ZYX", (1.0,) * 4), 3, "f.tif")
    assert plan.axes == "CZYX" and plan.channels == 3
