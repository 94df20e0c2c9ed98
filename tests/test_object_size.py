"""Object size as a first-class quantity: what a checkpoint records, how an image is rescaled to it and back,
and how ``--object-size auto`` estimates it (issue 22)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from skimage.measure import regionprops

from biounet.cli.main import main
from biounet.data.examples import pair_files, split_validation
from biounet.data.labels import read_label
from biounet.data.targets import boundary_classes, instances_from_classes
from biounet.errors import BiounetError
from biounet.infer.instances import PixelSizes, instances_from_probabilities
from biounet.infer.predict import TileOptions
from biounet.infer.rescale import (
    Rescaled,
    auto_scale,
    chosen_size,
    keeps,
    measured,
    nearest,
    nearest_indices,
    needed,
    resample,
    resize,
    scaled_shape,
)
from biounet.infer.stack import segment_array, stack_instances
from biounet.io.axes import StackPlan, plan_stack
from biounet.metrics.instances import matching_dataset
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.object_size import ObjectSize, equivalent_diameters, median_diameter
from biounet.pretrained import resolve_model
from conftest import discs, write_disc_dataset


@pytest.fixture(scope="module")
def nuclei() -> Checkpoint:
    return load_checkpoint(resolve_model("nuclei"))


def segment(checkpoint: Checkpoint, image: np.ndarray, **options: object):  # type: ignore[no-untyped-def]
    plan = plan_stack("CYX", image.shape, 2, checkpoint.config.in_channels)
    return segment_array(checkpoint, image, plan, Path("discs.png"), options=TileOptions(**options))  # type: ignore[arg-type]


def test_equivalent_diameters_are_those_of_discs_and_balls() -> None:
    ids = np.zeros((60, 60), np.int32)
    ids[:10, :10] = 1  # 100 px: the disc of that area is 2 sqrt(100 / pi) across
    ids[20:21, 20:51] = 3  # 31 px
    assert equivalent_diameters(ids) == pytest.approx([2 * np.sqrt(100 / np.pi), 2 * np.sqrt(31 / np.pi)])
    ball = np.zeros((8, 8, 8), np.int32)
    ball[:4, :4, :4] = 2  # 64 voxels: cbrt(6 * 64 / pi)
    assert equivalent_diameters(ball) == pytest.approx([np.cbrt(384 / np.pi)])
    assert median_diameter([np.zeros((4, 4), np.int32)]) is None


@pytest.mark.parametrize("diameter", [10, 19, 36])
def test_auto_estimates_hand_made_discs_within_10_percent(nuclei: Checkpoint, diameter: int) -> None:
    image, ids = discs(diameter)
    truth = median_diameter([ids])
    assert truth == pytest.approx(diameter, rel=0.05)  # the rasterised discs are as drawn
    found = segment(nuclei, image, object_size="auto")
    assert nuclei.object_size is not None and found.object_size is not None
    assert found.object_size == pytest.approx(truth, rel=0.10)
    if keeps(nuclei.object_size, found.object_size):
        assert found.scale == 1.0  # the smaller sizes the model knows: the first pass is kept
    else:  # rescaled to its median
        # The scale comes from the first passes' estimate; the size reported is measured on the rescaled pass.
        assert found.scale == pytest.approx(min(max(nuclei.object_size.diameter / truth, 0.25), 4), rel=0.2)
    assert matching_dataset([found.ids], [ids], (0.5,))[0].accuracy > 0.9


def test_a_rescaled_image_s_objects_map_back_onto_its_grid(nuclei: Checkpoint) -> None:
    """Discs twice the model's size, predicted at half size: every output is on the image's own grid, and
    each object lies where its disc is."""
    image, ids = discs(38, shape=(230, 270), seed=3)
    found = segment(nuclei, image, object_size=38)
    assert found.scale == pytest.approx(nuclei.object_size.diameter / 38)  # type: ignore[union-attr]
    assert found.probs.shape == (3, 230, 270) and found.mask.shape == found.ids.shape == (230, 270)
    np.testing.assert_allclose(found.probs.sum(0), 1.0, atol=1e-5)
    curve = matching_dataset([found.ids], [ids], (0.5, 0.8))
    assert curve[0].accuracy == 1.0 and curve[1].accuracy > 0.9
    truth_centres = {r.label: np.array(r.centroid) for r in regionprops(ids)}
    for region in regionprops(found.ids):
        nearest = min(np.linalg.norm(np.array(region.centroid) - c) for c in truth_centres.values())
        assert nearest < 1.5


@pytest.mark.parametrize("size", [11.0, 31.0])
def test_tiled_equals_whole_at_any_scale(nuclei: Checkpoint, size: float) -> None:
    image, _ = discs(size, shape=(180, 150), seed=1)
    whole = segment(nuclei, image, object_size=size)
    tiled = segment(nuclei, image, object_size=size, tile=124)  # 36 px outputs: many tiles at either scale
    assert whole.scale == tiled.scale != 1.0
    np.testing.assert_allclose(tiled.probs, whole.probs, atol=2e-5)
    assert (tiled.ids == whole.ids).mean() > 0.999


def test_nearest_takes_the_pixel_each_centre_falls_in() -> None:
    # 5 -> 2: centres at 1.25 and 3.75 source pixels; 2 -> 5: at 0.2, 0.6, 1.0, 1.4, 1.8.
    assert nearest_indices(5, 2, 0, 2).tolist() == [1, 3]
    assert nearest_indices(2, 5, 0, 5).tolist() == [0, 0, 1, 1, 1]
    assert nearest_indices(6, 3, 1, 3).tolist() == [3, 5]  # a region of the target
    labels = np.arange(20).reshape(4, 5)
    np.testing.assert_array_equal(nearest(labels, (2, 2)), [[6, 8], [16, 18]])


def test_an_enlarged_image_s_objects_are_found_on_the_model_s_grid(nuclei: Checkpoint) -> None:
    """Two nuclei touching along a one-pixel boundary on the model's grid (the image enlarged 2x): split there
    and brought back by nearest pixel they stay two; split from the probabilities resized back onto the image's
    grid, the gap blurs below the seed threshold's depth and they merge (the natural shortcut)."""
    assert nuclei.instances is not None
    fine = np.zeros((3, 40, 40), np.float32)
    fine[0] = 1.0
    fine[:, 10:30, 6:34] = np.array([0.0, 1.0, 0.0])[:, None, None]  # two interiors, 13 px wide each ...
    fine[:, 10:30, 19:21] = np.array([0.0, 0.3, 0.7])[:, None, None]  # ... with a boundary between them
    plan = plan_stack("CYX", (3, 20, 20), 2, 3)
    probs = resize(fine, (20, 20))
    mask = probs.argmax(0)
    blurred = stack_instances(nuclei, probs, mask, plan, 2.0)
    split = stack_instances(nuclei, probs, mask, plan, 2.0, fine)  # one item: items first is as it is
    assert blurred.max() == 1 and split.max() == 2
    fine_ids = instances_from_probabilities(fine, nuclei.instances)
    np.testing.assert_array_equal(split, nearest(fine_ids, (20, 20)))


