"""Fiji's thinning, the ISBI 2012 stack protocol, and unannotated pixels in every metric (hand-computed cases)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from biounet.data.labels import IGNORE_INDEX
from biounet.metrics.instances import instance_scores
from biounet.metrics.isbi import isbi_challenge_scores
from biounet.metrics.pixel import pixel_error
from biounet.metrics.rand import rand_family, v_info, v_rand
from biounet.metrics.suite import pair_from_arrays, score
from biounet.metrics.surface import surface_distances
from biounet.metrics.sweep import ThresholdSweep, pooled_rand_error
from biounet.metrics.thinning import fiji_thinning
from biounet.metrics.warping import split_merge_warping_error, warping_error

TWO_CELLS = np.array([[1, 1, 1, 0, 1, 1, 1]] * 3)


def literal_fiji_watershed(cells: np.ndarray) -> np.ndarray:
    """Line-by-line port of Fiji's ``WatershedTransform2D.apply`` on the inverted binarisation (reference)."""
    mask, wshed, init, inqueue = -2, 0, -1, -3
    relief = np.where(cells, 0, 255)
    height, width = relief.shape
    labels = np.full((width, height), init)
    records = sorted(((int(relief[y, x]), x, y) for x in range(width) for y in range(height)), key=lambda r: r[0])

    def neighbours(x: int, y: int) -> list[tuple[int, int]]:
        around = ((x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1))
        return [(u, v) for u, v in around if 0 <= u < width and 0 <= v < height]

    current, flag = 0, False
    for level in sorted({r[0] for r in records}):
        pixels = [(x, y) for h, x, y in records if h == level]
        fifo: deque[tuple[int, int]] = deque()
        for x, y in pixels:
            labels[x, y] = mask
            if any(labels[u, v] >= wshed for u, v in neighbours(x, y)):
                fifo.append((x, y))
                labels[x, y] = inqueue
        while fifo:
            x, y = fifo.popleft()
            for u, v in neighbours(x, y):
                if labels[u, v] > 0:
                    if labels[x, y] == inqueue or (labels[x, y] == wshed and flag):
                        labels[x, y] = labels[u, v]
                    elif labels[x, y] > 0 and labels[x, y] != labels[u, v]:
                        labels[x, y], flag = wshed, False
                elif labels[u, v] == wshed and labels[x, y] == inqueue:
                    labels[x, y], flag = wshed, True
                elif labels[u, v] == mask:
                    labels[u, v] = inqueue
                    fifo.append((u, v))
        for x, y in pixels:
            if labels[x, y] == mask:
                current += 1
                labels[x, y] = current
                fifo.append((x, y))
                while fifo:
                    a, b = fifo.popleft()
                    for u, v in neighbours(a, b):
                        if labels[u, v] == mask:
                            labels[u, v] = current
                            fifo.append((u, v))
    return np.where(labels == init, 0, labels).T


# ---------------------------------------------------------------- Fiji's thinning


def test_fiji_thinning_by_hand_where_skimage_draws_other_lines() -> None:
    # Two cells touching at a corner. Worked through the FIFO: queue (0,0), (0,2), (1,1), (2,2) in (x, y),
    # column-major; (0,2) and (1,1) see both basins -> dams; then (1,0) <- 1; (2,1) meets the dam (1,1) first
    # and then basin 2 -> 2; (2,0) sees 1 (west) and 2 (south) -> dam.
    cells = np.array([[0, 0, 0],
                      [1, 0, 0],
                      [0, 1, 0]], dtype=bool)
    labels, count = fiji_thinning(cells)
    assert count == 2
    assert labels.tolist() == [[1, 1, 0], [1, 0, 2], [0, 2, 2]]
    markers = ndi.label(cells, structure=ndi.generate_binary_structure(2, 1))[0]
    flooded = watershed((~cells).astype(float), markers, connectivity=1, watershed_line=True)  # type: ignore[no-untyped-call]
    skimage_lines = flooded > 0
    assert skimage_lines.tolist() != (labels > 0).tolist()

    # Truth: top row and bottom row are two cells. Fiji: A1 = {1, 1, dam}, A2 = {dam, 2, 2}:
    # S_AB = S_B = 4 + 4 + 2 = 10, S_A = 18 -> F = 2 * 10 / 28 = 5 / 7 (skimage's lines would give 7 / 8).
    truth = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 1]])
    assert v_rand(cells.astype(float), truth, thresholds=[0.5]) == pytest.approx(5 / 7)
    # H(A) = ln 2, B = sizes 2, 2, 1, 1 of 6 with each inside one truth cell, so I = H(A).
    h_b = 2 / 3 * math.log(3) + 1 / 3 * math.log(6)
    expected = 2 * math.log(2) / (math.log(2) + h_b)
    assert v_info(cells.astype(float), truth, thresholds=[0.5]) == pytest.approx(expected)


