"""Instance segmentation's recipe: three-class targets, seeded watershed, and tuning its thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import h_maxima

from biounet.data.labels import LabelConfig
from biounet.data.targets import BACKGROUND, BOUNDARY, INTERIOR, boundary_classes
from biounet.infer.instances import SPLIT_DEPTH, PixelSizes, _component_peaks, instances_from_probabilities
from biounet.metrics.instances import instance_scores
from biounet.models.instance_params import InstanceParams
from biounet.training.tuning import small_object_size, tune_instance_params


def discs(shape: tuple[int, ...], centres: list[tuple[float, ...]], radius: float,
          spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Discs (balls in 3D) with ids 1..n; where two overlap, the nearer centre wins, so they touch."""
    spacing = spacing or (1.0,) * len(shape)
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"))
    distances = np.stack([np.sqrt(((grid - np.reshape(c, (-1,) + (1,) * len(shape))) ** 2).sum(0))
                          for c in centres])
    nearest = distances.argmin(0)
    return np.where(distances.min(0) <= radius, nearest + 1, 0).astype(np.int32)


def one_hot(classes: np.ndarray, blur: float = 0.0) -> np.ndarray:
    """Probabilities that a perfect three-class network would give, optionally blurred."""
    probabilities = np.stack([(classes == k).astype(np.float32) for k in range(3)])
    if blur:
        probabilities = ndimage.gaussian_filter(probabilities, (0,) + (blur,) * classes.ndim)
    return probabilities


def test_touching_discs_get_a_boundary_on_each_side_of_their_contact() -> None:
    truth = discs((40, 60), [(20, 18), (20, 38)], 11)
    assert set(np.unique(truth)) == {0, 1, 2}
    classes = boundary_classes(truth)
    # Where the discs touch (x=28 is the left disc's, x=29 the right one's), both sides are boundary.
    row = classes[20]
    assert truth[20, 28] == 1 and truth[20, 29] == 2
    assert row[28] == BOUNDARY and row[29] == BOUNDARY and row[27] == INTERIOR and row[30] == INTERIOR
    # The outer edge is one pixel: boundary, then interior.
    assert row[7] == BOUNDARY and row[8] == INTERIOR and row[6] == BACKGROUND
    # The interiors are two separate regions: the boundary splits the touching discs.
    assert ndimage.label(classes == INTERIOR)[1] == 2


def test_tiny_objects_keep_a_seed() -> None:
    truth = np.zeros((12, 12), np.int32)
    truth[2, 2] = 1                     # a single pixel
    truth[6:8, 6:8] = 2                 # 2x2: all of it is edge
    truth[6:8, 8:10] = 3                # touching the 2x2 square on its right
    classes = boundary_classes(truth)
    assert classes[2, 2] == INTERIOR
    for obj in (2, 3):
        assert (classes[truth == obj] == INTERIOR).any()
    # Pixels where two small objects touch stay boundary, so their seeds do not join.
    assert classes[6, 7] == BOUNDARY and classes[6, 8] == BOUNDARY
    found = instances_from_probabilities(one_hot(classes))
    assert instance_scores(found, truth, 0.5).accuracy == 1.0


def test_instance_labels_train_three_classes_with_a_three_class_model() -> None:
    truth = discs((40, 60), [(20, 18), (20, 38)], 11)
    three, _ = LabelConfig("instances").targets(truth.astype(np.int64), 3)
    np.testing.assert_array_equal(three, boundary_classes(truth))
    two, separated = LabelConfig("instances").targets(truth.astype(np.int64), 2)
    assert set(np.unique(two)) == {0, 1} and separated.max() == 2


def test_two_touching_discs_are_two_objects_and_a_notch_of_boundary_does_not_split_one() -> None:
    truth = discs((48, 64), [(24, 20), (24, 42)], 12)
    found = instances_from_probabilities(one_hot(boundary_classes(truth), blur=1.0))
    assert found.max() == 2
    assert instance_scores(found, truth, 0.9).accuracy == 1.0
    # One disc with a notch of boundary 6 px into it from its edge: still one object.
    single = discs((48, 48), [(24, 24)], 14)
    classes = boundary_classes(single)
    classes[10:16, 24] = BOUNDARY
    found = instances_from_probabilities(one_hot(classes, blur=0.7))
    assert found.max() == 1
    assert instance_scores(found, single, 0.9).accuracy == 1.0
    # Semantic probabilities (two classes) give connected components: the touching discs merge.
    semantic = np.stack([truth == 0, truth > 0]).astype(np.float32)
    assert instances_from_probabilities(semantic).max() == 1


