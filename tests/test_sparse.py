"""Sparse annotation: the slices kept, and training losses blind to unannotated voxels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biounet.data.labels import IGNORE_INDEX, LabelConfig
from biounet.data.sparse import slice_positions, sparsify
from biounet.data.targets import border_weight_map
from biounet.errors import BiounetError
from biounet.losses import build_loss


def test_slice_positions_split_the_axis_evenly() -> None:
    # Interior points of linspace(0, 39, 5): 9.75, 19.5, 29.25.
    assert slice_positions(40, 3) == [10, 20, 29]
    assert slice_positions(5, 1) == [2]
    assert slice_positions(2, 3) == [0, 1]
    assert slice_positions(7, 0) == []


def test_sparsify_keeps_orthogonal_slices_and_marks_the_rest() -> None:
    dense = np.random.default_rng(0).integers(0, 3, (40, 40, 40)).astype(np.uint8)
    sparse = sparsify(dense, 3, ignore=255)
    assert sparse.dtype == np.uint8
    kept = sparse != 255
    # A voxel is kept when any of its coordinates is a kept slice: 1 - (37/40)^3 of them.
    assert kept.mean() == pytest.approx(1 - (37 / 40) ** 3)
    assert np.array_equal(sparse[kept], dense[kept])
    for axis in range(3):
        for k in (10, 20, 29):
            assert np.take(kept, k, axis=axis).all()
    assert not kept[0, 0, 0] and not kept[11, 21, 30]
    # One count per axis: slices only across the first axis.
    only_z = sparsify(dense, (1, 0, 0), ignore=255)
    assert np.array_equal(np.flatnonzero((only_z != 255).any(axis=(1, 2))), [20])


def test_sparsify_widens_the_dtype_for_the_ignore_value_and_refuses_a_clash() -> None:
    dense = np.zeros((4, 5, 6), np.uint8)
    assert sparsify(dense, 1, ignore=-1).dtype == np.int16
    with pytest.raises(BiounetError, match="already occurs"):
        sparsify(dense, 1, ignore=0)


@pytest.mark.parametrize("loss_name", ["ce", "dice", "ce_dice"])
def test_loss_ignores_unannotated_voxels(loss_name: str) -> None:
    rng = np.random.default_rng(1)
    shape = (12, 14, 10)
    dense = rng.integers(0, 3, shape)
    kept = sparsify(dense, 2, ignore=255) != 255
    # A second dense truth that differs everywhere the annotator did not look.
    other = np.where(kept, dense, (dense + 1) % 3)
    config = LabelConfig(kind="classes", ignore=255)
    loss_fn = build_loss(loss_name, ignore_index=IGNORE_INDEX)  # type: ignore[arg-type]
    logits = torch.randn(1, 3, *shape, requires_grad=True)
    losses = []
    for truth in (dense, other):
        target, instances = config.targets(sparsify(truth, 2, ignore=255), 3)
        assert np.array_equal(target == IGNORE_INDEX, ~kept)
        weight = border_weight_map(np.where(target < 0, 0, target), instances, w0=10.0, sigma=2.0,
                                   class_weights="balanced", ignore=target < 0)
        assert (weight[~kept] == 0).all() and (weight[kept] > 0).all()
        losses.append(loss_fn(logits, torch.from_numpy(target)[None], torch.from_numpy(weight)[None]))
    assert losses[0].item() == losses[1].item()
    losses[0].backward()
    assert logits.grad is not None
    # No gradient reaches the logits of unannotated voxels, and every annotated one gets some.
    grad = logits.grad[0].abs().sum(0).numpy()
    assert (grad[~kept] == 0).all() and (grad[kept] > 0).mean() > 0.99
    # Changing the prediction there changes nothing either.
    with torch.no_grad():
        changed = logits + torch.from_numpy(~kept)[None, None] * torch.randn_like(logits) * 5
        target, instances = config.targets(sparsify(dense, 2, ignore=255), 3)
        weight = border_weight_map(np.where(target < 0, 0, target), instances, w0=10.0, sigma=2.0,
                                   class_weights="balanced", ignore=target < 0)
        again = loss_fn(changed, torch.from_numpy(target)[None], torch.from_numpy(weight)[None])
    assert again.item() == pytest.approx(losses[0].item(), rel=1e-6)