def test_the_post_processing_sizes_are_counted_in_the_model_s_pixels() -> None:
    sizes = PixelSizes(0.5, 2)
    assert sizes.min_size(39) == 156 and sizes.growth == 2 and sizes.sigma == 2.0
    assert PixelSizes(2.0, 2).min_size(39) == 10 and PixelSizes(2.0, 2).growth == 1  # 39 / 4 = 9.75
    assert PixelSizes(2.0, 3).min_size(39) == 5  # 39 / 8 = 4.875
    assert PixelSizes(1.0, 2).min_size(39) == 39
    # Discs of 21 px across (332 to 349 px) in an image predicted at half size (scale 0.5): a minimum size of 80 model
    # pixels is 320 of the image's and keeps them, one of 90 (360) drops them all; at scale 1 both keep them.
    _, truth = discs(21, shape=(96, 96), seed=1)
    areas = np.bincount(truth.ravel())[1:]
    assert areas.min() > 320 and areas.max() < 360
    classes = boundary_classes(truth)
    probabilities = np.stack([(classes == k).astype(np.float32) for k in range(3)])
    found = instances_from_probabilities(probabilities, InstanceParams(min_size=80), scale=0.5)
    assert matching_dataset([found], [truth], (0.9,))[0].accuracy == 1.0
    assert instances_from_probabilities(probabilities, InstanceParams(min_size=90), scale=0.5).max() == 0
    assert instances_from_probabilities(probabilities, InstanceParams(min_size=90)).max() == truth.max()


