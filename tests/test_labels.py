"""Label conventions: reading labels, detecting binary/class/instance maps, and ignore vs instances."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from biounet.data.labels import IGNORE_INDEX, LabelConfig, label_values, read_label
from biounet.data.targets import balanced_class_weights, border_weight_map
from biounet.errors import BiounetError


def disc_mask(shape: tuple[int, int] = (40, 40), centre: tuple[int, int] = (20, 20), radius: int = 10) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize(("dtype", "value"), [(np.uint8, 1), (np.uint8, 255), (np.uint16, 65535), (bool, True)])
def test_binary_masks_of_every_common_convention_are_detected(tmp_path: Path, dtype: type, value: int) -> None:
    mask = disc_mask()
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.where(mask, value, 0).astype(dtype))
    label = read_label(path)
    assert label.dtype == np.int64
    config = LabelConfig().resolve([label_values(label, path)], num_classes=2)
    assert config.kind == "binary" and config.foreground == int(value)
    classes, instances = config.targets(label, 2)
    assert np.array_equal(classes, mask.astype(np.int64))
    assert instances.max() == 1


def test_class_maps_are_detected_from_the_models_classes_even_with_a_class_missing() -> None:
    three = np.array([[0, 1, 2, 2]])
    assert LabelConfig().resolve([three], num_classes=3).kind == "classes"
    assert LabelConfig().resolve([np.array([[0, 2, 2]])], num_classes=3).kind == "classes"
    # The same values for a two-class model can only be instance ids.
    assert LabelConfig().resolve([three], num_classes=2).kind == "instances"
    # Without a class count, a few consecutive values are classes.
    assert LabelConfig().resolve([three]).kind == "classes"


def test_instance_maps_are_detected_from_many_ids_or_ids_beyond_the_classes() -> None:
    cells = np.zeros((20, 40), np.int64)
    for i in range(12):
        cells[2:8, 3 * i:3 * i + 2] = i + 1
    assert LabelConfig().resolve([cells], num_classes=2).kind == "instances"
    assert LabelConfig().resolve([cells]).kind == "instances"           # 13 values: more than classes
    assert LabelConfig().resolve([cells], num_classes=3).kind == "instances"
    classes, instances = LabelConfig("instances").targets(cells, 2)
    assert len(np.unique(instances)) == 13 and np.array_equal(classes, (instances > 0).astype(np.int64))


def test_detection_looks_at_all_labels_together() -> None:
    # Each file alone is a 0/v mask, but two different foreground values are not one binary convention.
    a, b = label_values(np.array([[0, 1]]), "a.png"), label_values(np.array([[0, 2]]), "b.png")
    assert LabelConfig().resolve([a, b], num_classes=3).kind == "classes"
    assert LabelConfig().resolve([a, b], num_classes=2).kind == "instances"
    # An empty label among masks does not change the decision.
    empty = label_values(np.zeros((2, 2), np.int64), "c.png")
    assert LabelConfig().resolve([a, empty], num_classes=2) == LabelConfig("binary", foreground=1)


def test_the_ignore_value_is_left_out_of_detection() -> None:
    sparse = np.array([[0, 1, 255, 255]])
    config = LabelConfig(ignore=255).resolve([sparse], num_classes=2)
    assert config == LabelConfig("binary", foreground=1, ignore=255)
    classes, _ = config.targets(sparse, 2)
    assert classes.tolist() == [[0, 1, IGNORE_INDEX, IGNORE_INDEX]]
    # Without it, 255 is a second object value.
    assert LabelConfig().resolve([sparse], num_classes=2).kind == "instances"


def test_an_explicit_foreground_still_picks_one_value() -> None:
    raw = np.array([[0, 255, 255, 7], [0, 255, 0, 7]])
    config = LabelConfig("binary", foreground=255)
    assert config.resolve([raw], 2) == config
    assert LabelConfig(foreground=255).resolve([raw], 2) == config, "auto with a foreground is binary"
    classes, instances = config.targets(raw, 2)
    assert classes.tolist() == [[0, 1, 1, 0], [0, 1, 0, 0]]
    assert instances.max() == 1


@pytest.mark.parametrize(("config", "values", "classes", "message"), [
    (LabelConfig("binary"), [0, 1, 2], 2, r"a\.png: label values \[0, 1, 2\] do not fit binary labels"),
    (LabelConfig("classes"), [0, 1, 5], 3, r"a\.png: label values \[5\] are not classes 0\.\.2 \(values seen: "
                                           r"\[0, 1, 5\]"),
    (LabelConfig("instances"), [-3, 0, 4], 2, r"a\.png: label values \[-3, 0, 4\] include negative ones"),
    (LabelConfig(), [-3, 0, 4], 2, r"a\.png: label values \[-3, 0, 4\] include negative ones"),
])
def test_labels_that_do_not_fit_the_kind_name_the_file_and_the_values(config: LabelConfig, values: list[int],
                                                                      classes: int, message: str) -> None:
    with pytest.raises(BiounetError, match=message):
        config.resolve([label_values(np.array([values]), Path("labels/a.png"))], classes)


def test_two_foreground_values_across_files_name_both(tmp_path: Path) -> None:
    a, b = label_values(np.array([[0, 1]]), "x/a.png"), label_values(np.array([[0, 255]]), "x/b.png")
    with pytest.raises(BiounetError, match=r"x/b\.png: label values \[0, 255\] .*\(x/a\.png has 1\)"):
        LabelConfig("binary").resolve([a, b], 2)


def test_an_all_background_training_set_is_an_error_naming_the_values() -> None:
    labels = [label_values(np.zeros((4, 4), np.int64), f"labels/{i}.png") for i in range(3)]
    with pytest.raises(BiounetError, match=r"^labels: no foreground pixel in any of the 3 training labels "
                                           r"\(values seen: \[0\]"):
        LabelConfig().resolve(labels, 2)
    # The old default, foreground 255, on 0/1 masks: no pixel is foreground.
    masks = [label_values(np.array([[0, 1]]), "labels/a.png")]
    with pytest.raises(BiounetError, match=r"labels/a\.png: no foreground pixel in the training label \(values "
                                           r"seen: \[0, 1\]"):
        LabelConfig("binary", foreground=255).resolve(masks, 2)
    # Evaluation truths may be empty.
    assert LabelConfig().resolve(labels, 2, require_foreground=False).kind == "binary"


def test_read_label_refuses_fractions_and_several_channels(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "f.tif", np.full((8, 8), 0.5, np.float32))
    with pytest.raises(BiounetError, match=r"f\.tif: a label image must hold whole numbers"):
        read_label(tmp_path / "f.tif")
    iio.imwrite(tmp_path / "rgb.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(BiounetError, match=r"rgb\.png: a label image must have one channel, this one has 3"):
        read_label(tmp_path / "rgb.png")
    tifffile.imwrite(tmp_path / "w.tif", np.full((8, 8), 3.0, np.float32))
    assert read_label(tmp_path / "w.tif").dtype == np.int64


@pytest.mark.parametrize("kind", ["binary", "instances"])
def test_an_unannotated_stripe_neither_splits_a_cell_nor_draws_a_border(kind: str) -> None:
    mask = disc_mask((48, 48), (24, 24), 12)
    label = mask.astype(np.int64) * (255 if kind == "binary" else 7)
    label[:, 22:27] = 100                                     # unannotated columns across the disc
    config = LabelConfig(kind, ignore=100)                    # type: ignore[arg-type]
    classes, instances = config.targets(label, 2)
    ignored = classes == IGNORE_INDEX
    assert ignored[:, 22:27].all() and ignored.sum() == 48 * 5
    left, right = instances[24, 12:22], instances[24, 27:37]
    assert (left > 0).all() and np.unique(np.concatenate([left, right])).size == 1, "one cell on both sides"
    assert (instances[ignored] == 0).all()
    weight = border_weight_map(np.where(ignored, 0, classes), instances, w0=10.0, sigma=5.0,
                               class_weights="balanced", ignore=ignored)
    balance = balanced_class_weights(classes, ignored)
    background = (classes == 0)
    # With one cell there is no border term anywhere: background weighs its class weight exactly.
    assert np.array_equal(weight[background], np.full(background.sum(), balance[0], np.float32))
    assert (weight[ignored] == 0).all()