def test_touching_discs_whose_contact_the_network_missed_are_split_at_their_waist() -> None:
    # The network saw no boundary where the discs touch: one interior, two discs wide, with a waist. Seeds
    # from the interior's connected components gave one object; the peaks of its distance transform give two.
    truth = discs((48, 64), [(24, 20), (24, 42)], 12)
    classes = boundary_classes((truth > 0).astype(np.int32))
    assert ndimage.label(classes == INTERIOR)[1] == 1
    found = instances_from_probabilities(one_hot(classes, blur=1.0))
    assert found.max() == 2
    assert instance_scores(found, truth, 0.8).accuracy == 1.0
    # The split runs along the waist: each object holds its own disc's centre and nothing of the other's.
    assert found[24, 20] != found[24, 42]
    for obj in (1, 2):
        assert len(set(np.unique(truth[found == obj])) - {0}) == 1


def test_a_boundary_blurred_outwards_does_not_enlarge_small_objects() -> None:
    # A network's boundary class spreads past a small nucleus's edge (here by two pixels all round): the
    # object is its interior grown by the one pixel the boundary class is, not everything above the threshold.
    truth = discs((40, 40), [(12, 12), (27, 27)], 4)
    classes = boundary_classes(truth)
    spread = ndimage.binary_dilation(truth > 0, iterations=2) & (truth == 0)
    classes[spread] = BOUNDARY
    found = instances_from_probabilities(one_hot(classes))
    np.testing.assert_array_equal(found > 0, truth > 0)
    assert instance_scores(found, truth, 0.99).accuracy == 1.0


def _peaks_one_at_a_time(component: np.ndarray, sizes: PixelSizes) -> np.ndarray | None:
    """The rule of ``_component_peaks`` for one component on its own, plainly (as it was computed before the
    components were packed into strips and pre-filtered by their local maxima)."""
    pad = int(np.ceil(4 * sizes.sigma)) + 1
    crop = np.pad(component, pad)
    distance = ndimage.distance_transform_edt(crop, sampling=sizes.scale)
    if distance.max() <= SPLIT_DEPTH:
        return None
    height = ndimage.gaussian_filter(distance.astype(np.float32), sizes.sigma) + np.float32(1000) * crop
    full = ndimage.generate_binary_structure(crop.ndim, crop.ndim)
    peaks, found = ndimage.label((h_maxima(height, SPLIT_DEPTH) > 0) & crop, structure=full)
    return peaks[(slice(pad, -pad),) * crop.ndim] if found > 1 else None


@pytest.mark.parametrize(("shape", "scale"), [((200, 260), 1.0), ((200, 260), 0.43), ((200, 260), 2.0),
                                              ((30, 60, 60), 1.0)])
def test_component_peaks_packed_in_strips_are_each_components_own(shape: tuple[int, ...], scale: float) -> None:
    # Overlapping balls of many sizes, some cut by the image's edge: components of one ball and of several,
    # with waists. Each one's peaks from the strips are those it has alone, pixel for pixel and numbered alike.
    rng = np.random.default_rng(3)
    grid = np.indices(shape)
    blobs = np.zeros(shape, bool)
    for _ in range(80 if len(shape) == 2 else 40):
        centre, radius = [rng.uniform(0, n) for n in shape], rng.uniform(2, 7) / min(scale, 1.0)
        blobs |= sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2
    components, count = ndimage.label(blobs, structure=np.ones((3,) * len(shape)))
    crops = [components[box] == k for k, box in enumerate(ndimage.find_objects(components), 1)]
    sizes = PixelSizes(scale, len(shape))
    packed = _component_peaks(crops, sizes)
    alone = [_peaks_one_at_a_time(crop, sizes) for crop in crops]
    assert count > 10 and sum(a is not None for a in alone) >= 2
    for a, b in zip(alone, packed, strict=True):
        assert (a is None and (b is None or b.max() <= 1)) or np.array_equal(a, b)