def test_resampled_probabilities_stay_probabilities() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (3, 40, 50))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    for shape in [(17, 111), (80, 100), (40, 50)]:
        out = resize(probs, shape)
        assert out.shape == (3, *shape) and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(resize(probs, (40, 50)), probs)


def test_resizing_a_hand_computed_case_and_skimage_s_resize() -> None:
    """Pixel areas aligned: two pixels [0, 1] enlarged to four put their centres at -0.25, 0.25, 0.75 and 1.25,
    mirrored at the end pixels (-0.25 reads pixels 1 and 0 with weights 0.25 and 0.75); shrinking four to two
    first blurs with skimage's anti-aliasing Gaussian. The resampler is skimage.transform.resize's linear one
    written out (so that any region can be computed from a window): equal to it, up and down, in 2D and 3D."""
    np.testing.assert_allclose(resize(np.array([[[0.0, 1.0]]]), (1, 4)), [[[0.25, 0.25, 0.75, 0.75]]])
    from skimage.transform import resize as skimage_resize

    rng = np.random.default_rng(4)
    for source, shape in [((40, 50), (20, 25)), ((37, 51), (19, 77)), ((5, 7), (13, 3)), ((1, 9), (3, 4)),
                          ((12, 10, 9), (25, 5, 9))]:
        values = rng.random((2, *source)).astype(np.float32)
        reference = skimage_resize(values, (2, *shape), order=1, mode="reflect", preserve_range=True,
                                   anti_aliasing=any(m < n for m, n in zip(shape, source, strict=True)))
        np.testing.assert_allclose(resize(values, shape), reference, atol=1e-6)


@pytest.mark.parametrize(("source", "shape"), [((61, 47), (117, 90)), ((61, 47), (23, 30)), ((9, 20, 17), (17, 9, 40))])
def test_any_region_of_a_rescaled_image_equals_the_whole_image_rescaled(source: tuple[int, ...],
                                                                        shape: tuple[int, ...]) -> None:
    """Out-of-core prediction resamples block by block: every region, edges included, read from the window of
    the original that needed() names, equals that region of the whole array resized, to the bit."""
    rng = np.random.default_rng(5)
    values = rng.random((2, *source)).astype(np.float32)
    whole = resize(values, shape)
    lazy = Rescaled(values, shape)
    assert lazy.shape == (2, *shape)
    for _ in range(40):
        start = tuple(int(rng.integers(0, n)) for n in shape)
        stop = tuple(int(rng.integers(a + 1, n + 1)) for a, n in zip(start, shape, strict=True))
        region = (slice(None), *(slice(a, b) for a, b in zip(start, stop, strict=True)))
        np.testing.assert_array_equal(lazy[region], whole[region])
        box = needed(source, shape, start, stop)
        assert all(0 <= lo < hi <= n for (lo, hi), n in zip(box, source, strict=True))
        window = values[(slice(None), *(slice(lo, hi) for lo, hi in box))]
        np.testing.assert_array_equal(resample(window, tuple(lo for lo, _ in box), source, shape, start, stop),
                                      whole[region])


