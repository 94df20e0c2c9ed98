"""The napari plugin, headless: a real viewer (pytest-qt, napari's make_napari_viewer, drawn by Qt's
offscreen platform into the virtual X server that pytest-xvfb starts), the widgets driven as a user would."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from biounet.cli.main import main
from biounet.infer.predict import TileOptions
from biounet.napari.layers import CONTEXT, IGNORE, ORIGINAL, layer_axes, training_label

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "biounet" / "pretrained" / "samples"
Factory = Callable[..., Any]


@pytest.fixture
def viewer(make_napari_viewer: Factory) -> Any:
    # Without an X server, conftest.py skips every test that gets here at collection.
    return make_napari_viewer()


def wait_for(qtbot: Any, widget: Any, worker: Any, timeout: int = 300_000) -> None:
    """Waits for a widget's job: the widget's own state, since a fast job may end before a test could connect
    to its worker's signals."""
    assert worker is not None
    qtbot.waitUntil(lambda: not widget.busy, timeout=timeout)


def segment_widget(viewer: Any, model: str) -> Any:
    _, widget = viewer.window.add_plugin_dock_widget("biounet", "Segment")
    widget.model.setCurrentText(model)
    assert widget.model.currentText() == model
    return widget


# --- pure layer logic ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "rgb", "dims", "channels", "axes"), [
    ((64, 80), False, 2, 1, "YX"),
    ((64, 80, 3), True, 2, 3, "YXC"),
    ((5, 64, 80), False, 2, 1, "ZYX"),       # a stack, plane by plane
    ((4, 5, 64, 80, 4), True, 2, 3, "TZYXC"),
    ((5, 64, 80), False, 3, 1, "ZYX"),       # a volume
    ((3, 5, 64, 80), False, 3, 1, "TZYX"),
    ((2, 64, 80), False, 2, 2, "CYX"),       # a first axis as long as the model's channels
])
def test_layer_axes(shape: tuple[int, ...], rgb: bool, dims: int, channels: int, axes: str) -> None:
    assert layer_axes(shape, rgb, dims, channels) == axes


def test_layer_axes_refuses_a_plane_for_a_3d_model() -> None:
    from biounet.errors import BiounetError

    with pytest.raises(BiounetError, match="does not fit a 3D model"):
        layer_axes((64, 80), False, 3, 1)


def test_training_label_keeps_the_corrections_and_a_margin() -> None:
    original = np.zeros((40, 40), np.int32)
    original[5:15, 5:15] = 1        # an object the user erases
    original[25:35, 25:35] = 2      # one left as it is
    corrected = original.copy()
    corrected[5:15, 5:15] = 0
    corrected[20:24, 5:9] = 3       # a new one
    label = training_label(corrected, original)
    changed = corrected != original
    assert (label[changed] == corrected[changed]).all()
    # Pixels far from any correction are not annotated; those within CONTEXT of one are, with their values.
    assert (label[30, 30] == IGNORE) and (label[0, 39] == IGNORE)
    assert label[5 - CONTEXT, 10] == 0 and label[5 - CONTEXT - 1, 10] == IGNORE
    # A hand-drawn layer (no original) is annotated everywhere.
    assert (training_label(corrected, None) == corrected).all()


def test_training_pairs_of_an_rgb_stack_are_the_annotated_planes(tmp_path: Path) -> None:
    from biounet.errors import BiounetError
    from biounet.io.readers import read_image
    from biounet.napari.layers import write_training_pairs

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (3, 30, 40, 3)).astype(np.uint8)   # Z, Y, X, RGB
    label = np.full((3, 30, 40), IGNORE, np.int32)
    label[1, 5:15, 5:15] = 2
    label[1, 20:25, :] = 0
    images, labels, count = write_training_pairs(tmp_path, "cells", stack, True, label, 2, 3)
    assert count == 1 and [f.name for f in images.iterdir()] == ["cells_z1.tif"]
    np.testing.assert_array_equal(read_image(images / "cells_z1.tif"), np.moveaxis(stack[1], -1, 0))
    np.testing.assert_array_equal(tifffile.imread(labels / "cells_z1.tif"), label[1])
    with pytest.raises(BiounetError, match="nothing to train on"):
        write_training_pairs(tmp_path / "none", "cells", stack, True, np.full_like(label, IGNORE), 2, 3)


