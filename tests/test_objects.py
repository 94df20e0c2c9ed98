"""The per-object measurement table: hand-computed values in 2D and 3D, stacks, empty maps, the CSV."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import pytest

from biounet.errors import BiounetError
from biounet.infer.objects import object_columns, object_table, write_object_table


def two_rectangles() -> tuple[np.ndarray, np.ndarray]:
    """Ids 7 (rows 1-2, cols 1-3) and 3 (rows 3-5, cols 4-7) in a 6x8 map; two uint16 channels."""
    ids = np.zeros((6, 8), np.int32)
    ids[1:3, 1:4] = 7
    ids[3:6, 4:8] = 3
    ramp = np.arange(48, dtype=np.uint16).reshape(6, 8)  # value = 8 * row + col
    return ids, np.stack([ramp, 100 - ramp])


def test_two_rectangles_by_hand_with_anisotropic_pixels() -> None:
    ids, image = two_rectangles()
    table = object_table(ids, image, spacing=(0.5, 3.0))  # a pixel is 0.5 x 3.0 = 1.5 units
    assert list(table) == [
        "label", "area_px", "area", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1",
        "mean_intensity_0", "mean_intensity_1", "max_intensity_0", "max_intensity_1", "equivalent_diameter",
        "eccentricity", "solidity"]
    # Rows in label order: 3 (the 3x4 rectangle) before 7 (the 2x3 one).
    expected = {
        "label": [3, 7],
        "area_px": [12, 6],
        "area": [18.0, 9.0],
        "centroid_y": [4.0, 1.5],
        "centroid_x": [5.5, 2.0],
        "bbox_y0": [3, 1], "bbox_x0": [4, 1], "bbox_y1": [6, 3], "bbox_x1": [8, 4],
        "mean_intensity_0": [8 * 4 + 5.5, 8 * 1.5 + 2.0],
        "mean_intensity_1": [100 - 37.5, 100 - 14.0],
        "max_intensity_0": [8 * 5 + 7, 8 * 2 + 3],
        "max_intensity_1": [100 - (8 * 3 + 4), 100 - (8 * 1 + 1)],
        "equivalent_diameter": [2 * math.sqrt(18.0 / math.pi), 2 * math.sqrt(9.0 / math.pi)],
        # Second moments of n pixel centres a distance s apart: s^2 (n^2 - 1) / 12, in physical units.
        "eccentricity": [math.sqrt(1 - (0.25 * 8 / 12) / (9 * 15 / 12)),
                         math.sqrt(1 - (0.25 * 3 / 12) / (9 * 8 / 12))],
        "solidity": [1.0, 1.0],
    }
    for name, values in expected.items():
        np.testing.assert_allclose(table[name], values, rtol=1e-12, err_msg=name)
    for name in ("label", "area_px", "bbox_y0", "bbox_x1", "max_intensity_0", "max_intensity_1"):
        assert table[name].dtype == np.int64, name


def test_intensities_are_the_raw_values_and_solidity_sees_concavity() -> None:
    ids = np.zeros((7, 7), np.int32)
    ids[1:6, 1:3] = 1
    ids[4:6, 3:6] = 1  # an L: its convex hull is larger than itself
    image = np.where(ids > 0, 5000.5, -3.0)[None]  # one float channel, far outside [0, 1]
    table = object_table(ids, image)
    assert "mean_intensity" in table and "mean_intensity_0" not in table
    assert table["mean_intensity"][0] == 5000.5 and table["max_intensity"][0] == 5000.5
    assert table["max_intensity"].dtype == np.float64
    assert table["area_px"][0] == 16 and table["area"][0] == 16.0
    assert 0.5 < table["solidity"][0] < 1.0


def test_a_box_in_3d() -> None:
    ids = np.zeros((4, 5, 6), np.uint16)
    ids[1:3, 1:4, 2:5] = 1
    image = np.zeros((1, 4, 5, 6), np.float32)
    image[0, 2, 3, 4] = 9.0
    table = object_table(ids, image, spacing=(2.0, 0.5, 0.5))  # a voxel is 0.5 units
    assert list(table) == ["label", "volume_px", "volume", "centroid_z", "centroid_y", "centroid_x",
                           "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1", "mean_intensity",
                           "max_intensity", "equivalent_diameter"]
    row = {name: values[0] for name, values in table.items()}
    assert row["volume_px"] == 18 and row["volume"] == pytest.approx(9.0)
    assert (row["centroid_z"], row["centroid_y"], row["centroid_x"]) == pytest.approx((1.5, 2.0, 3.0))
    assert [row[f"bbox_{a}{e}"] for e in "01" for a in "zyx"] == [1, 1, 2, 3, 4, 5]
    assert row["mean_intensity"] == pytest.approx(0.5) and row["max_intensity"] == 9.0
    assert row["equivalent_diameter"] == pytest.approx((6 * 9.0 / math.pi) ** (1 / 3))


def test_planes_of_a_stack_get_their_index_and_ids_must_be_unique() -> None:
    ids = np.zeros((2, 3, 6, 6), np.int32)  # T, Z, Y, X
    ids[0, 2, 0:2, 0:2] = 1
    ids[1, 0, 1:4, 1:4] = 2
    ids[1, 1, 0:1, 0:5] = 3
    image = np.ones((1, *ids.shape), np.uint8)
    table = object_table(ids, image, plane_axes="TZ")
    assert list(table)[:5] == ["label", "t", "z", "area_px", "area"]
    assert table["label"].tolist() == [1, 2, 3]
    assert table["t"].tolist() == [0, 1, 1] and table["z"].tolist() == [2, 0, 1]
    assert table["area_px"].tolist() == [4, 9, 5]
    assert table["centroid_y"].tolist() == [0.5, 2.0, 0.0]  # within the plane
    ids[0, 0, 5, 5] = 3
    with pytest.raises(BiounetError, match="more than one plane"):
        object_table(ids, image, plane_axes="TZ")


def test_empty_map_gives_a_header_only_csv(tmp_path: Path) -> None:
    table = object_table(np.zeros((2, 5, 5), np.int32), np.zeros((3, 2, 5, 5), np.uint8), plane_axes="Z")
    assert list(table) == object_columns(2, 3, "Z") and all(v.size == 0 for v in table.values())
    write_object_table(tmp_path / "empty.csv", table)
    assert (tmp_path / "empty.csv").read_text().splitlines() == [",".join(object_columns(2, 3, "Z"))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]  # no temporary left


def test_csv_round_trip(tmp_path: Path) -> None:
    ids, image = two_rectangles()
    table = object_table(ids, image, spacing=(0.5, 3.0))
    write_object_table(tmp_path / "objects.csv", table)
    with open(tmp_path / "objects.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and list(rows[0]) == list(table)
    assert rows[0]["label"] == "3" and rows[0]["area_px"] == "12" and rows[0]["max_intensity_0"] == "47"
    for name, values in table.items():
        assert [float(r[name]) for r in rows] == values.tolist(), name  # floats written exactly


def test_mismatched_inputs_are_errors() -> None:
    ids, image = two_rectangles()
    with pytest.raises(BiounetError, match="does not fit"):
        object_table(ids, image[:, :5])
    with pytest.raises(BiounetError, match="spacing"):
        object_table(ids, image, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(BiounetError, match="integer"):
        object_table(ids.astype(np.float32), image)


def test_fast_on_a_megapixel_image_with_500_objects() -> None:
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    ids = np.zeros((1024, 1024), np.int32)
    for i in range(500):
        rr, cc = disk(tuple(rng.integers(12, 1012, 2)), int(rng.integers(3, 12)), shape=ids.shape)
        ids[rr, cc] = i + 1
    image = rng.integers(0, 255, (3, 1024, 1024), dtype=np.uint8)
    start = time.perf_counter()
    table = object_table(ids, image, spacing=(0.3, 0.3))
    elapsed = time.perf_counter() - start
    assert table["label"].size == np.unique(ids[ids > 0]).size > 400
    assert elapsed < 1.0, f"{elapsed:.2f} s"