def test_a_checkpoint_records_its_object_size(tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    save_checkpoint(tmp_path / "m.pt", model, object_size=ObjectSize(18.5, 0.65, 11.0, 40.0))
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.object_size == ObjectSize(18.5, 0.65, 11.0, 40.0)
    assert loaded.object_size.physical == pytest.approx(12.025)
    assert loaded.describe()["object_size"] == {"diameter": 18.5, "pixel_size": 0.65, "low": 11.0, "high": 40.0,
                                                     "estimate": False}
    save_checkpoint(tmp_path / "n.pt", model)
    assert load_checkpoint(tmp_path / "n.pt").object_size is None


def test_training_records_the_median_diameter_of_its_training_objects(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 6)
    out = tmp_path / "run"
    assert main(["train", "--images", str(images), "--labels", str(labels), "--out", str(out), "--epochs", "1",
                 "--quiet", "--set", "model.base_channels=4", "--set", "model.depth=2", "--set", "tile=60",
                 "--set", "samples_per_epoch=2"]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    train, _ = split_validation(pair_files(images, labels), config["data"]["val_fraction"], config["seed"])
    # By hand: skimage's equivalent diameter of every connected disc of the training labels.
    per_image = [[r.area for r in regionprops(instances_from_classes(read_label(label, 2) > 0))] for _, label in train]
    medians = sorted(np.median(a) for a in per_image)  # each image's median disc area
    median = np.median([2 * np.sqrt(a / np.pi) for a in np.concatenate(per_image)])

    def percentile(q: float) -> float:  # the disc of the area numpy's default (linear) percentile gives
        at = q * (len(medians) - 1)
        below, above = medians[int(at)], medians[min(int(at) + 1, len(medians) - 1)]
        return float(2 * np.sqrt((below + (at - int(at)) * (above - below)) / np.pi))

    for name in ("model.pt", "last.pt"):
        size = load_checkpoint(out / name).object_size
        assert size is not None and size.pixel_size is None  # PNGs say nothing of their pixel size
        assert size.diameter == pytest.approx(median, abs=0.005)
        # The range: 10th and 90th percentiles of the images' own median areas as diameters, holding the median.
        assert size.low == pytest.approx(min(percentile(0.1), median), abs=0.005)
        assert size.high == pytest.approx(max(percentile(0.9), median), abs=0.005)


def test_predict_prints_the_size_it_estimated(nuclei: Checkpoint, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v3 as iio

    assert nuclei.object_size is not None
    median, high = nuclei.object_size.diameter, nuclei.object_size.known[1]
    # Larger than any size the model knows: at full size, the model splits each into pieces of sizes it knows.
    image, _ = discs(round(1.25 * high), shape=(400, 400), seed=2)
    iio.imwrite(tmp_path / "big.png", image[0])
    assert main(["predict", "--model", "nuclei", str(tmp_path / "big.png"), "--out", str(tmp_path / "out"),
                 "--object-size", "auto", "--outputs", "instances"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"{tmp_path / 'big.png'} -> {tmp_path / 'out' / 'big_instances.tif'} (objects of ")
    found, scale = re.fullmatch(r".*\(objects of ([0-9.]+) px: rescaled ([0-9.]+)x\)", line).groups()  # type: ignore[union-attr]
    assert float(found) == pytest.approx(1.25 * high, rel=0.1)
    assert float(scale) == pytest.approx(max(median / float(found), 0.25), rel=0.1)  # to the model's median
    # The shipped model estimates by default: the same line without the option; "none" takes the image as it is.
    assert main(["predict", "--model", "nuclei", str(tmp_path / "big.png"), "--out", str(tmp_path / "default"),
                 "--outputs", "instances"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(line[line.rindex(" (objects of"):])
    assert main(["predict", "--model", "nuclei", str(tmp_path / "big.png"), "--out", str(tmp_path / "none"),
                 "--outputs", "instances", "--object-size", "none"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("big_instances.tif")


def test_no_object_size_is_the_model_s_default() -> None:
    plain, estimating = ObjectSize(20.0), ObjectSize(20.0, estimate=True)
    assert chosen_size(estimating, None) == "auto" and chosen_size(plain, None) is None
    assert chosen_size(None, None) is None  # a model that records no size: as it is
    assert chosen_size(estimating, "none") is None and chosen_size(estimating, 31.0) == 31.0
    assert chosen_size(plain, "auto") == "auto"
    with pytest.raises(BiounetError, match="estimate must be true or false"):
        ObjectSize(20.0, estimate="yes")  # type: ignore[arg-type]


def test_auto_keeps_the_smaller_sizes_the_model_knows_and_brings_larger_ones_to_its_median() -> None:
    model = ObjectSize(20.0, None, 10.0, 47.0)
    for kept in (10.0, 14.0, 20.0, 25.0):  # from the smallest size it knows to 1.25x its median
        assert keeps(model, kept) and auto_scale(model, kept) == 1.0
    for diameter in (9.5, 25.5, 40.0, 47.0):  # 40 and 47 px are sizes it knows, but larger than 1.25x 20 px
        assert not keeps(model, diameter) and auto_scale(model, diameter) == pytest.approx(20.0 / diameter)
    assert auto_scale(model, 200.0) == 0.25 and auto_scale(model, 2.0) == 4.0  # at most 4x either way


def test_the_half_size_pass_measures_large_objects_split_at_full_size_not_crowds_of_small_ones() -> None:
    model = ObjectSize(20.0, None, 10.0, 47.0)
    # Pieces of a size the model knows at full size, objects of 60 px (30 at half size) whole at the probe.
    assert measured(model, 15.0, 60.0) == 60.0
    assert measured(model, None, 60.0) == 60.0  # nothing found at full size
    assert measured(model, 15.0, 17.0) == 15.0  # not 1.25x larger
    assert measured(model, 15.0, 120.0) == 15.0  # 60 px at half size: larger than any the model knows
    # Objects of 6 px at full size are small objects: the blobs their crowds make at half size do not count.
    assert measured(model, 6.0, 30.0) == 6.0
    assert measured(model, None, None) is None and measured(model, 15.0, None) == 15.0


def test_the_sizes_a_model_knows_are_its_range_and_at_least_its_median_within_the_tolerance() -> None:
    assert ObjectSize(18.5).known == pytest.approx((18.5 / 1.25, 18.5 * 1.25))  # older checkpoints: no range
    assert ObjectSize(18.7, None, 10.2, 47.5).known == (10.2, 47.5)
    assert ObjectSize(20.0, None, 19.0, 21.0).known == pytest.approx((16.0, 25.0))  # a narrow range widens
    assert ObjectSize(18.7, None, 10.2, 47.5).describe() == "18.7 px (10.2..47.5 px)"
    assert ObjectSize(18.5, 0.5, 10.0, 40.0).describe() == "18.5 px (10.0..40.0 px, 9.25 in the files' unit)"
    for bad in [dict(diameter=0.0), dict(diameter=10.0, low=12.0, high=20.0), dict(diameter=10.0, pixel_size=-1.0),
                dict(diameter=float("nan"))]:
        with pytest.raises(BiounetError, match="object size"):
            ObjectSize(**bad)  # type: ignore[arg-type]


def test_a_rescaling_that_leaves_the_objects_of_no_known_size_is_undone(nuclei: Checkpoint,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A large nucleus the model sees in pieces at full size: the pieces (8 px, smaller than any size it knows)
    set the scale (2.45x), and the enlarged pass finds specks (3 px there, 7 px in its own pixels: still
    smaller than any it knows), so the result is the image as it is, not the specks (the DSB test image
    93c5638e7e at twice its size: one nucleus, 219 specks)."""
    from biounet.infer import stack

    def blobs(shape: tuple[int, ...], scale: float, centres: list[tuple[int, int]], radius: float) -> np.ndarray:
        """Discs given on the image's grid, drawn on its grid resized by ``scale`` (the model's)."""
        yy, xx = (np.mgrid[: shape[0], : shape[1]] + 0.5) / scale - 0.5
        return np.any([(yy - y) ** 2 + (xx - x) ** 2 <= radius**2 for y, x in centres], axis=0)

    pieces = [(40, 40), (40, 60), (60, 50)], 4
    whole = [(50, 50)], 14
    specks = [(y, x) for y in range(10, 110, 8) for x in range(10, 110, 8)], 1.6

    def fake(checkpoint: Checkpoint, array: np.ndarray, plan: StackPlan, path: Path, options: object, scale: float,
             on_progress: object, stacked: np.ndarray) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        shape = scaled_shape(plan.spatial_shape, scale)
        inside = blobs(shape, scale, *{1.0: pieces, 0.5: whole}.get(scale, specks))
        interior = np.where(inside, 0.9, 0.05).astype(np.float32)
        probs = np.stack([1 - interior - 0.05, interior, np.full_like(interior, 0.05)])
        if scale == 1.0:
            stacked[:] = probs
        yield (), probs

    monkeypatch.setattr(stack, "_predicted_items", fake)
    size = nuclei.object_size
    assert size is not None and not keeps(size, 8.0) and measured(size, 8.0, 28.0) == 8.0
    found = segment(nuclei, np.zeros((3, 120, 120), np.uint8), object_size="auto")
    assert found.scale == 1.0 and found.ids.max() == 3
    np.testing.assert_array_equal(found.ids > 0, blobs((120, 120), 1.0, *pieces))