def test_touching_balls_in_an_anisotropic_volume_are_separated() -> None:
    # z spacing 4: the balls are 5 slices tall and 21 px wide; three of them touch in a row.
    spacing = (4.0, 1.0, 1.0)
    truth = discs((9, 40, 80), [(16, 20, 16), (16, 20, 36), (16, 20, 56)], 10.5, spacing)
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    classes = boundary_classes(truth)
    # The boundary is one voxel thick along z as in-plane: the ball's middle slice keeps an interior.
    middle = classes[4][truth[4] == 1]
    assert (middle == INTERIOR).mean() > 0.7
    found = instances_from_probabilities(one_hot(classes, blur=0.5))
    assert found.max() == 3
    assert instance_scores(found, truth, 0.8).accuracy == 1.0


def test_small_objects_are_dropped_and_ids_are_consecutive() -> None:
    truth = discs((40, 40), [(12, 12), (28, 28)], 6)
    classes = boundary_classes(truth)
    classes[2, 30] = INTERIOR  # a one-pixel speck
    found = instances_from_probabilities(one_hot(classes))
    assert found.max() == 3
    cleaned = instances_from_probabilities(one_hot(classes), InstanceParams(min_size=5))
    assert sorted(np.unique(cleaned)) == [0, 1, 2]


def test_tuning_finds_thresholds_that_the_defaults_miss() -> None:
    truths = [discs((40, 60), [(20, 18), (20, 38)], 11), discs((40, 60), [(12, 14), (28, 40)], 9)]
    probabilities = []
    for truth in truths:
        # An unsure network: interior probability 0.45 (below the default seed threshold 0.5).
        p = one_hot(boundary_classes(truth))
        p = np.stack([p[0], 0.45 * p[1], p[2] + 0.55 * p[1]])
        probabilities.append(p)
    tuned = tune_instance_params(probabilities, truths)
    assert tuned.default_accuracy == 0.0
    assert tuned.accuracy == 1.0
    assert tuned.params.seed < 0.45


def test_small_object_size_is_the_10th_percentile_of_the_images_medians() -> None:
    # Medians per image: 1 (objects of 1 and 1 px), 4, 9, 16, ... 100 (objects of k*k px, one per image).
    truths = [np.array([[1, 2]])] + [np.pad(np.full((k, k), 1), 1) for k in range(2, 11)]
    truths.append(np.zeros((3, 3), np.int32))  # no objects: not counted
    medians = [1.0] + [float(k * k) for k in range(2, 11)]
    assert small_object_size(truths) == pytest.approx(np.percentile(medians, 10))  # 1 + 0.9 * (4 - 1)
    assert small_object_size([np.zeros((2, 2), np.int32)]) == 0.0


def test_tuned_minimum_size_keeps_the_objects_of_an_image_of_small_objects() -> None:
    # Eight images of two large discs (317 px) and three specks of 30 px each that the network takes for
    # objects, and two images of four small discs (29 px) that it finds exactly. Dropping everything under
    # 30 px would score higher pooled (16 / 24 instead of 24 / 48) but loses every object of the small images.
    large, small = [], []
    for _ in range(8):
        truth = discs((60, 80), [(20, 20), (20, 50)], 10)
        found = truth.copy()
        for k, x in enumerate((5, 25, 45)):
            found[48:53, x:x + 6] = 3 + k
        large.append((truth, found))
    for _ in range(2):
        truth = discs((40, 40), [(8, 8), (8, 30), (30, 8), (30, 30)], 3)
        small.append((truth, truth))
    probabilities = [one_hot(boundary_classes(found)) for _, found in large + small]
    truths = [truth for truth, _ in large + small]
    assert np.bincount(small[0][0].ravel())[1] == 29 and np.bincount(large[0][0].ravel())[1] == 317
    tuned = tune_instance_params(probabilities, truths)
    assert tuned.params.min_size <= 0.3 * 29
    for (truth, _), p in zip(small, probabilities[8:], strict=True):
        assert instance_scores(instances_from_probabilities(p, tuned.params), truth, 0.5).accuracy == 1.0


@pytest.mark.parametrize("bad", [{"seed": 0.0}, {"foreground": 1.0}, {"min_size": -1}])
def test_instance_params_are_checked(bad: dict[str, float]) -> None:
    from biounet.errors import BiounetError

    with pytest.raises(BiounetError):
        InstanceParams(**bad)  # type: ignore[arg-type]