@pytest.mark.parametrize("size", ["none", 9.0])
def test_resplit_equals_segmenting_again_with_the_settings(size: str | float) -> None:
    from biounet.models.instance_params import InstanceParams
    from biounet.napari.layers import resplit, segment
    from biounet.napari.models import load_model

    model = load_model("nuclei")
    image = iio.imread(SAMPLES / "nuclei.png")[:192, :160]
    stack = np.stack([image, image[::-1]])  # two planes: ids unique over the stack
    # As it is, or at one size (9 px: enlarged 2.2x, the objects found on the enlarged grid): with the model's
    # default ("auto"), segmenting again with other settings may choose another scale.
    options = TileOptions(object_size=size)
    first = segment(model, stack, True, options=options)
    assert (first.scale > 1) == (size != "none") and (first.fine is not None) == (size != "none")
    for params in (InstanceParams(0.8, 0.5, 0), InstanceParams(0.3, 0.8, 60)):
        again = segment(model, stack, True, options=options, instances=params).labels
        np.testing.assert_array_equal(resplit(first, model, params), again)
        assert not np.array_equal(again, first.labels)


def test_the_collection_keeps_every_corrected_image_and_replaces_one_corrected_again(tmp_path: Path) -> None:
    from biounet.napari.collection import Corrections

    collection = Corrections(tmp_path / "corrections")
    assert collection.entries() == []
    image = np.zeros((40, 50), np.uint8)
    label = np.full((40, 50), IGNORE, np.int32)
    label[:10, :10] = 0
    label[2:6, 2:6] = 7
    assert collection.add("a", image, False, label, 2, 1) == 1
    label[20:30, 20:30] = 3
    collection.add("b", image, False, label, 2, 1)
    collection.add("a_b", np.stack([image, image]), False, np.stack([label, np.full_like(label, IGNORE)]), 2, 1)
    assert [(e.name, e.objects) for e in collection.entries()] == [("a", 1), ("a_b_z0", 2), ("b", 2)]
    collection.add("a", image, False, label, 2, 1)  # corrected again: replaced, "a_b" kept
    assert [(e.name, e.objects) for e in collection.entries()] == [("a", 2), ("a_b_z0", 2), ("b", 2)]
    assert collection.entries()[0].annotated == pytest.approx(200 / 2000)


# --- the viewer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sample", "model", "output"), [
    ("nuclei", "nuclei", "instances"),
    ("isbi2012-em", "isbi2012-membranes", "mask"),
])
def test_segment_equals_the_cli(viewer: Any, qtbot: Any, tmp_path: Path, sample: str, model: str,
                                output: str) -> None:
    viewer.open_sample("biounet", sample)
    image = viewer.layers[-1]
    image.scale = (0.5,) * (image.ndim)
    widget = segment_widget(viewer, model)
    wait_for(qtbot, widget, widget.run())
    labels = viewer.layers[-1]
    assert labels.name == f"{image.name} {'objects' if output == 'instances' else 'classes'}"
    assert main(["predict", str(SAMPLES / f"{sample}.png"), "--model", model, "--out", str(tmp_path), "--outputs",
                 output]) == 0
    written = tmp_path / f"{sample}_{'instances.tif' if output == 'instances' else 'mask.png'}"
    expected = tifffile.imread(written) if written.suffix == ".tif" else iio.imread(written)
    np.testing.assert_array_equal(np.asarray(labels.data), expected)
    assert labels.data.max() > (20 if output == "instances" else 0)
    probability = viewer.layers[-2]
    assert probability.name == f"{image.name} probability" and probability.data.shape == expected.shape
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(probability.scale) == (0.5, 0.5)


def test_segment_a_stack_plane_by_plane(viewer: Any, qtbot: Any) -> None:
    from biounet.napari.layers import segment
    from biounet.napari.models import load_model

    plane = iio.imread(SAMPLES / "isbi2012-em.png")[:200, :240]
    stack = np.stack([plane, plane[::-1], plane[:, ::-1]])
    viewer.add_image(stack, name="stack")
    widget = segment_widget(viewer, "isbi2012-membranes")
    wait_for(qtbot, widget, widget.run())
    labels = viewer.layers["stack classes"]
    assert labels.data.shape == stack.shape
    # Each plane is segmented as the plane alone would be, its normalisation included.
    for k in range(3):
        np.testing.assert_array_equal(labels.data[k], segment(load_model("isbi2012-membranes"), stack[k], False).labels)


