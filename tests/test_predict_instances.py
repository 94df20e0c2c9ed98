"""``biounet predict`` for objects: ``--outputs``, instance maps, the objects table, and ``write_instances``."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile

from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.infer import stack
from biounet.infer.instances import instances_from_probabilities
from biounet.infer.objects import object_columns
from biounet.io.axes import StackPlan
from biounet.io.readers import ImageMeta, read_image_meta
from biounet.io.writers import write_instances
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import Checkpoint, save_checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.normalization import Normalization


def save_model(path: Path, out_channels: int, instances: InstanceParams | None) -> Path:
    model = UNet(UNetConfig(out_channels=out_channels, base_channels=4, depth=2))
    save_checkpoint(path, model, Normalization("percentile"), instances=instances)
    return path


def blobs(shape: tuple[int, int] = (40, 52)) -> np.ndarray:
    """Three bright (200) rectangles on a dark (20) uint8 background."""
    image = np.full(shape, 20, np.uint8)
    image[3:9, 4:12] = 200      # 6 x 8 = 48 px
    image[20:30, 30:35] = 200   # 10 x 5 = 50 px
    image[32:36, 2:4] = 200     # 4 x 2 = 8 px
    return image


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_predict(*args: str | Path) -> int:
    return main(["predict", *(str(a) for a in args)])


@pytest.fixture
def thresholding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replaces the network by a threshold at 100 on the raw pixels: objects are the bright rectangles.

    A 3-channel model gets background/interior/boundary probabilities (interior 0.9 inside), a 2-channel
    one background/foreground; everything after the probabilities is the real ``predict`` command.
    """

    def fake(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, **_: object) -> np.ndarray:
        # Per class: its probability (inside a bright region, outside).
        levels = {3: [(0.05, 0.9), (0.9, 0.05), (0.05, 0.05)], 2: [(0.1, 0.9), (0.9, 0.1)]}[
            checkpoint.config.out_channels]
        stacked = np.zeros((len(levels), *plan.batch_shape, *plan.spatial_shape), np.float32)
        for index, item in plan.items(array):
            inside = item[0] > 100
            for c, (on, off) in enumerate(levels):
                region: tuple[int, ...] = (c, *index)
                stacked[region] = np.where(inside, on, off)
        return plan.to_stored_order(stacked)

    monkeypatch.setattr(stack, "predict_stack", fake)


# --- end to end on a real (random-weight) instance model -----------------------------------------------------