def test_fiji_thinning_matches_a_literal_port_of_the_java() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        shape = tuple(rng.integers(1, 24, 2))
        cells = ndi.gaussian_filter(rng.random(shape), rng.uniform(0, 2)) > rng.uniform(0.3, 0.7)
        assert np.array_equal(fiji_thinning(cells)[0], literal_fiji_watershed(cells))


def test_a_slice_without_cells_floods_into_one_basin() -> None:
    labels, count = fiji_thinning(np.zeros((3, 4), dtype=bool))
    assert count == 1 and (labels == 1).all()


# ---------------------------------------------------------------- the stack protocol


def stack_with_different_best_thresholds() -> tuple[np.ndarray, np.ndarray]:
    merged = TWO_CELLS.astype(float)
    merged[2, 3] = 0.6  # a gap that merges both cells below th = 0.6
    split = TWO_CELLS.astype(float)
    split[:, 1] = 0.5  # an extra membrane from th = 0.5 on
    return np.stack([merged, split]), np.stack([TWO_CELLS, TWO_CELLS])


def test_one_threshold_for_the_whole_stack() -> None:
    prob, truth = stack_with_different_best_thresholds()
    scores = isbi_challenge_scores(prob, list(truth))
    # Mean per-slice V_rand: th <= 0.4 -> (2/3 + 1) / 2; 0.5 -> (2/3 + 17/22) / 2; 0.6..0.9 -> (1 + 17/22) / 2;
    # 1.0 -> one basin per slice, (2/3 + 2/3) / 2. Each slice alone would reach 1.
    assert scores.v_rand == pytest.approx(39 / 44) and scores.v_rand_threshold == 0.6
    assert scores.v_rand_per_slice == pytest.approx((1.0, 17 / 22))
    # Pooled Rand: at 0.6, (S_AB, S_A, S_B) = (162, 162, 162) + (102, 162, 102) -> F = 528 / 588 = 44 / 49.
    assert scores.rand_error == pytest.approx(5 / 49) and scores.rand_error_threshold == 0.6
    assert scores.rand_error_per_slice == pytest.approx((0.0, 1 - 204 / 264))
    # Pixels, pooled: th 0.0 has one false positive of 36 cells -> F1 = 72 / 73, better than 66 / 69 at 0.6.
    assert scores.pixel_error == pytest.approx(1 / 73) and scores.pixel_error_threshold == 0.0
    # V_info at 0.6: slice 1 perfect (1), slice 2 split into 3 + 3 + 9 + 3 singletons.
    h_a, n = math.log(2), 18
    h_b = -(2 * (3 / n) * math.log(3 / n) + (9 / n) * math.log(9 / n) + 3 * (1 / n) * math.log(1 / n))
    assert scores.v_info == pytest.approx((1 + 2 * h_a / (h_a + h_b)) / 2) and scores.v_info_threshold == 0.6
    # Warping (0.0..0.9): at 0.0 the gap is one merging pixel of slice 1 (1/21, slice 2 is right); at 0.6 the
    # extra membrane of slice 2 shrinks to one splitting pixel (the others are simple): 1/21 again. Tie: 0.0.
    assert scores.warping_error == pytest.approx(1 / 42) and scores.warping_error_threshold == 0.0
    assert isbi_challenge_scores(prob, truth, warping=False).warping_error is None


