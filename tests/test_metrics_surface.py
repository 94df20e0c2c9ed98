"""Surface distances: hand-computed edge sets and distances, a brute-force oracle, empty-mask conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from biounet.metrics import surface
from biounet.metrics.surface import surface_distances, surface_distances_per_class


def square(top: int, left: int, side: int = 20, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def brute_force(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...], tau: float) -> tuple[float, ...]:
    """HD95, Hausdorff, ASD, surface Dice from all pairs of edge voxels (the definition, O(n^2))."""
    face = ndi.generate_binary_structure(a.ndim, 1)
    edges = [np.argwhere(m ^ ndi.binary_erosion(m, face, border_value=0)) * np.asarray(spacing) for m in (a, b)]
    pairwise = np.linalg.norm(edges[0][:, None, :] - edges[1][None, :, :], axis=-1)
    a_to_b, b_to_a = pairwise.min(axis=1), pairwise.min(axis=0)
    both = np.concatenate([a_to_b, b_to_a])
    return (max(np.percentile(a_to_b, 95), np.percentile(b_to_a, 95)), both.max(), both.mean(),
            np.count_nonzero(both <= tau) / both.size)


def as_tuple(scores: surface.SurfaceScores) -> tuple[float, ...]:
    return scores.hd95, scores.hausdorff, scores.average_surface_distance, scores.surface_dice


def test_squares_offset_by_two_columns() -> None:
    # A = rows/cols 5..24, B = cols 7..26. Edges are the 76-pixel rings. A -> B: the left column (20 px) is 2
    # from B's left column; the right column's rows 7..22 (16 px) are 2 from B's right column and rows 6, 23
    # are 1 from B's top/bottom rows; top/bottom rows are on B's rows (36 px at 0) except (5, 6), (24, 6) at 1.
    # So 36 zeros, 4 ones, 36 twos: 95th percentile 2, mean 76 / 76 = 1; B -> A mirrors it.
    a, b = square(5, 5), square(5, 7)
    scores = surface_distances(a, b)
    assert (scores.hd95, scores.hausdorff, scores.average_surface_distance) == (2.0, 2.0, 1.0)
    assert scores.surface_dice == pytest.approx(80 / 152)
    assert surface_distances(a, b, tolerance=2.0).surface_dice == 1.0
    assert surface_distances(b, a, tolerance=1.5) == surface_distances(a, b, tolerance=1.5)


def test_spacing_scales_distances_along_its_axis() -> None:
    # The same squares offset by 2 rows: the 20 pixels of A's top row are 2 rows = 4 units from B's top row,
    # and nothing is farther (other distances run along the columns, spacing 1).
    a, b = square(5, 5), square(7, 5)
    assert surface_distances(a, b).hd95 == 2.0
    scaled = surface_distances(a, b, spacing=(2.0, 1.0))
    assert (scaled.hd95, scaled.hausdorff) == (4.0, 4.0)
    assert surface_distances(a, b, spacing=(1.0, 2.0)).hd95 == 2.0


def test_concentric_squares_hd95_ignores_the_corners() -> None:
    # A (side 20) lies one pixel inside B (side 22). All 76 edge pixels of A are 1 from B's ring; of B's 84,
    # the 4 corners are sqrt(2) from A's corners and the other 80 are 1 away. The 95th percentile of B's
    # distances (80 ones, 4 corners: position 0.95 * 83 = 78.85) is 1; the Hausdorff distance is sqrt(2).
    a, b = square(5, 5), square(4, 4, side=22)
    scores = surface_distances(a, b)
    assert scores.hd95 == 1.0
    assert scores.hausdorff == pytest.approx(math.sqrt(2))
    assert scores.average_surface_distance == pytest.approx((76 + 80 + 4 * math.sqrt(2)) / 160)
    assert scores.surface_dice == pytest.approx(156 / 160)


def test_cubes_in_3d_with_anisotropic_spacing() -> None:
    a = np.zeros((16, 16, 18), dtype=bool)
    b = a.copy()
    a[3:13, 3:13, 3:13] = True
    b[3:13, 3:13, 5:15] = True
    # A's face at z = 3 (100 of 488 edge voxels) is 2 slices from B's face at z = 5: 2 * 0.5 = 1 unit, the
    # largest distance (other edges meet within 1 unit along y or x, or 2 slices along z).
    scores = surface_distances(a, b, spacing=(1.0, 1.0, 0.5))
    assert (scores.hd95, scores.hausdorff) == (1.0, 1.0)
    assert surface_distances(a, b).hd95 == 2.0


def test_mask_against_itself_and_translation_invariance() -> None:
    rng = np.random.default_rng(0)
    blob = ndi.gaussian_filter(rng.normal(size=(20, 24, 22)), 2) > 0
    assert as_tuple(surface_distances(blob, blob, spacing=(3.0, 1.0, 0.5))) == (0.0, 0.0, 0.0, 1.0)
    other = ndi.gaussian_filter(rng.normal(size=blob.shape), 2) > 0.05
    reference = surface_distances(blob, other)
    # Moving both masks inside a larger image, or flipping them, changes nothing.
    big_a, big_b = np.zeros((30, 40, 30), dtype=bool), np.zeros((30, 40, 30), dtype=bool)
    big_a[5:25, 9:33, 1:23], big_b[5:25, 9:33, 1:23] = blob, other
    assert as_tuple(surface_distances(big_a, big_b)) == pytest.approx(as_tuple(reference))
    assert as_tuple(surface_distances(blob[::-1], other[::-1])) == pytest.approx(as_tuple(reference))


def test_masks_touching_the_border_have_edges_there() -> None:
    # The full 10x10 image's edge is its 36-pixel border ring; the 10x9 mask's is its 34-pixel ring. Only the
    # full mask's column 9 (10 px) and the other's column 8 rows 1..8 (8 px) are 1 away from the other edge.
    full = np.ones((10, 10), dtype=bool)
    narrower = full.copy()
    narrower[:, 9] = False
    scores = surface_distances(full, narrower)
    assert (scores.hd95, scores.hausdorff) == (1.0, 1.0)
    assert scores.average_surface_distance == pytest.approx(18 / 70)
    assert scores.surface_dice == 1.0
    assert surface_distances(full, narrower, tolerance=0.5).surface_dice == pytest.approx(52 / 70)


@pytest.mark.parametrize("edge_fraction", [0.0, math.inf], ids=["distance-transform", "kd-tree"])
def test_matches_brute_force_on_random_masks(monkeypatch: pytest.MonkeyPatch, edge_fraction: float) -> None:
    monkeypatch.setattr(surface, "_KDTREE_MAX_EDGE_FRACTION", edge_fraction)
    rng = np.random.default_rng(1)
    for shape, spacing, sigma in (((40, 36), (1.5, 0.7), 2.0), ((40, 36), (1.0, 1.0), 0.7), ((14, 16, 12),
                                                                                         (2.0, 1.0, 0.5), 1.5)):
        a = ndi.gaussian_filter(rng.normal(size=shape), sigma) > 0
        b = ndi.gaussian_filter(rng.normal(size=shape), sigma) > 0.1
        got = as_tuple(surface_distances(a, b, spacing=spacing, tolerance=1.2))
        assert got == pytest.approx(brute_force(a, b, spacing, 1.2))


def test_empty_mask_conventions() -> None:
    empty, mask = np.zeros((8, 8), dtype=bool), square(2, 2, side=3, shape=(8, 8))
    assert as_tuple(surface_distances(empty, empty)) == (0.0, 0.0, 0.0, 1.0)
    for pred, truth in ((empty, mask), (mask, empty)):
        assert as_tuple(surface_distances(pred, truth)) == (math.inf, math.inf, math.inf, 0.0)
        nan_scores = surface_distances(pred, truth, one_empty=math.nan)
        assert math.isnan(nan_scores.hd95) and math.isnan(nan_scores.average_surface_distance)
        assert nan_scores.surface_dice == 0.0


def test_per_class_wrapper() -> None:
    pred, truth = np.zeros((32, 32), dtype=np.int64), np.zeros((32, 32), dtype=np.int64)
    truth[square(5, 5)] = 1
    pred[square(5, 7)] = 1
    truth[0:3, 0:3] = pred[0:3, 0:3] = 2          # class 2 predicted exactly
    truth[30:32, 30:32] = 3                      # class 3 missed; class 4 absent from both
    result = surface_distances_per_class(pred, truth, 5)
    assert result.classes == (1, 2, 3, 4)
    assert result.scores[0] == surface_distances(pred == 1, truth == 1)
    assert as_tuple(result.scores[1]) == (0.0, 0.0, 0.0, 1.0)
    assert as_tuple(result.scores[2]) == (math.inf, math.inf, math.inf, 0.0)
    assert as_tuple(result.scores[3]) == (0.0, 0.0, 0.0, 1.0)
    assert result.mean.hd95 == math.inf
    assert result.mean.surface_dice == pytest.approx((80 / 152 + 1 + 0 + 1) / 4)

    skipped = surface_distances_per_class(pred, truth, 5, one_empty=math.nan, include_background=True)
    assert skipped.classes == (0, 1, 2, 3, 4)
    # NaN (class 3) is left out of the mean distances.
    assert skipped.mean.hd95 == pytest.approx((skipped.scores[0].hd95 + 2.0 + 0.0 + 0.0) / 4)


def test_rejects_bad_input() -> None:
    mask = square(2, 2, side=3, shape=(8, 8))
    with pytest.raises(ValueError, match="shape"):
        surface_distances(mask, mask[:, :7])
    with pytest.raises(ValueError, match="binary mask"):
        surface_distances(mask.astype(np.float32), mask)
    with pytest.raises(ValueError, match="one value per axis"):
        surface_distances(mask, mask, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        surface_distances(mask, mask, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="tolerance"):
        surface_distances(mask, mask, tolerance=-1.0)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        surface_distances_per_class(mask.astype(np.int64) * 2, mask.astype(np.int64), 2)
