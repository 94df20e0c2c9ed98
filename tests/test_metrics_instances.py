"""Instance matching: hand-built objects with known IoUs, the DSB 2018 score, and a dense-matrix oracle."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from biounet.metrics.instances import (
    DSB2018_THRESHOLDS,
    dsb2018_score,
    instance_scores,
    instance_scores_sweep,
    mean_dsb2018_score,
)


def three_pairs() -> tuple[np.ndarray, np.ndarray]:
    """Truth 3 / pred 5: IoU 2/4 = 0.5; truth 7 / pred 9: IoU 4/5 = 0.8; truth 12 and pred 40 unmatched."""
    truth, pred = np.zeros((6, 12), dtype=np.int32), np.zeros((6, 12), dtype=np.int32)
    truth[0, 0:4], pred[0, 0:2] = 3, 5
    truth[2, 0:5], pred[2, 0:4] = 7, 9
    truth[4, 0:3], pred[4, 6:9] = 12, 40
    return pred, truth


def row_image(objects: list[tuple[int, int, int]]) -> np.ndarray:
    """A 1-row image with each (id, start, stop) painted in order."""
    image = np.zeros((1, max(stop for _, _, stop in objects)), dtype=np.int64)
    for object_id, start, stop in objects:
        image[0, start:stop] = object_id
    return image


def test_three_objects_hand_computed() -> None:
    pred, truth = three_pairs()
    at_half = instance_scores(pred, truth, 0.5)
    assert (at_half.true_objects, at_half.predicted_objects) == (3, 3)
    assert (at_half.true_positives, at_half.false_positives, at_half.false_negatives) == (2, 1, 1)
    assert (at_half.precision, at_half.recall, at_half.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert at_half.accuracy == pytest.approx(2 / 4)
    assert at_half.panoptic_quality == pytest.approx((0.5 + 0.8) / (2 + 1 / 2 + 1 / 2))

    # IoU >= t: the 0.8 pair still counts at t = 0.8, nothing at 0.85.
    sweep = instance_scores_sweep(pred, truth, [0.6, 0.8, 0.85])
    assert [s.true_positives for s in sweep] == [1, 1, 0]
    assert sweep[0].accuracy == pytest.approx(1 / 5)
    assert sweep[0].panoptic_quality == pytest.approx(0.8 / (1 + 2 / 2 + 2 / 2))
    assert (sweep[2].precision, sweep[2].recall, sweep[2].f1, sweep[2].panoptic_quality) == (0, 0, 0, 0)


def test_dsb2018_score_hand_computed() -> None:
    # IoU > t strictly: at t = 0.50 the 0.5 pair fails; t = 0.50 .. 0.75 (6 thresholds) keep only the 0.8
    # pair: TP 1, FP 2, FN 2 -> 1/5; t = 0.80 .. 0.95 (4 thresholds) keep nothing -> 0.
    pred, truth = three_pairs()
    assert DSB2018_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    assert dsb2018_score(pred, truth) == pytest.approx(6 * (1 / 5) / 10)
    # Averaged per image, not pooled over images.
    assert mean_dsb2018_score([pred, truth], [truth, truth]) == pytest.approx((0.12 + 1.0) / 2)


def test_permuting_ids_and_swapping_roles() -> None:
    pred, truth = three_pairs()
    reference = instance_scores(pred, truth)
    rng = np.random.default_rng(0)
    relabel = np.zeros(41, dtype=np.int64)
    relabel[1:] = rng.permutation(np.arange(1000, 1040))
    permuted = instance_scores(relabel[pred], relabel[truth])
    assert permuted == reference
    assert dsb2018_score(relabel[pred], relabel[truth]) == dsb2018_score(pred, truth)
    swapped = instance_scores(truth, pred)
    assert (swapped.precision, swapped.recall) == (reference.recall, reference.precision)
    assert swapped.panoptic_quality == reference.panoptic_quality


def test_hungarian_matching_beats_greedy() -> None:
    # Truth 1 = [0, 10), 2 = [10, 14); pred 1 = [0, 4), 2 = [4, 14). IoU(t1, p2) = 6/14 is the largest, so
    # greedy matching takes it and leaves one pair; the optimum pairs t1-p1 (4/10) and t2-p2 (4/10).
    truth = row_image([(1, 0, 10), (2, 10, 14)])
    pred = row_image([(1, 0, 4), (2, 4, 14)])
    scores = instance_scores(pred, truth, 0.35)
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (2, 0, 0)
    assert scores.panoptic_quality == pytest.approx(0.8 / 2)


def test_matching_maximises_the_count_before_the_iou() -> None:
    # Truth 1 = [0, 10), 2 = [10, 12); pred 7 = [0, 2), 8 = [2, 12): IoU(t1, p8) = 8/12, IoU(t1, p7) = 2/10,
    # IoU(t2, p8) = 2/10. Two matches of 0.2 win over one of 2/3 (StarDist's rule).
    truth = row_image([(1, 0, 10), (2, 10, 12)])
    pred = row_image([(7, 0, 2), (8, 2, 12)])
    low = instance_scores(pred, truth, 0.15)
    assert low.true_positives == 2
    assert low.panoptic_quality == pytest.approx(0.4 / 2)
    high = instance_scores(pred, truth, 0.25)
    assert (high.true_positives, high.false_positives, high.false_negatives) == (1, 1, 1)
    assert high.panoptic_quality == pytest.approx((8 / 12) / (1 + 1 / 2 + 1 / 2))


def test_exact_half_iou_tie_and_strict_dsb() -> None:
    # One truth object split exactly in two halves: both IoUs are 0.5, only one can match at t = 0.5.
    truth = row_image([(1, 0, 4)])
    pred = row_image([(1, 0, 2), (2, 2, 4)])
    scores = instance_scores(pred, truth, 0.5)
    assert (scores.true_positives, scores.false_positives, scores.false_negatives) == (1, 1, 0)
    assert dsb2018_score(pred, truth) == 0.0


def test_three_dimensional_cubes() -> None:
    truth, pred = np.zeros((8, 8, 8), dtype=np.uint16), np.zeros((8, 8, 8), dtype=np.uint16)
    truth[0:4, 0:4, 0:4] = 1
    pred[1:5, 0:4, 0:4] = 1          # IoU 48 / 80 = 0.6
    assert [s.true_positives for s in instance_scores_sweep(pred, truth, [0.6, 0.65])] == [1, 0]


def test_empty_images() -> None:
    empty = np.zeros((5, 5), dtype=np.int64)
    objects = empty.copy()
    objects[1:3, 1:3] = 4
    both = instance_scores(empty, empty)
    assert (both.precision, both.recall, both.f1, both.accuracy, both.panoptic_quality) == (1, 1, 1, 1, 1)
    assert dsb2018_score(empty, empty) == 1.0
    spurious = instance_scores(objects, empty)
    assert (spurious.false_positives, spurious.precision, spurious.recall, spurious.f1) == (1, 0.0, 1.0, 0.0)
    assert dsb2018_score(objects, empty) == 0.0


def test_matches_a_dense_assignment_on_random_instances() -> None:
    # Oracle: the full IoU matrix from masks, one assignment over all objects with the same objective.
    rng = np.random.default_rng(3)
    truth = ndi.label(ndi.gaussian_filter(rng.normal(size=(64, 64)), 2) > 0.1)[0]
    pred = ndi.label(ndi.gaussian_filter(rng.normal(size=(64, 64)), 2) > 0.1)[0]
    t_ids, p_ids = np.unique(truth)[1:], np.unique(pred)[1:]
    iou = np.array([[np.count_nonzero((truth == i) & (pred == j)) / np.count_nonzero((truth == i) | (pred == j))
                     for j in p_ids] for i in t_ids])
    for threshold in (0.05, 0.2, 0.5):
        candidate = (iou >= threshold) & (iou > 0)
        cost = np.where(candidate, -1.0 - iou / (2 * min(iou.shape)), 0.0)
        rows, cols = linear_sum_assignment(cost)
        ok = candidate[rows, cols]
        scores = instance_scores(pred, truth, threshold)
        assert scores.true_positives == np.count_nonzero(ok)
        assert scores.panoptic_quality * (scores.true_positives + (scores.false_positives + scores.false_negatives)
                                          / 2) == pytest.approx(iou[rows, cols][ok].sum())


def test_rejects_bad_input() -> None:
    pred, truth = three_pairs()
    with pytest.raises(ValueError, match="shape"):
        instance_scores(pred, truth[:, :5])
    with pytest.raises(ValueError, match="integer object ids"):
        instance_scores(pred.astype(np.float64), truth)
    with pytest.raises(ValueError, match=">= 0"):
        instance_scores(-pred, truth)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        instance_scores(pred, truth, 0.0)
    with pytest.raises(ValueError, match="predictions for"):
        mean_dsb2018_score([pred], [truth, truth])


def test_matching_dataset_pools_counts_over_images_as_stardist() -> None:
    from biounet.metrics.instances import matching_dataset

    truth_a, pred_a = np.zeros((50, 50), np.int32), np.zeros((50, 50), np.int32)
    truth_a[0:10, 0:10] = 1
    truth_a[20:30, 20:30] = 2              # missed: a false negative
    pred_a[0:10, 0:6] = 5                  # IoU 60 / 100 with truth 1
    pred_a[40:45, 40:45] = 7               # a false positive
    truth_b, pred_b = np.zeros((20, 20), np.int32), np.zeros((20, 20), np.int32)
    truth_b[5:10, 5:10] = 3                # no prediction at all: a false negative
    at_50, at_70 = matching_dataset([pred_a, pred_b], [truth_a, truth_b], (0.5, 0.7))
    assert (at_50.true_positives, at_50.false_positives, at_50.false_negatives) == (1, 1, 2)
    assert at_50.accuracy == pytest.approx(1 / 4) and at_50.precision == pytest.approx(1 / 2)
    assert at_50.recall == pytest.approx(1 / 3) and at_50.f1 == pytest.approx(2 / 5)
    assert at_50.panoptic_quality == pytest.approx(0.6 / 2.5)
    assert at_50.mean_true_score == pytest.approx(0.6 / 3) and at_50.mean_matched_score == pytest.approx(0.6)
    # Not a mean of per-image accuracies (1/3 and 0 would average to 1/6).
    assert at_50.accuracy != pytest.approx((1 / 3 + 0) / 2)
    # No true positive: StarDist scores every ratio 0.
    assert at_70.true_positives == 0 and at_70.accuracy == 0.0 and at_70.precision == 0.0
    assert at_70.panoptic_quality == 0.0


def test_matching_dataset_equals_stardist_on_random_label_images() -> None:
    """Reference: ``stardist.matching.matching_dataset(truths, preds, thresh=[0.5, ..., 0.9])`` of StarDist
    0.9.2 on these images. Counts and count ratios are equal exactly; the IoU sums agree to 1e-6 because
    StarDist computes IoU in float32."""
    from biounet.metrics.instances import matching_dataset

    rng = np.random.default_rng(3)
    truths, preds = [], []
    for i in range(4):
        truth = ndi.label(ndi.gaussian_filter(rng.random((64, 64)), 2) > 0.52)[0]
        pred = ndi.label(ndi.gaussian_filter(rng.random((64, 64)) * 0.3 + (truth > 0) * 0.7, 1.5) > 0.5)[0]
        truths.append(truth)
        preds.append(np.roll(pred, i, axis=1))
    stardist = [  # thresh, tp, fp, fn, accuracy, mean_true_score, mean_matched_score, panoptic_quality
        (0.5, 36, 37, 51, 0.2903225806451613, 0.27831924, 0.6726048257615831, 0.3026721715927124),
        (0.6, 21, 52, 66, 0.1510791366906475, 0.18328683, 0.7593311582292829, 0.19932442903518677),
        (0.7, 14, 59, 73, 0.0958904109589041, 0.13135356, 0.8162685121808734, 0.14284698963165282),
        (0.8, 9, 64, 78, 0.059602649006622516, 0.08898593, 0.8601973321702745, 0.09677219986915589),
        (0.9, 1, 72, 86, 0.006289308176100629, 0.010714983, 0.932203471660614, 0.011652543395757674),
    ]
    ours = matching_dataset(preds, truths, [row[0] for row in stardist])
    for got, (_, tp, fp, fn, accuracy, true_score, matched_score, pq) in zip(ours, stardist, strict=True):
        assert (got.true_positives, got.false_positives, got.false_negatives) == (tp, fp, fn)
        assert got.accuracy == accuracy
        assert got.precision == tp / (tp + fp) and got.recall == tp / (tp + fn)
        assert got.mean_true_score == pytest.approx(true_score, abs=1e-6)
        assert got.mean_matched_score == pytest.approx(matched_score, abs=1e-6)
        assert got.panoptic_quality == pytest.approx(pq, abs=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_accuracy_by_min_size_equals_dropping_the_objects_then_matching(threshold: float) -> None:
    """One IoU table per image scores every minimum size exactly as removing the small objects and matching
    again would, ignored pixels included (sizes count the whole image, as ``drop_small`` does)."""
    from biounet.infer.instances import drop_small
    from biounet.metrics.instances import accuracy_by_min_size, matching_dataset

    rng = np.random.default_rng(5)
    truths, preds, ignores = [], [], []
    for _ in range(3):
        truth = ndi.label(ndi.gaussian_filter(rng.random((64, 64)), 2) > 0.52)[0]
        noisy = ndi.gaussian_filter(rng.random((64, 64)) * 0.5 + (truth > 0) * 0.5, 1.0) > 0.5
        truths.append(truth)
        preds.append(ndi.label(noisy)[0])
        ignore = np.zeros(truth.shape, bool)
        ignore[:, 40:52] = True  # cuts objects, so annotated sizes differ from whole sizes
        ignores.append(ignore)
    sizes = [0, 1, 5, 12, 30, 60, 200]
    got = accuracy_by_min_size(preds, truths, sizes, threshold, ignores=ignores)
    expected = [matching_dataset([drop_small(p, m) for p in preds], truths, (threshold,), ignores=ignores)[0].accuracy
                for m in sizes]
    assert got == expected
    assert len(set(expected)) >= 4  # the sizes do matter here
