"""Border weight maps (Ronneberger et al. 2015, eq. 2), instance separation and class balance."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from biounet.data.targets import balanced_class_weights, border_weight_map, instances_from_classes, separate_touching
from biounet.errors import BiounetError


def border_term(distance_sum: float, w0: float = 10.0, sigma: float = 5.0) -> float:
    return w0 * math.exp(-(distance_sum**2) / (2 * sigma**2))


def discs(shape: tuple[int, int], *circles: tuple[int, int, int]) -> np.ndarray:
    """Instance map of digital discs ``(y, x, r)``: ids 1, 2, ... in order; a later disc never overwrites."""
    yy, xx = np.indices(shape)
    instances = np.zeros(shape, np.int64)
    for i, (y, x, r) in enumerate(circles, start=1):
        instances[((yy - y) ** 2 + (xx - x) ** 2 <= r * r) & (instances == 0)] = i
    return instances


def brute_force_map(classes: np.ndarray, cells: np.ndarray, sigma: float, spacing: tuple[float, ...]) -> np.ndarray:
    """w_c = 1 plus the border term from explicit point-to-point distances, without any cut-off."""
    points = np.indices(cells.shape).reshape(cells.ndim, -1).T * np.asarray(spacing)
    ids = np.unique(cells[cells > 0])
    distances = np.sort([cdist(points, points[cells.ravel() == i]).min(axis=1) for i in ids], axis=0)
    term = 10.0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2)).reshape(cells.shape)
    return 1.0 + np.where(classes == 0, term, 0.0)


def test_touching_discs_are_separated_by_a_ridge_of_high_weight() -> None:
    # Disc 1 ends at column 28 and disc 2 starts at column 29 on the centre row: they touch.
    instances = discs((64, 64), (32, 20, 8), (32, 37, 8))
    assert instances[32, 28] == 1 and instances[32, 29] == 2
    cells = separate_touching(instances)
    assert cells[32, 28] == 0 and cells[32, 29] == 0 and cells[32, 27] == 1 and cells[32, 30] == 2
    assert instances_from_classes(cells > 0, connectivity=2).max() == 2  # apart even diagonally

    weights = border_weight_map(cells > 0, cells, class_weights=None)
    assert weights.dtype == np.float32
    # Gap pixel (32, 28): disc 1 is 1 px away at (32, 27), disc 2 is 2 px away at (32, 30).
    ridge = 1.0 + border_term(1 + 2)
    assert weights[32, 28] == pytest.approx(ridge, rel=1e-6)
    assert weights[32, 29] == pytest.approx(ridge, rel=1e-6)
    assert weights.max() == pytest.approx(ridge, rel=1e-6)
    assert np.allclose(weights[29:36, 28:30], ridge)  # along the straight part of the contact
    assert np.all(weights[cells > 0] == 1.0)  # no border term inside cells


@pytest.mark.parametrize("gap", [1, 5, 9])
def test_weight_at_the_middle_of_a_gap(gap: int) -> None:
    # Disc 1 covers columns up to 24 on row 32; disc 2 starts gap + 1 columns later.
    instances = discs((64, 80), (32, 16, 8), (32, 16 + 8 + gap + 1 + 8, 8))
    middle = 24 + (gap + 1) // 2
    classes = (instances > 0).astype(np.int64)

    weights = border_weight_map(classes, instances, class_weights=[0.5, 2.0])
    assert weights[32, middle] == pytest.approx(0.5 + border_term(gap + 1), rel=1e-6)
    assert np.all(weights[classes == 1] == 2.0)

    balanced = border_weight_map(classes, instances)
    n, n_background = classes.size, np.count_nonzero(classes == 0)
    assert balanced[32, middle] == pytest.approx(n / (2 * n_background) + border_term(gap + 1), rel=1e-6)


def test_isolated_cells_get_no_border_term() -> None:
    classes_one = discs((48, 48), (24, 24, 6)) > 0
    for instances in (discs((48, 48), (24, 24, 6)), np.zeros((48, 48), np.int64)):
        assert np.all(border_weight_map(classes_one & (instances > 0), instances, class_weights=None) == 1.0)
    # Two cells 31 px apart: d1 + d2 >= 31 > 6 sigma everywhere, so the term is exactly 0, not just small.
    far = discs((40, 100), (20, 15, 8), (20, 15 + 8 + 31 + 8, 8))
    assert np.all(border_weight_map(far > 0, far, class_weights=None) == 1.0)


def test_ignored_pixels_weigh_zero_and_are_not_counted_for_the_balance() -> None:
    instances = discs((32, 32), (16, 8, 5), (16, 20, 5))
    classes = (instances > 0).astype(np.int64)
    ignore = np.zeros(classes.shape, bool)
    ignore[:, 13:16] = True  # the whole gap between the cells, and part of nothing else
    classes[ignore] = -1  # ignored pixels may hold an ignore label

    weights = border_weight_map(classes, instances, ignore=ignore)
    assert np.all(weights[ignore] == 0.0)
    n, n_cell = np.count_nonzero(~ignore), np.count_nonzero(classes == 1)
    assert weights[0, 0] == pytest.approx(n / (2 * (n - n_cell)), rel=1e-6)
    assert weights[16, 8] == pytest.approx(n / (2 * n_cell), rel=1e-6)


def test_balanced_class_weights_by_hand() -> None:
    classes = np.array([[0, 0, 0], [0, 1, 1]])
    assert np.allclose(balanced_class_weights(classes), [6 / (2 * 4), 6 / (2 * 2)])
    ignore = np.array([[False, False, True], [False, False, False]])
    assert np.allclose(balanced_class_weights(classes, ignore), [5 / (2 * 3), 5 / (2 * 2)])
    # Class 1 is absent: two classes present, and the weights still average to 1 over the pixels.
    sparse = np.array([[0, 0, 2], [2, 2, 2]])
    table = balanced_class_weights(sparse)
    assert np.allclose(table, [6 / (2 * 2), 0.0, 6 / (2 * 4)])
    assert table[sparse].mean() == pytest.approx(1.0)
    assert np.allclose(border_weight_map(sparse, np.zeros_like(sparse)), table[sparse])


def test_the_map_moves_with_the_scene() -> None:
    scene = discs((40, 50), (12, 10, 6), (12, 23, 6), (28, 30, 7), (30, 12, 4))  # discs 1 and 2 touch
    cells = separate_touching(scene)

    def embedded(y: int, x: int) -> np.ndarray:
        canvas = np.zeros((100, 110), np.int64)
        canvas[y:y + 40, x:x + 50] = cells
        return border_weight_map(canvas > 0, canvas, sigma=3.0)

    a, b = embedded(20, 30), embedded(27, 25)
    assert np.allclose(b[7:, :-5], a[:-7, 5:], rtol=0, atol=1e-6)
    mirrored = cells[:, ::-1]
    assert np.array_equal(border_weight_map(mirrored > 0, mirrored), border_weight_map(cells > 0, cells)[:, ::-1])


@pytest.mark.parametrize(("shape", "spacing"), [((40, 48), (1.0, 1.0)), ((12, 18, 20), (2.0, 1.0, 1.0))])
def test_cropped_distance_transforms_match_brute_force(shape: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    rng = np.random.default_rng(3)
    grid = np.indices(shape)
    instances = np.zeros(shape, np.int64)
    for i in range(1, 9):
        centre = rng.uniform(0, shape).reshape((-1,) + (1,) * len(shape))
        ball = (((grid - centre) * np.reshape(spacing, centre.shape)) ** 2).sum(axis=0) <= rng.uniform(9, 30)
        instances[ball & (instances == 0)] = i
    cells = separate_touching(instances)
    expected = brute_force_map(cells > 0, cells, sigma=2.0, spacing=spacing)
    got = border_weight_map(cells > 0, cells, sigma=2.0, class_weights=None, spacing=spacing)
    assert len(np.unique(cells)) > 5
    assert np.abs(got - expected).max() < 1e-5


def test_anisotropic_spacing_scales_distances() -> None:
    instances = np.zeros((13, 6, 6), np.int64)
    instances[0:4], instances[9:13] = 1, 2  # gap at z = 4..8
    weights = border_weight_map(instances > 0, instances, class_weights=None, spacing=(2.0, 1.0, 1.0))
    # z = 6 is 3 slices from each cell, 2 units each: d1 = d2 = 6.
    assert weights[6, 2, 2] == pytest.approx(1.0 + border_term(12.0), rel=1e-6)


def test_separate_touching_clears_both_sides_symmetrically_and_once() -> None:
    instances = np.array([[1, 1, 0, 0],
                          [1, 1, 0, 3],
                          [0, 0, 2, 3],
                          [5, 5, 2, 0]])
    expected = np.array([[1, 1, 0, 0],
                         [1, 0, 0, 0],
                         [0, 0, 0, 0],
                         [5, 0, 0, 0]])
    cells = separate_touching(instances)
    assert np.array_equal(cells, expected)  # corner contacts count, both sides go
    assert np.array_equal(separate_touching(cells), cells)
    swapped = np.choose(instances, [0, 3, 5, 1, 0, 2])  # other ids, same cells
    assert np.array_equal(separate_touching(swapped) > 0, cells > 0)


def test_instances_from_classes_splits_classes_and_honours_connectivity() -> None:
    classes = np.array([[1, 1, 2, 0],
                        [0, 0, 0, 1]])
    four = instances_from_classes(classes)
    assert four[0, 0] == four[0, 1] and len({four[0, 0], four[0, 2], four[1, 3]}) == 3 and four[1, 0] == 0
    diagonal = np.array([[1, 0], [0, 1]])
    assert instances_from_classes(diagonal, connectivity=1).max() == 2
    assert instances_from_classes(diagonal, connectivity=2).max() == 1


def test_inconsistent_inputs_are_refused() -> None:
    instances = discs((20, 20), (10, 10, 4))
    with pytest.raises(BiounetError, match="background in the class map"):
        border_weight_map(np.zeros_like(instances), instances)
    with pytest.raises(BiounetError, match="one weight per class"):
        border_weight_map(np.array([[0, 2]]), np.zeros((1, 2), np.int64), class_weights=[1.0, 1.0])
    with pytest.raises(BiounetError, match="negative"):
        border_weight_map(np.array([[0, -1]]), np.zeros((1, 2), np.int64))