def test_rand_error_pooled_over_images_of_different_shapes_uses_one_threshold() -> None:
    prob, truth = stack_with_different_best_thresholds()
    # The second image transposed: another shape, the same Rand counts. Each image alone scores 0 at its own
    # best threshold; pooled at one threshold they give the stack's 5/49 (at 0.6).
    sweeps = [ThresholdSweep(prob[0], truth[0]), ThresholdSweep(prob[1].T, truth[1].T)]
    assert [s.rand_error().value for s in sweeps] == [0.0, 0.0]
    best = pooled_rand_error(sweeps)
    assert best.value == pytest.approx(5 / 49) and best.threshold == 0.6


def test_validation_selects_by_the_challenge_rand_error_not_per_image_thresholds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from biounet.data.examples import Example
    from biounet.training import validation

    prob, truth = stack_with_different_best_thresholds()
    examples = [Example(f"{i}", np.zeros((1, *p.shape), np.float32), t.astype(np.int64), np.ones(p.shape, np.float32))
                for i, (p, t) in enumerate(zip(prob, truth, strict=True))]
    by_name = {e.name: np.stack([1 - p, p]).astype(np.float32) for e, p in zip(examples, prob, strict=True)}
    monkeypatch.setattr(validation, "predict_example", lambda model, example: by_name[example.name])
    scores = validation.make_validator(examples, num_classes=2)(None)  # type: ignore[arg-type]
    assert scores["rand_error"] == pytest.approx(5 / 49)
    assert scores["dice"] == pytest.approx(np.mean([score(pair_from_arrays(by_name[e.name], e.target), ["dice"])["dice"]
                                                    for e in examples]))


def test_stack_protocol_rejects_mismatched_slices() -> None:
    from biounet.errors import BiounetError

    with pytest.raises(BiounetError, match="differ in shape"):
        isbi_challenge_scores([np.zeros((3, 3)), np.zeros((3, 4))], [np.zeros((3, 3)), np.zeros((3, 4))])
    with pytest.raises(BiounetError, match="differ in shape"):
        isbi_challenge_scores(np.zeros((2, 3, 3)), np.zeros((1, 3, 3)))


# ---------------------------------------------------------------- unannotated pixels


def with_ignored_column(image: np.ndarray, fill: float | int) -> np.ndarray:
    return np.concatenate([image, np.full((image.shape[0], 1), fill, dtype=image.dtype)], axis=1)


@pytest.mark.parametrize("fill", [0.0, 1.0, 0.35])
def test_isbi_metrics_leave_an_ignored_border_column_out(fill: float) -> None:
    pred = TWO_CELLS.astype(float)
    pred[:, 1] = 0.3  # an extra membrane below th = 0.3
    pred[2, 3] = 0.8  # a gap above th = 0.8
    truth = with_ignored_column(TWO_CELLS, IGNORE_INDEX)
    padded = with_ignored_column(pred, fill)  # whatever is predicted there
    assert pixel_error(padded, truth) == pixel_error(pred, TWO_CELLS)
    assert rand_family(padded, truth) == rand_family(pred, TWO_CELLS)
    # The ignored column is fixed background of the truth, like the frame the cropped image is padded with.
    assert warping_error(padded, truth, 0.85) == warping_error(pred, TWO_CELLS, 0.85)
    assert split_merge_warping_error(padded, truth) == split_merge_warping_error(pred, TWO_CELLS)
    # Counted as membrane instead, the column would cost pixel error when predicted cell.
    if fill == 1.0:
        assert pixel_error(padded, with_ignored_column(TWO_CELLS, 0)) > pixel_error(pred, TWO_CELLS)


