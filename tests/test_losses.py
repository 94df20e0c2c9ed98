"""Weighted cross-entropy, soft Dice and their sums: values by hand, ignored pixels, weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from biounet.errors import BiounetError
from biounet.losses import (
    CombinedLoss,
    SoftDiceLoss,
    WeightedBinaryCrossEntropy,
    WeightedCrossEntropy,
    build_loss,
)

IGNORE = 255
ALL_LOSSES = ["ce", "dice", "ce_dice", "bce_dice"]


def batch(name: str, shape: tuple[int, ...] = (2, 6, 7), classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and targets for ``name``, a quarter of the target pixels ignored."""
    channels, n_classes = (1, 2) if name == "bce_dice" else (classes, classes)
    logits = torch.randn(shape[0], channels, *shape[1:])
    target = torch.randint(0, n_classes, shape)
    target[torch.rand(shape) < 0.25] = IGNORE
    return logits, target


def loss_and_grad(loss: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor,
                  weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, target, weight)
    value.backward()
    assert logits.grad is not None
    return value.detach(), logits.grad


@pytest.mark.parametrize("shape", [(2, 5, 6), (1, 3, 4, 5)])
def test_unweighted_cross_entropy_is_torch_cross_entropy(shape: tuple[int, ...]) -> None:
    logits, target = torch.randn(shape[0], 4, *shape[1:]), torch.randint(0, 4, shape)
    expected = F.cross_entropy(logits, target)
    assert torch.allclose(WeightedCrossEntropy()(logits, target), expected)
    assert torch.allclose(WeightedCrossEntropy()(logits, target, torch.ones(shape)), expected)
    target[0, 0] = IGNORE
    ignoring = WeightedCrossEntropy(IGNORE)(logits, target)
    assert torch.allclose(ignoring, F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_weights_scale_each_pixels_contribution() -> None:
    logits, target = torch.randn(2, 3, 4, 5), torch.randint(0, 3, (2, 4, 5))
    target[1, 2, 3] = IGNORE
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    weight = torch.rand(2, 4, 5) * 10
    loss = WeightedCrossEntropy(IGNORE)
    n = 2 * 4 * 5 - 1  # normalised by the number of non-ignored pixels, not by the sum of weights
    assert torch.allclose(loss(logits, target, weight), (weight * per_pixel).sum() / n)
    heavier = weight.clone()
    heavier[0, 1, 1] += 7.0
    assert torch.allclose(loss(logits, target, heavier) - loss(logits, target, weight), 7.0 * per_pixel[0, 1, 1] / n)


def test_two_by_two_by_hand() -> None:
    # Every pixel scores class 1 at ln 3 against 0 for class 0: p = (1/4, 3/4); the sigmoid of ln 3 is 3/4.
    logits = torch.stack([torch.zeros(2, 2), torch.full((2, 2), math.log(3))])[None]
    target = torch.tensor([[[1, 0], [1, IGNORE]]])
    weight = torch.tensor([[[1.0, 2.0], [3.0, 100.0]]])

    ce = WeightedCrossEntropy(IGNORE)(logits, target, weight)
    assert ce.item() == pytest.approx((4 * math.log(4 / 3) + 2 * math.log(4)) / 3)

    # Class 1 over the 3 kept pixels: sum p t = 3/4 + 3/4, sum p = 9/4, sum t = 2 -> (3 + 1) / (17/4 + 1).
    fg = 4 / 5.25
    assert SoftDiceLoss(IGNORE)(logits, target).item() == pytest.approx(1 - fg)
    # Class 0: sum p t = 1/4, sum p = 3/4, sum t = 1 -> (1/2 + 1) / (7/4 + 1).
    bg = 1.5 / 2.75
    assert SoftDiceLoss(IGNORE, include_background=True)(logits, target).item() == pytest.approx(1 - (fg + bg) / 2)
    assert build_loss("ce_dice", IGNORE)(logits, target).item() == pytest.approx(
        (2 * math.log(4 / 3) + math.log(4)) / 3 + 1 - fg)

    single = logits[:, 1:]
    bce = (2 * math.log(4 / 3) + math.log(4)) / 3
    assert WeightedBinaryCrossEntropy(IGNORE)(single, target).item() == pytest.approx(bce)
    assert SoftDiceLoss(IGNORE)(single, target).item() == pytest.approx(1 - fg)
    assert build_loss("bce_dice", IGNORE)(single, target).item() == pytest.approx(bce + 1 - fg)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_ignored_pixels_contribute_nothing(name: str) -> None:
    loss = build_loss(name, IGNORE)
    logits, target = batch(name)
    weight = torch.rand(target.shape) + 0.5
    value, grad = loss_and_grad(loss, logits, target, weight)

    ignored = target == IGNORE
    other_logits = torch.where(ignored[:, None], torch.randn_like(logits) * 100, logits)
    other_weight = torch.where(ignored, torch.full_like(weight, float("nan")), weight)
    other_value, other_grad = loss_and_grad(loss, other_logits, target, other_weight)

    assert torch.isfinite(value) and value > 0
    assert torch.allclose(value, other_value) and torch.allclose(grad, other_grad)
    assert torch.all(grad.movedim(1, -1)[ignored] == 0)
    assert torch.any(grad != 0)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_labels_of_zero_weight_pixels_do_not_matter(name: str) -> None:
    loss = build_loss(name, IGNORE)
    logits, target = batch(name)
    weight = (torch.rand(target.shape) < 0.7).float() * 3.0
    value, grad = loss_and_grad(loss, logits, target, weight)
    zero = (weight == 0) & (target != IGNORE)
    relabelled = torch.where(zero, (target + 1) % (2 if name == "bce_dice" else 3), target)
    assert zero.any()
    other_value, other_grad = loss_and_grad(loss, logits, relabelled, weight)
    assert torch.allclose(value, other_value) and torch.allclose(grad, other_grad)


def test_all_pixels_ignored_gives_zero_not_nan() -> None:
    target = torch.full((1, 3, 3), IGNORE)
    for name in ALL_LOSSES:
        logits = torch.randn(1, 1 if name == "bce_dice" else 2, 3, 3)
        value, grad = loss_and_grad(build_loss(name, IGNORE), logits, target)
        assert value.item() == 0.0 and torch.all(grad == 0)


@pytest.mark.parametrize("channels", [1, 3])
def test_dice_is_about_zero_when_right_and_one_when_wrong(channels: int) -> None:
    n_classes = max(channels, 2)
    target = torch.randint(0, n_classes, (2, 16, 16))
    right = F.one_hot(target, n_classes).movedim(-1, 1).float() * 40 - 20  # +-20: probabilities ~1 and ~0
    wrong = F.one_hot((target + 1) % n_classes, n_classes).movedim(-1, 1).float() * 40 - 20
    if channels == 1:
        right, wrong = right[:, 1:], wrong[:, 1:]
    for include_background in (False, True):
        dice = SoftDiceLoss(include_background=include_background)
        assert dice(right, target).item() < 1e-6
        assert dice(wrong, target).item() > 0.99


def test_combined_loss_weights_only_the_cross_entropy() -> None:
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    weight = torch.rand(2, 5, 5) + 1.0  # all kept: Dice sees every pixel with weight 1
    combined = build_loss("ce_dice")
    assert isinstance(combined, CombinedLoss)
    expected = WeightedCrossEntropy()(logits, target, weight) + SoftDiceLoss()(logits, target)
    assert torch.allclose(combined(logits, target, weight), expected)


def test_mismatched_inputs_are_refused() -> None:
    logits, target = torch.randn(2, 3, 5, 5), torch.randint(0, 3, (2, 5, 5))
    with pytest.raises(BiounetError, match="target of shape"):
        build_loss("ce")(logits, target[:, :4])
    with pytest.raises(BiounetError, match="weight map"):
        build_loss("ce")(logits, target, torch.ones(2, 5, 4))
    with pytest.raises(BiounetError, match="integer"):
        build_loss("dice")(logits, target.float())
    with pytest.raises(BiounetError, match="1-channel"):
        build_loss("bce_dice")(logits, target)
    with pytest.raises(BiounetError, match="at least 2"):
        build_loss("ce")(logits[:, :1], target)
    with pytest.raises(BiounetError, match="unknown loss"):
        build_loss("focal")  # type: ignore[arg-type]


def test_dice_uses_a_weight_map_only_as_a_mask() -> None:
    logits = torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    weight = torch.rand(2, 6, 6) * 10
    weight[:, :2] = 0
    dice = SoftDiceLoss()
    assert torch.allclose(dice(logits, target, weight), dice(logits, target, (weight > 0).float()))
    assert not torch.allclose(dice(logits, target, weight), dice(logits, target))
