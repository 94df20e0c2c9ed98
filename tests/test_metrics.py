"""Segmentation metrics: hand-computed small cases and invariants (ISBI convention: 1 = cell, 0 = membrane)."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from scipy import ndimage as ndi

from biounet.metrics.overlap import dice_iou
from biounet.metrics.pixel import pixel_error, pixel_mismatch, pixel_scores
from biounet.metrics.rand import (
    adapted_rand_error,
    rand_error,
    rand_family,
    rand_scores,
    thin_boundaries,
    v_info,
    v_rand,
    variation_of_information,
)
from biounet.metrics.thresholds import ISBI_THRESHOLDS
from biounet.metrics.topology import SIMPLE_POINT
from biounet.metrics.warping import split_merge_warping_error, warp_truth, warping_error

ISBI_LABELS = Path(__file__).resolve().parents[1] / "data" / "isbi2012" / "labels"

# Two 3x3 cells separated by a one-pixel membrane (column 3): truth segments of a_1 = a_2 = 9 pixels.
TWO_CELLS = np.array([[1, 1, 1, 0, 1, 1, 1]] * 3)
S_A = 9**2 + 9**2


def merged_by_gap() -> np.ndarray:
    """The membrane has a gap at the bottom, so both cells are one predicted segment."""
    pred = TWO_CELLS.copy()
    pred[2, 3] = 1
    return pred


def split_by_membrane() -> np.ndarray:
    """An extra membrane (column 1) splits the left cell into two segments of 3 pixels."""
    pred = TWO_CELLS.copy()
    pred[:, 1] = 0
    return pred


# ---------------------------------------------------------------- overlap


def test_dice_iou_hand_computed() -> None:
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    truth = np.array([[0, 1, 2], [2, 2, 1]])
    scores = dice_iou(pred, truth, 3)
    # class 0: tp 1, fp 1, fn 0; class 1: tp 1, fp 1, fn 1; class 2: tp 2, fp 0, fn 1
    assert scores.classes == (0, 1, 2)
    assert scores.dice == pytest.approx((2 / 3, 1 / 2, 4 / 5))
    assert scores.iou == pytest.approx((1 / 2, 1 / 3, 2 / 3))
    assert scores.mean_dice == pytest.approx((2 / 3 + 1 / 2 + 4 / 5) / 3)
    assert scores.mean_iou == pytest.approx((1 / 2 + 1 / 3 + 2 / 3) / 3)

    foreground = dice_iou(pred, truth, 3, include_background=False)
    assert foreground.classes == (1, 2)
    assert foreground.dice == pytest.approx((1 / 2, 4 / 5))
    assert foreground.mean_iou == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_dice_iou_leaves_ignored_pixels_out() -> None:
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    truth = np.array([[0, 1, 2], [2, 2, 255]])
    scores = dice_iou(pred, truth, 3, ignore=255)
    # without the last pixel: class 0 tp 1; class 1 tp 1, fp 1; class 2 tp 2, fn 1
    assert scores.dice == pytest.approx((1.0, 2 / 3, 4 / 5))
    assert scores.iou == pytest.approx((1.0, 1 / 2, 2 / 3))


def test_dice_iou_empty_masks() -> None:
    truth = np.zeros((4, 4), int)
    pred = truth.copy()
    pred[0, 0] = 1
    # class 2 is absent from both; class 1 is predicted but absent from the truth
    scores = dice_iou(pred, truth, 3)
    assert scores.dice == pytest.approx((2 * 15 / 31, 0.0, 1.0))
    assert scores.iou == pytest.approx((15 / 16, 0.0, 1.0))
    nan = dice_iou(pred, truth, 3, empty=math.nan)
    assert math.isnan(nan.dice[2]) and math.isnan(nan.iou[2])
    assert nan.mean_dice == pytest.approx((2 * 15 / 31 + 0.0) / 2)
    # predicted empty while the truth is not: 0
    assert dice_iou(truth, pred, 2).dice[1] == 0.0
    assert math.isnan(dice_iou(truth, truth, 2, include_background=False, empty=math.nan).mean_dice)


def test_permuting_class_ids_permutes_the_scores() -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, (6, 20, 20))
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 4, truth.shape))
    perm = np.array([2, 0, 3, 1])  # class c becomes perm[c]
    scores, permuted = dice_iou(pred, truth, 4), dice_iou(perm[pred], perm[truth], 4)
    for c in range(4):
        assert permuted.dice[perm[c]] == pytest.approx(scores.dice[c])
        assert permuted.iou[perm[c]] == pytest.approx(scores.iou[c])
    assert permuted.mean_dice == pytest.approx(scores.mean_dice)
    # any dimension: the 3D volume scores as its pixels laid out in 2D
    assert dice_iou(pred.reshape(120, 20), truth.reshape(120, 20), 4) == scores


def test_dice_iou_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="integer"):
        dice_iou(np.full((2, 2), 0.5), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        dice_iou(np.full((2, 2), 2), np.zeros((2, 2), int), 2)


# ---------------------------------------------------------------- pixel error


def test_pixel_error_hand_computed_and_strict_threshold() -> None:
    truth = np.array([[1, 1, 0, 0]])
    prob = np.array([[0.9, 0.6, 0.2, 0.5]])
    # th 0.5: 0.5 is not > 0.5, so the prediction is exact
    assert pixel_scores(prob, truth, 0.5).f1 == 1.0
    assert pixel_error(prob, truth) == 0.0
    # th 0.4: tp 2, fp 1, fn 0 -> P 2/3, R 1, F 0.8; th 0.0: P 1/2, R 1, F 2/3
    assert pixel_error(prob, truth, thresholds=[0.4]) == pytest.approx(0.2)
    assert pixel_error(prob, truth, thresholds=[0.0, 0.4]) == pytest.approx(0.2)
    assert pixel_scores(prob, truth, 0.0) == pytest.approx(pixel_scores(prob, truth, 0.1))
    assert pixel_scores(prob, truth, 0.0).f1 == pytest.approx(2 / 3)
    assert pixel_mismatch(prob, truth, 0.5) == 0.0
    assert pixel_mismatch(prob, truth, 0.0) == pytest.approx(2 / 4)
    assert pixel_mismatch(prob, truth, 0.7) == pytest.approx(1 / 4)


def test_thresholds_compare_in_float64() -> None:
    # float32(0.3) = 0.30000001192..., which is > 0.3 in float64 (but == 0.3 if 0.3 were rounded to float32)
    prob = np.array([[np.float32(0.3), 0.0]], dtype=np.float32)
    truth = np.array([[1, 0]])
    assert pixel_mismatch(prob, truth, 0.3) == 0.0
    assert ISBI_THRESHOLDS[3] == 0.3 and len(ISBI_THRESHOLDS) == 11


def test_pixel_error_conventions_for_empty_classes() -> None:
    empty = np.zeros((3, 3))
    # no cells in truth or prediction: no false positives or negatives, so P = R = 1
    assert pixel_error(empty, empty) == 0.0
    # all cell, none predicted: P = 1 (no false positives), R = 0, F = 0
    assert pixel_error(empty, np.ones((3, 3))) == 1.0


def test_pixel_error_pools_counts_over_slices() -> None:
    truth = np.array([[[1, 1, 1, 1]], [[0, 0, 0, 1]]])
    pred = np.array([[[1, 1, 1, 0]], [[1, 0, 0, 1]]])
    # pooled: tp 4, fp 1, fn 1 -> F 0.8 (the per-slice F are 6/7 and 2/3, mean 0.762)
    assert pixel_error(pred, truth) == pytest.approx(0.2)


# ---------------------------------------------------------------- foreground-restricted Rand


def test_rand_gap_in_membrane_merges_two_cells() -> None:
    # one predicted segment: n_11 = n_21 = 9, b_1 = 18, no n_i0
    s_ab, s_b = 9**2 + 9**2, 18**2
    scores = rand_scores(merged_by_gap(), TWO_CELLS)
    assert scores.precision == pytest.approx(s_ab / s_b) and scores.precision == pytest.approx(0.5)
    assert scores.recall == pytest.approx(s_ab / S_A) and scores.recall == 1.0
    assert scores.f == pytest.approx(2 / 3)


def test_rand_extra_membrane_splits_a_cell_and_makes_singletons() -> None:
    # n_11 = n_12 = 3 (columns 0 and 2), n_10 = 3 (column 1 predicted membrane), n_23 = 9
    n_ij, n_i0, b_j = [3, 3, 9], [3, 0], [3, 3, 9]
    s_ab = sum(n**2 for n in n_ij) + sum(n_i0)
    s_b = sum(b**2 for b in b_j) + sum(n_i0)
    scores = rand_scores(split_by_membrane(), TWO_CELLS)
    assert scores.precision == pytest.approx(s_ab / s_b) and scores.precision == 1.0
    assert scores.recall == pytest.approx(s_ab / S_A)
    assert scores.f == pytest.approx(2 * s_ab / (s_b + S_A)) and scores.f == pytest.approx(204 / 264)


def test_rand_f_against_the_formula_with_explicit_counts() -> None:
    pred = np.ones_like(TWO_CELLS)
    pred[:, 1] = 0  # splits the left cell; column 0 is its own segment
    pred[:2, 3] = 0  # the gap at (2, 3) joins column 2 to the right cell
    pred[0, 5] = 0  # a singleton inside the right cell
    # segments: j=1 column 0 (3 px), j=2 column 2 + gap + right cell (3 + 8 inside truth foreground)
    n_11, n_12, n_10 = 3, 3, 3
    n_22, n_20 = 8, 1
    a = [n_11 + n_12 + n_10, n_22 + n_20]
    b = [n_11, n_12 + n_22]
    s_ab = n_11**2 + n_12**2 + n_22**2 + n_10 + n_20
    s_b = b[0] ** 2 + b[1] ** 2 + n_10 + n_20
    s_a = a[0] ** 2 + a[1] ** 2
    precision, recall = s_ab / s_b, s_ab / s_a
    scores = rand_scores(pred, TWO_CELLS)
    assert (scores.precision, scores.recall) == pytest.approx((precision, recall))
    assert scores.f == pytest.approx(2 * precision * recall / (precision + recall))
    assert scores.f == pytest.approx(172 / 296)


def test_cells_touching_at_a_corner_are_two_segments() -> None:
    truth = np.zeros((4, 4), int)
    truth[:2, :2] = truth[2:, 2:] = 1  # 4-connectivity keeps them apart
    assert rand_scores(truth, truth).f == 1.0
    bridged = truth.copy()
    bridged[1, 2] = 1  # joins both cells in the prediction: n_11 = n_21 = 4, b_1 = 8
    scores = rand_scores(bridged, truth)
    assert (scores.precision, scores.recall) == pytest.approx((32 / 64, 1.0))


def test_rand_empty_masks() -> None:
    nothing = np.zeros((5, 5))
    assert rand_scores(nothing, nothing).f == 1.0
    assert rand_error(np.ones((5, 5)), nothing) == 0.0
    # all predicted membrane: every truth pixel is a singleton, S_AB = S_B = N = 18
    scores = rand_scores(np.zeros(TWO_CELLS.shape), TWO_CELLS)
    assert (scores.precision, scores.recall) == pytest.approx((1.0, 18 / S_A))


def test_rand_thresholds_are_strict() -> None:
    prob = np.where(split_by_membrane() == 1, 1.0, 0.5)
    prob[:, 3] = 0.0
    assert rand_scores(prob, TWO_CELLS, 0.5).f == pytest.approx(204 / 264)
    assert rand_scores(prob, TWO_CELLS, 0.4).f == 1.0
    # the sweep finds the threshold between 0.0 and 0.5 that keeps the extra membrane out
    assert rand_error(prob, TWO_CELLS) == 0.0
    assert rand_error(prob, TWO_CELLS, thresholds=[0.5, 0.6]) == pytest.approx(1 - 204 / 264)


def test_rand_error_pools_slices_and_v_rand_averages_them() -> None:
    stack = np.stack([merged_by_gap(), TWO_CELLS])
    truth = np.stack([TWO_CELLS, TWO_CELLS])
    # pooled: S_AB = 162 + 162, S_A = 324, S_B = 324 + 162 -> P 2/3, R 1, F 0.8
    assert rand_error(stack, truth) == pytest.approx(0.2)
    # per slice: F = 2/3 and 1
    assert v_rand(stack, truth, thin=False) == pytest.approx(5 / 6)
    assert v_rand(stack, truth) == pytest.approx(5 / 6)  # one basin: thinning draws no line


def test_v_rand_thins_thick_predicted_membranes() -> None:
    thick = TWO_CELLS.copy()
    thick[:, 2:5] = 0  # a 3-pixel membrane: columns 2 and 4 are singletons inside the cells
    assert rand_scores(thick, TWO_CELLS).f == pytest.approx(2 * 78 / (78 + S_A))
    assert np.array_equal(thin_boundaries(thick > 0), TWO_CELLS > 0)  # flooded back to the middle line
    assert v_rand(thick, TWO_CELLS) == 1.0
    assert v_rand(thick, TWO_CELLS, thin=False) == pytest.approx(0.65)


def test_information_scores_hand_computed() -> None:
    n = 18
    h_a = math.log(2)
    # split: B = segments of 3, 3, 9 and three singletons; every B segment lies inside one A segment
    h_b = -(2 * (3 / n) * math.log(3 / n) + (9 / n) * math.log(9 / n) + 3 * (1 / n) * math.log(1 / n))
    assert v_info(split_by_membrane(), TWO_CELLS) == pytest.approx(2 * h_a / (h_a + h_b))
    vi = variation_of_information(split_by_membrane(), TWO_CELLS)
    assert (vi.split, vi.merge) == pytest.approx((h_b - h_a, 0.0))
    # merge: one predicted segment, H(B) = 0, so V_info = 0 and everything is a merge
    assert v_info(merged_by_gap(), TWO_CELLS, thresholds=[0.5]) == 0.0
    # ... so without thinning the sweep prefers th = 1.0, where all 18 pixels are singletons: H(B) = H(A, B)
    # = log 18. Fiji's thinning floods an all-boundary slice into one basin, so there V_info stays 0.
    assert v_info(merged_by_gap(), TWO_CELLS, thin=False) == pytest.approx(2 * h_a / (h_a + math.log(n)))
    assert v_info(merged_by_gap(), TWO_CELLS) == 0.0
    vi = variation_of_information(merged_by_gap(), TWO_CELLS)
    assert (vi.split, vi.merge) == pytest.approx((0.0, h_a))
    assert vi.total == pytest.approx(h_a)


def test_skimage_adapted_rand_is_a_different_measure() -> None:
    # merge: scikit-image counts pairs (n^2 - n) and calls the truth-normalised ratio "precision"
    ours, theirs = rand_scores(merged_by_gap(), TWO_CELLS), adapted_rand_error(merged_by_gap(), TWO_CELLS)
    assert (ours.precision, ours.recall) == pytest.approx((0.5, 1.0))
    assert (theirs.precision, theirs.recall) == pytest.approx((1.0, (162 - 18) / (324 - 18)))
    # split: label 0 inside the left cell is one segment of 3 for scikit-image, not 3 singletons
    theirs = adapted_rand_error(split_by_membrane(), TWO_CELLS)
    s_ab, s_a, s_b = 9 + 9 + 9 + 81 - 18, S_A - 18, 9 + 9 + 9 + 81 - 18
    assert (theirs.precision, theirs.recall) == pytest.approx((s_ab / s_a, s_ab / s_b))
    assert theirs.error == pytest.approx(1 - s_ab / (0.5 * s_a + 0.5 * s_b))


def isbi_crop() -> np.ndarray:
    return np.asarray(iio.imread(ISBI_LABELS / "25.png"))[:160, :160]


def test_a_perfect_prediction_scores_perfectly() -> None:
    truth = isbi_crop()
    family = rand_family(truth > 0, truth)
    assert (family.rand_error, family.v_rand, family.v_info) == (0.0, 1.0, 1.0)
    assert pixel_error(truth > 0, truth) == 0.0
    vi = variation_of_information(truth / 255.0, truth)
    assert (vi.split, vi.merge) == (0.0, 0.0)
    assert dice_iou((truth > 0).astype(int), (truth > 0).astype(int), 2).mean_dice == 1.0


def test_truth_label_ids_do_not_matter() -> None:
    truth = isbi_crop()
    rng = np.random.default_rng(2)
    noisy = np.clip((truth > 0) + rng.normal(0, 0.4, truth.shape), 0, 1)
    relabelled = np.where(truth > 0, rng.integers(1, 1000, truth.shape), 0)  # any positive id is cell
    assert rand_family(noisy, relabelled) == rand_family(noisy, truth)
    assert pixel_error(noisy, relabelled) == pixel_error(noisy, truth)
    family = rand_family(noisy, truth)
    assert 0.0 < family.rand_error < 1.0 and 0.0 < family.v_rand < 1.0 and 0.0 < family.v_info < 1.0
    assert family.rand_error == rand_error(noisy, truth) and family.v_info == v_info(noisy, truth)


def test_shape_mismatch_and_nan_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        rand_error(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        pixel_error(np.full((2, 2), np.nan), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2D image or a 3D stack"):
        rand_error(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))


# ---------------------------------------------------------------- warping error


def neighbourhood_code(patch: list[str]) -> int:
    """The lookup-table index of a 3x3 patch written as three strings of 0/1 (centre ignored)."""
    bits = [c == "1" for c in "".join(patch)]
    return sum(bit << i for i, bit in enumerate(bits[:4] + bits[5:]))


def test_simple_points_for_4_8_adjacency() -> None:
    assert SIMPLE_POINT[neighbourhood_code(["010", "0x0", "000"])]  # the end of a line
    assert SIMPLE_POINT[neighbourhood_code(["110", "1x0", "110"])]  # a straight border
    assert not SIMPLE_POINT[neighbourhood_code(["000", "0x0", "000"])]  # an isolated pixel
    assert not SIMPLE_POINT[neighbourhood_code(["111", "1x1", "111"])]  # an interior pixel: a hole
    assert not SIMPLE_POINT[neighbourhood_code(["010", "0x0", "010"])]  # a bridge between two parts
    assert not SIMPLE_POINT[neighbourhood_code(["100", "0x0", "000"])]  # only a diagonal (not 4-adjacent)
    assert not SIMPLE_POINT[neighbourhood_code(["101", "1x1", "101"])]  # joins two parts despite the corners
    assert SIMPLE_POINT[neighbourhood_code(["111", "1x1", "101"])]  # the background stays one component


def test_moving_a_boundary_costs_nothing() -> None:
    truth = np.zeros((7, 7), int)
    truth[2:5, 2:5] = 1
    pred = np.zeros((7, 7), int)
    pred[2:6, 1:5] = 1
    assert pixel_mismatch(pred, truth) == pytest.approx(7 / 49)
    assert warping_error(pred, truth) == 0.0
    assert np.array_equal(warp_truth(pred, truth), pred > 0)


def test_warping_error_of_a_merge_and_a_split() -> None:
    # the gap pixel would join two cells: it stays a mismatch, and it is a merge
    assert warping_error(merged_by_gap(), TWO_CELLS) == pytest.approx(1 / 21)
    assert split_merge_warping_error(merged_by_gap(), TWO_CELLS) == pytest.approx(1 / 21)
    # the extra membrane: (0, 1) and (1, 1) are simple in turn (x outer, y inner), (2, 1) would cut the cell
    expected = TWO_CELLS.copy()
    expected[:2, 1] = 0
    assert np.array_equal(warp_truth(split_by_membrane(), TWO_CELLS), expected > 0)
    assert warping_error(split_by_membrane(), TWO_CELLS) == pytest.approx(1 / 21)
    assert split_merge_warping_error(split_by_membrane(), TWO_CELLS) == pytest.approx(1 / 21)


def test_split_merge_variant_ignores_added_objects() -> None:
    pred = TWO_CELLS.copy()
    pred[1, 3] = 1  # an island inside the membrane: 4-adjacent to both cells, so this is a merge...
    assert split_merge_warping_error(pred, TWO_CELLS) == pytest.approx(1 / 21)
    empty, blob = np.zeros((5, 5), int), np.zeros((5, 5), int)
    blob[2, 2] = 1  # ...while a new object is a topological error but neither split nor merge
    assert warping_error(blob, empty) == pytest.approx(1 / 25)
    assert split_merge_warping_error(blob, empty) == 0.0


def test_warping_flips_confident_pixels_first() -> None:
    truth = np.array([[1, 1, 0, 0, 1, 1]] * 3)
    # a two-pixel bridge: either pixel alone is simple, both would merge the cells
    prob = truth.astype(float)
    prob[1, 2], prob[1, 3] = 0.9, 0.6
    first = truth.copy()
    first[1, 2] = 1
    assert np.array_equal(warp_truth(prob, truth), first > 0)
    prob[1, 2], prob[1, 3] = 0.6, 0.9
    second = truth.copy()
    second[1, 3] = 1
    assert np.array_equal(warp_truth(prob, truth), second > 0)
    assert warping_error(prob, truth) == pytest.approx(1 / 18)


def test_warping_ties_scan_x_outer_y_inner() -> None:
    truth = np.array([[1, 0, 0, 1], [1, 1, 1, 0], [0, 1, 1, 1]])
    pred = truth.copy()
    pred[1, 2] = pred[2, 1] = 0
    # (y 2, x 1) comes first and is simple; then (1, 2) would separate (2, 2) from (1, 1): it stays.
    # Scanning rows first would have kept (2, 1) instead.
    expected = truth.copy()
    expected[2, 1] = 0
    assert np.array_equal(warp_truth(pred, truth), expected > 0)


def test_warping_preserves_topology_and_leaves_no_simple_mismatch() -> None:
    rng = np.random.default_rng(3)
    four, eight = ndi.generate_binary_structure(2, 1), np.ones((3, 3), bool)
    for _ in range(10):
        truth = ndi.gaussian_filter(rng.random((24, 24)), 1.5) > 0.5
        prob = np.clip(ndi.gaussian_filter(rng.random((24, 24)), 1.0) * 2 - 0.5 + 0.6 * truth, 0, 1)
        warped = np.pad(warp_truth(prob, truth), 1)
        padded = np.pad(truth, 1)
        assert ndi.label(warped, four)[1] == ndi.label(padded, four)[1]
        assert ndi.label(~warped, eight)[1] == ndi.label(~padded, eight)[1]
        for y, x in zip(*np.nonzero(warped != np.pad(prob > 0.5, 1)), strict=True):
            patch = warped[y - 1:y + 2, x - 1:x + 2].astype(int)
            assert not SIMPLE_POINT[neighbourhood_code(["".join(map(str, row)) for row in patch])]


def test_warping_error_never_exceeds_the_pixel_error_at_the_same_threshold() -> None:
    rng = np.random.default_rng(7)
    for _ in range(8):
        truth = ndi.gaussian_filter(rng.random((32, 32)), 1.5) > 0.5
        prob = np.clip(ndi.gaussian_filter(rng.random((32, 32)), 1.0) * 2 - 0.5 + 0.6 * truth, 0, 1)
        for threshold in (0.3, 0.5, 0.7):
            mismatch = pixel_mismatch(prob, truth, threshold)
            assert mismatch > 0
            assert warping_error(prob, truth, threshold) <= mismatch