def test_cancel_stops_a_running_job(viewer: Any, qtbot: Any) -> None:
    plane = iio.imread(SAMPLES / "isbi2012-em.png")
    viewer.add_image(np.stack([plane] * 6), name="long")
    widget = segment_widget(viewer, "isbi2012-membranes")
    seen: list[float] = []
    widget.relay.fraction.connect(lambda f: (seen.append(f), widget.cancel()))
    wait_for(qtbot, widget, widget.run())
    assert widget.status.text() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["long"]
    assert seen and max(seen) < 0.5       # stopped after the first batch, not at the end
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()


def test_correct_fine_tune_and_segment_again(viewer: Any, qtbot: Any, tmp_path: Path) -> None:
    import torch

    from biounet.models.checkpoint import load_checkpoint
    from biounet.pretrained import resolve_model

    viewer.open_sample("biounet", "nuclei")
    image = viewer.layers[-1]
    segment = segment_widget(viewer, "nuclei")
    wait_for(qtbot, segment, segment.run())
    labels = viewer.layers[-1]
    before = np.asarray(labels.data).copy()
    # Correct it as a user would with the brush: erase one object, paint a new one in the background.
    erased = int(np.bincount(before.ravel())[1:].argmax()) + 1
    labels.fill(tuple(np.argwhere(before == erased)[0]), 0)
    empty = np.argwhere(np.asarray(labels.data) == 0)
    labels.brush_size = 9
    new_label = int(before.max()) + 1
    labels.paint(tuple(empty[len(empty) // 2]), new_label)
    assert (np.asarray(labels.data) == new_label).sum() > 20 and not (np.asarray(labels.data) == erased).any()
    assert labels.metadata[ORIGINAL].shape == before.shape

    _, train = viewer.window.add_plugin_dock_widget("biounet", "Train / fine-tune")
    train.image.setCurrentText(image.name)
    train.labels.setCurrentText(labels.name)
    train.start_from.setCurrentText("nuclei")
    train.run_dir.edit.setText(str(tmp_path / "run"))
    train.collection.edit.setText(str(tmp_path / "collection"))
    train.minutes.setValue(5.0)
    train.settings.setText("epochs=2 samples_per_epoch=4")
    wait_for(qtbot, train, train.run())
    assert train.status.text().startswith("done"), train.status.text()
    # One corrected image is also the validation image: the check before keeping says nothing was held back.
    assert "no corrected image was held back" in train.status.text()
    # The shipped model's own training pairs are rehearsed and are what the check measures forgetting on.
    assert "on 20 of the start model's own training images (what it knew)" in train.status.text()
    assert train.entries.count() == 1 and "objects" in train.entries.item(0).text()
    model = tmp_path / "run" / "model.pt"
    tuned, shipped = load_checkpoint(model), load_checkpoint(resolve_model("nuclei"))
    assert tuned.instances == shipped.instances  # a few corrections are too few objects to tune it on
    assert any(not torch.equal(a, b) for a, b in zip(tuned.model.state_dict().values(),
                                                       shipped.model.state_dict().values(), strict=True))
    # The training pair: the corrections (and a margin) with their values, the rest unannotated.
    written = tifffile.imread(tmp_path / "collection" / "labels" / f"{image.name.replace(' ', '_')}.tif")
    now = np.asarray(labels.data)
    changed = now != before
    assert (written[changed] == now[changed]).all() and (written == IGNORE).mean() > 0.5
    assert train.plot.losses and train.plot.scores      # the live plot got the steps and the validations
    # Offered in the Segment widget at once, and used by it.
    assert segment.model.currentText() == "run (trained)"
    wait_for(qtbot, segment, segment.run())
    assert viewer.layers[-1].name.startswith(f"{image.name} objects") and viewer.layers[-1] is not labels
    assert viewer.layers[-1].data.shape == before.shape


def test_reader_opens_cli_outputs(viewer: Any, tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "isbi2012-em.png", tmp_path / "em.png")
    predict = ["predict", str(tmp_path / "em.png"), "--model", "isbi2012-membranes", "--out"]
    assert main([*predict, str(tmp_path / "tif")]) == 0
    assert main([*predict, str(tmp_path / "em.zarr"), "--out-format", "zarr"]) == 0
    mask = iio.imread(tmp_path / "tif" / "em_mask.png")
    prob = tifffile.imread(tmp_path / "tif" / "em_prob.tif")
    layers = viewer.open(str(tmp_path / "tif" / "em_mask.png"), plugin="biounet")
    np.testing.assert_array_equal(np.asarray(layers[0].data), mask)
    layers = viewer.open(str(tmp_path / "tif" / "em_prob.tif"), plugin="biounet")
    assert len(layers) == 2
    np.testing.assert_array_equal(np.asarray(layers[1].data), prob[1])
    layers = viewer.open(str(tmp_path / "em.zarr"), plugin="biounet")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Image", "Labels"]
    np.testing.assert_array_equal(np.asarray(layers[2].data), mask)
    np.testing.assert_allclose(np.asarray(layers[1].data), prob[1], atol=1e-6)


def test_segment_a_time_series_of_volumes_with_a_3d_model(viewer: Any, qtbot: Any, tmp_path: Path) -> None:
    from biounet.models import UNet, UNetConfig
    from biounet.models.checkpoint import save_checkpoint
    from biounet.napari.layers import segment
    from biounet.napari.models import MODELS, load_model

    path = tmp_path / "volume.pt"
    save_checkpoint(path, UNet(UNetConfig(spatial_dims=3, base_channels=2, depth=2, norm="batch")))
    name = MODELS.add(path)
    series = np.random.default_rng(0).integers(0, 255, (2, 20, 36, 40)).astype(np.uint8)  # T, Z, Y, X
    viewer.add_image(series, name="series", scale=(1, 2.0, 0.5, 0.5), translate=(0, 10, 0, 0))
    widget = segment_widget(viewer, name)
    wait_for(qtbot, widget, widget.run())
    labels = viewer.layers["series classes"]
    assert labels.data.shape == series.shape
    assert tuple(labels.scale) == (1, 2.0, 0.5, 0.5) and tuple(labels.translate) == (0, 10, 0, 0)
    for t in range(2):  # each volume as the volume alone
        np.testing.assert_array_equal(labels.data[t], segment(load_model(str(path)), series[t], False).labels)
    # A plane does not fit a 3D model: one line in the widget, no layer, no traceback.
    viewer.add_image(series[0, 0], name="plane")
    widget.image.setCurrentText("plane")
    wait_for(qtbot, widget, widget.run())
    assert widget.status.text().startswith("error: a layer of shape (36, 40) does not fit a 3D model")
    assert "plane classes" not in [layer.name for layer in viewer.layers]


def test_train_from_folders(viewer: Any, qtbot: Any, tmp_path: Path) -> None:
    from biounet.models import UNet, UNetConfig
    from biounet.models.checkpoint import save_checkpoint
    from biounet.napari.models import MODELS
    from conftest import write_disc_dataset

    images, labels = write_disc_dataset(tmp_path / "data", 3)
    start = tmp_path / "start.pt"
    save_checkpoint(start, UNet(UNetConfig(base_channels=4, depth=2)))
    _, train = viewer.window.add_plugin_dock_widget("biounet", "Train / fine-tune")
    train.source.setCurrentText("folders of images and labels")
    assert train.pages.currentIndex() == 1
    train.images_dir.edit.setText(str(images))
    train.labels_dir.edit.setText(str(labels))
    train.start_from.setCurrentText(MODELS.add(start))
    train.run_dir.edit.setText(str(tmp_path / "run"))
    train.settings.setText("epochs=2 samples_per_epoch=2 tile=92")
    wait_for(qtbot, train, train.run())
    assert train.status.text().startswith("done"), train.status.text()
    assert (tmp_path / "run" / "model.pt").exists() and not (tmp_path / "run" / "data").exists()
    assert len(train.plot.scores) == 2
    # A second run into the same directory is refused in one line.
    assert train.run() is None and "a run already exists here" in train.status.text()


def test_object_settings_come_from_the_checkpoint_and_change_the_objects(viewer: Any, qtbot: Any) -> None:
    from biounet.models.instance_params import InstanceParams
    from biounet.napari.layers import segment
    from biounet.napari.models import load_model

    viewer.open_sample("biounet", "nuclei")
    widget = segment_widget(viewer, "nuclei")
    shipped = load_model("nuclei").instances
    assert widget.objects.isEnabled() and shipped is not None
    assert (widget.seed.value(), widget.foreground.value(), widget.min_size.value()) == \
        (shipped.seed, shipped.foreground, shipped.min_size)
    widget.seed.setValue(0.8)
    widget.min_size.setValue(200)
    wait_for(qtbot, widget, widget.run())
    labels = viewer.layers[-1].data
    probability = viewer.layers[-2].data
    sizes = np.unique(labels[labels > 0], return_counts=True)[1]
    assert len(sizes) > 5 and sizes.min() >= 200
    # The objects of these settings, not the checkpoint's.
    expected = segment(load_model("nuclei"), viewer.layers[0].data, True,
                       instances=InstanceParams(0.8, shipped.foreground, 200)).labels
    np.testing.assert_array_equal(labels, expected)
    assert probability.shape == labels.shape
    # A semantic model has no object settings.
    widget.model.setCurrentText("isbi2012-membranes")
    assert not widget.objects.isEnabled()


def test_moving_the_object_settings_resplits_the_last_result_at_once(viewer: Any, qtbot: Any) -> None:
    from biounet.models.instance_params import InstanceParams
    from biounet.napari.layers import segment
    from biounet.napari.models import load_model

    viewer.open_sample("biounet", "nuclei")
    widget = segment_widget(viewer, "nuclei")
    shipped = load_model("nuclei").instances
    assert shipped is not None
    assert widget.auto_size.isChecked()  # the model's default: estimate the objects' size
    widget.auto_size.setChecked(False)  # as it is (object size 0): segmenting again keeps the scale
    wait_for(qtbot, widget, widget.run())
    labels = viewer.layers[-1]
    layers = len(viewer.layers)
    widget.seed.setValue(0.85)  # no job: the objects change in the same call
    widget.min_size.setValue(150)
    assert not widget.busy and len(viewer.layers) == layers
    expected = segment(load_model("nuclei"), viewer.layers[0].data, True, options=TileOptions(object_size="none"),
                       instances=InstanceParams(0.85, shipped.foreground, 150)).labels
    np.testing.assert_array_equal(np.asarray(labels.data), expected)
    np.testing.assert_array_equal(labels.metadata[ORIGINAL], expected)
    # Painted corrections are never overwritten by a re-split.
    edited = np.asarray(labels.data).copy()
    edited[:5, :5] = 999
    labels.data = edited
    widget.seed.setValue(0.5)
    assert np.asarray(labels.data)[0, 0] == 999 and "edited" in widget.status.text()


def test_object_size_rescales_the_image_as_the_cli_does_and_resplits_at_that_scale(viewer: Any, qtbot: Any,
                                                                                  tmp_path: Path) -> None:
    from skimage.transform import rescale

    from biounet.models.checkpoint import load_checkpoint
    from biounet.models.instance_params import InstanceParams
    from biounet.napari.layers import segment
    from biounet.napari.models import load_model
    from biounet.pretrained import resolve_model

    # The nuclei sample enlarged 2x: its nuclei twice the size the model learnt.
    big = rescale(iio.imread(SAMPLES / "nuclei.png")[..., :3], 2, channel_axis=-1, order=1,
                  preserve_range=True).astype(np.uint8)
    iio.imwrite(tmp_path / "big.png", big)
    viewer.add_image(big, name="big", rgb=True)
    widget = segment_widget(viewer, "isbi2012-membranes")
    assert not widget.auto_size.isEnabled()  # a model without an object size
    widget.model.setCurrentText("nuclei")
    size = load_checkpoint(resolve_model("nuclei")).object_size
    assert size is not None
    assert widget.auto_size.isEnabled() and size.describe() in widget.size_label.toolTip()
    widget.auto_size.setChecked(True)
    assert not widget.object_size.isEnabled()
    wait_for(qtbot, widget, widget.run())
    assert "px: rescaled 0." in widget.status.text(), widget.status.text()
    labels = viewer.layers[-1]
    assert main(["predict", str(tmp_path / "big.png"), "--model", "nuclei", "--out", str(tmp_path / "out"),
                 "--outputs", "instances", "--object-size", "auto"]) == 0
    np.testing.assert_array_equal(np.asarray(labels.data), tifffile.imread(tmp_path / "out" / "big_instances.tif"))
    # Moving the minimum size re-splits the result made at that scale, as segmenting again at that object
    # size would (not "auto" again: its estimate is measured on objects of the minimum size in force).
    assert widget.last is not None
    # The size the kept pass was made for (auto's estimate, unless beyond the 4x it rescales by at most).
    estimated = size.diameter / widget.last[1].scale
    widget.min_size.setValue(100)
    expected = segment(load_model("nuclei"), big, True, instances=InstanceParams(
        widget.seed.value(), widget.foreground.value(), 100), options=TileOptions(object_size=estimated)).labels
    np.testing.assert_array_equal(np.asarray(labels.data), expected)