def test_warping_never_flips_or_counts_ignored_pixels() -> None:
    truth = np.ones((3, 7), int)
    truth[:, 5] = IGNORE_INDEX  # an unannotated stripe through the cell
    pred = np.ones((3, 7))
    pred[:, 5] = 0  # the prediction cuts the cell exactly there
    assert warping_error(pred, truth) == 0.0 and split_merge_warping_error(pred, truth) == 0.0
    cut_elsewhere = np.ones((3, 7))
    cut_elsewhere[:, 2] = 0  # splits the annotated part: (0, 2) and then (1, 2) are simple, (2, 2) is not
    assert warping_error(cut_elsewhere, truth) == pytest.approx(1 / 18)  # 18 annotated pixels
    assert split_merge_warping_error(cut_elsewhere, truth) == pytest.approx(1 / 18)


def test_surface_distances_drop_edges_in_and_along_ignored_regions() -> None:
    truth = np.zeros((5, 7), int)
    truth[1:4, 1:4] = 1
    ignore = np.zeros(truth.shape, dtype=bool)
    ignore[:, 3:] = True
    same = surface_distances(truth, truth, ignore=ignore)
    assert (same.hd95, same.average_surface_distance, same.surface_dice) == (0.0, 0.0, 1.0)
    anything = truth.copy()
    anything[:, 4:] = np.random.default_rng(0).integers(0, 2, (5, 3))
    assert surface_distances(anything, truth, ignore=ignore) == same
    # Shifted one column: annotated truth edges (1,1), (2,1), (3,1), (1,2), (3,2) (not (2,2): its east
    # neighbour is ignored); predicted edges (1,2), (2,2), (3,2). Directed: p->t [0, 1, 0], t->p [1, 1, 1, 0, 0].
    shifted = np.zeros_like(truth)
    shifted[1:4, 2:5] = 1
    scores = surface_distances(shifted, truth, ignore=ignore)
    assert scores.hd95 == pytest.approx(1.0) and scores.hausdorff == 1.0
    assert scores.average_surface_distance == pytest.approx(4 / 8) and scores.surface_dice == 1.0
    assert surface_distances(anything, truth).hd95 > 0.0  # without ignore, the prediction there counts


def test_instance_matching_drops_mostly_ignored_objects() -> None:
    truth = np.zeros((4, 8), int)
    truth[0:2, 0:2] = 1  # annotated
    truth[0:2, 4:6] = 2  # 3 of its 4 pixels ignored: dropped
    pred = np.zeros_like(truth)
    pred[0:2, 0:3] = 5  # matches object 1; its third column is ignored, so IoU on annotated pixels is 1
    pred[2:4, 6:8] = 7  # wholly ignored: dropped
    pred[0:2, 4:6] = 9  # matches the dropped truth object: dropped too (3 of 4 ignored)
    ignore = np.zeros(truth.shape, dtype=bool)
    ignore[:, 2] = True
    ignore[0:2, 5] = True
    ignore[1, 4] = True
    ignore[2:4, 6:8] = True
    scores = instance_scores(pred, truth, ignore=ignore)
    assert (scores.true_objects, scores.predicted_objects) == (1, 1)
    assert (scores.true_positives, scores.panoptic_quality) == (1, 1.0)
    without = instance_scores(pred, truth)
    assert (without.true_objects, without.predicted_objects, without.true_positives) == (2, 3, 2)
    half = ignore.copy()
    half[1, 4] = False  # object 2 now half ignored: kept
    assert instance_scores(pred, truth, ignore=half).true_objects == 2


def test_suite_scores_an_ignored_region_like_the_cropped_image() -> None:
    prob = np.stack([1 - TWO_CELLS * 0.9, TWO_CELLS * 0.9]).astype(np.float32)
    prob[1, 2, 3] = 0.7  # a gap
    prob[0, 2, 3] = 0.3
    truth = with_ignored_column(TWO_CELLS, IGNORE_INDEX)
    padded = np.stack([with_ignored_column(c, v) for c, v in zip(prob, (0.2, 0.8), strict=True)])
    names = ["pixel_error", "rand_error", "v_rand", "v_info", "warping_error", "warping_splits_merges", "dice"]
    assert score(pair_from_arrays(padded, truth), names) == score(pair_from_arrays(prob, TWO_CELLS), names)