@pytest.mark.parametrize("params", [InstanceParams(), InstanceParams(seed=0.2, foreground=0.6)])
def test_instance_model_writes_all_four_by_default(params: InstanceParams, tmp_path: Path) -> None:
    model = save_model(tmp_path / "instance.pt", 3, params)
    iio.imwrite(tmp_path / "cells.png", blobs())
    out = tmp_path / "out"
    assert run_predict("--model", model, tmp_path / "cells.png", "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "cells_instances.tif", "cells_mask.png", "cells_objects.csv", "cells_prob.tif"]
    probs = tifffile.imread(out / "cells_prob.tif")
    instances = tifffile.imread(out / "cells_instances.tif")
    assert probs.shape == (3, 40, 52) and instances.shape == (40, 52) and instances.dtype == np.uint16
    # The checkpoint's own post-processing, applied to the probabilities written beside.
    assert np.array_equal(instances, instances_from_probabilities(probs, params))
    rows = read_rows(out / "cells_objects.csv")
    with open(out / "cells_objects.csv", newline="") as handle:
        assert next(csv.reader(handle)) == object_columns(2, 1)
    count = int(instances.max())
    assert [int(r["label"]) for r in rows] == list(range(1, count + 1))
    assert [int(r["area_px"]) for r in rows] == np.bincount(instances.ravel())[1:].tolist()
    if params.seed == 0.2:
        assert count >= 2  # these thresholds find objects in a random network's output
        raw = blobs().astype(np.float64)
        means = [raw[instances == i].mean() for i in range(1, count + 1)]
        np.testing.assert_allclose([float(r["mean_intensity"]) for r in rows], means, rtol=1e-12)


def test_outputs_prob_writes_only_the_probabilities(tmp_path: Path) -> None:
    model = save_model(tmp_path / "instance.pt", 3, InstanceParams())
    iio.imwrite(tmp_path / "cells.png", blobs())
    out = tmp_path / "out"
    assert run_predict("--model", model, tmp_path / "cells.png", "--out", out, "--outputs", "prob") == 0
    assert [p.name for p in out.iterdir()] == ["cells_prob.tif"]
    assert tifffile.imread(out / "cells_prob.tif").shape == (3, 40, 52)


@pytest.mark.parametrize("outputs", ["prob,blobs", "", "mask, shapes"])
def test_unknown_output_is_a_one_line_error(outputs: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    model = save_model(tmp_path / "instance.pt", 3, InstanceParams())
    iio.imwrite(tmp_path / "cells.png", blobs())
    out = tmp_path / "out"
    assert run_predict("--model", model, tmp_path / "cells.png", "--out", out, "--outputs", outputs) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("biounet predict: error:") and "--outputs" in err[0]
    for word in ("blobs", "shapes"):
        assert (word in err[0]) == (word in outputs)
    assert not out.exists()


def test_semantic_model_defaults_to_prob_and_mask(tmp_path: Path) -> None:
    model = save_model(tmp_path / "semantic.pt", 2, None)
    iio.imwrite(tmp_path / "cells.png", blobs())
    out = tmp_path / "out"
    assert run_predict("--model", model, tmp_path / "cells.png", "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells_mask.png", "cells_prob.tif"]


# --- exact objects, with the network replaced by a threshold ------------------------------------------------

@pytest.mark.usefixtures("thresholding")
@pytest.mark.parametrize("out_channels", [3, 2])
def test_objects_of_a_png_are_measured_on_its_raw_pixels(out_channels: int, tmp_path: Path) -> None:
    params = InstanceParams() if out_channels == 3 else None
    model = save_model(tmp_path / "model.pt", out_channels, params)
    image = blobs()
    rgba = np.stack([image, image // 2, 255 - image, np.full_like(image, 255)], axis=-1)
    iio.imwrite(tmp_path / "cells.png", rgba)
    out = tmp_path / "out"
    assert run_predict("--model", model, tmp_path / "cells.png", "--out", out,
                       "--outputs", "instances,objects") == 0
    assert sorted(p.name for p in out.iterdir()) == ["cells_instances.tif", "cells_objects.csv"]
    instances = tifffile.imread(out / "cells_instances.tif")
    assert instances.dtype == np.uint16 and instances.shape == image.shape
    assert set(np.unique(instances)) == {0, 1, 2, 3}
    assert np.array_equal(instances > 0, image > 100)
    rows = read_rows(out / "cells_objects.csv")
    # RGBA: the alpha channel is left out, the others are the stored values (not normalised, not grey).
    assert list(rows[0]) == object_columns(2, 3)
    assert [(int(r["area_px"]), int(r["bbox_y0"]), int(r["bbox_x0"]), int(r["bbox_y1"]), int(r["bbox_x1"]))
            for r in rows] == [(48, 3, 4, 9, 12), (50, 20, 30, 30, 35), (8, 32, 2, 36, 4)]
    assert [(float(r["centroid_y"]), float(r["centroid_x"])) for r in rows] == [(5.5, 7.5), (24.5, 32.0),
                                                                                (33.5, 2.5)]
    for r in rows:
        assert [float(r[f"mean_intensity_{c}"]) for c in range(3)] == [200.0, 100.0, 55.0]
        assert [r[f"max_intensity_{c}"] for c in range(3)] == ["200", "100", "55"]


@pytest.mark.usefixtures("thresholding")
def test_stack_ids_are_unique_over_the_planes_and_rows_name_their_plane(tmp_path: Path) -> None:
    model = save_model(tmp_path / "model.pt", 3, InstanceParams())
    stack = np.stack([blobs(), np.full((40, 52), 20, np.uint8), blobs()[::-1]])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZYX", "spacing": 2.0})
    out = tmp_path / "out"
    assert run_predict("--model", model, tmp_path / "stack.tif", "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "stack_instances.tif", "stack_mask.tif", "stack_objects.csv", "stack_prob.tif"]
    with tifffile.TiffFile(out / "stack_instances.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.imagej_metadata["spacing"] == 2.0
        instances = tif.series[0].asarray()
    assert instances.shape == (3, 40, 52) and instances.dtype == np.uint16
    assert np.array_equal(instances > 0, stack > 100)
    assert [sorted(set(np.unique(p)) - {0}) for p in instances] == [[1, 2, 3], [], [4, 5, 6]]
    rows = read_rows(out / "stack_objects.csv")
    assert list(rows[0])[:3] == ["label", "z", "area_px"]
    assert [(int(r["label"]), int(r["z"])) for r in rows] == [(1, 0), (2, 0), (3, 0), (4, 2), (5, 2), (6, 2)]
    # Physical area from the stack's calibration: 0.25 x 0.25 per pixel.
    assert [float(r["area"]) for r in rows[:3]] == [48 * 0.0625, 50 * 0.0625, 8 * 0.0625]


# --- write_instances ------------------------------------------------------------------------------------------

def test_write_instances_2d_round_trip_and_uint32_above_65535(tmp_path: Path) -> None:
    meta = ImageMeta(tmp_path / "a.png", "png", (1.0, 1.0))
    small = np.arange(30, dtype=np.int32).reshape(5, 6) * 2000  # largest id 58000
    path = write_instances(tmp_path, "a", small, meta)
    assert path == tmp_path / "a_instances.tif"
    back = tifffile.imread(path)
    assert back.dtype == np.uint16 and np.array_equal(back, small)
    large = small.copy()
    large[4, 5] = 65536
    back = tifffile.imread(write_instances(tmp_path, "a", large, meta))
    assert back.dtype == np.uint32 and np.array_equal(back, large)
    with pytest.raises(BiounetError, match="negative"):
        write_instances(tmp_path, "a", -large, meta)


@pytest.mark.parametrize("largest", [9, 70000])
def test_write_instances_stack_keeps_the_mask_axes_and_calibration(largest: int, tmp_path: Path) -> None:
    # Stored as Y, X, Z (a 2D model's NIfTI-like order): written in ImageJ's Z, Y, X order, like the mask.
    ids = np.zeros((6, 7, 4), np.int64)
    ids[1, 2, 3], ids[5, 6, 0] = 1, largest
    meta = ImageMeta(tmp_path / "a.tif", "tiff", (0.5, 0.25, 3.0))  # spacing of Y, X, Z as the axes order them
    path = write_instances(tmp_path, "a", ids, meta, axes="YXZ")
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        assert series.axes == "ZYX"
        back = series.asarray()
        x_resolution, y_resolution = (tif.pages[0].tags[t].value for t in ("XResolution", "YResolution"))
        if largest <= 65535:
            assert tif.is_imagej and tif.imagej_metadata["spacing"] == 3.0
        else:
            assert not tif.is_imagej and tif.shaped_metadata[0]["spacing"] == 3.0
    assert back.dtype == (np.uint16 if largest <= 65535 else np.uint32)
    assert np.array_equal(back, np.transpose(ids, (2, 0, 1)))
    assert x_resolution[0] / x_resolution[1] == pytest.approx(4.0)  # pixels per unit = 1 / 0.25
    assert y_resolution[0] / y_resolution[1] == pytest.approx(2.0)


def test_write_instances_nifti_keeps_the_header(tmp_path: Path) -> None:
    affine = np.diag([2.0, 1.5, 0.5, 1.0])
    affine[:3, 3] = (10.0, -5.0, 7.0)
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.int16), affine), tmp_path / "in.nii.gz")
    _, meta = read_image_meta(tmp_path / "in.nii.gz", 3)
    ids = np.zeros((5, 6, 7), np.int32)
    ids[1:3, 2:4, 3:6] = 70000
    path = write_instances(tmp_path, "in", ids, meta)
    assert path == tmp_path / "in_instances.nii.gz"
    image = nib.load(path)
    assert image.get_data_dtype() == np.uint32 and np.array_equal(np.asarray(image.dataobj), ids)
    assert np.allclose(image.affine, affine) and image.header.get_zooms() == (2.0, 1.5, 0.5)
