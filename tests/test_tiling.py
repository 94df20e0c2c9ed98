"""Tiling arithmetic: mirrored reads, tile placement, blending weights."""

from __future__ import annotations

import numpy as np
import pytest

from biounet.geometry import read_mirrored, reflect_indices
from biounet.infer.blending import Blender
from biounet.infer.tiling import plan_tiles
from biounet.models import UNetConfig


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50])
@pytest.mark.parametrize("pad", [0, 1, 5, 23, 120])
def test_reflect_indices_match_numpy_reflect_padding(size: int, pad: int) -> None:
    axis = np.arange(size)
    mode = "reflect" if size > 1 else "edge"
    expected = np.pad(axis, pad, mode=mode)
    assert np.array_equal(reflect_indices(-pad, size + pad, size), expected)


def test_read_mirrored_equals_a_crop_of_the_padded_image() -> None:
    image = np.random.rand(2, 13, 29)
    padded = np.pad(image, ((0, 0), (40, 40), (40, 40)), mode="reflect")
    for (y0, y1), (x0, x1) in [((-40, 10), (-5, 30)), ((3, 53), (20, 69)), ((-40, 53), (-40, 69)), ((2, 5), (3, 9))]:
        got = read_mirrored(image, [(y0, y1), (x0, x1)])
        assert np.array_equal(got, padded[:, y0 + 40:y1 + 40, x0 + 40:x1 + 40])


class CountingArray:
    """An array-like that records the regions read from it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.reads = data, []  # type: ignore[var-annotated]
        self.shape, self.ndim, self.dtype = data.shape, data.ndim, data.dtype

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        self.reads.append(key)
        return self.data[key]


def test_read_mirrored_reads_only_the_bounding_box() -> None:
    image = CountingArray(np.random.rand(1, 1000, 1000))
    block = read_mirrored(image, [(-92, 480), (500, 1072)])
    assert block.shape == (1, 572, 572)
    (key,) = image.reads
    assert key[1] == slice(0, 480) and key[2] == slice(500, 1000)


@pytest.mark.parametrize("shape", [(512, 512), (2048, 1000), (100, 37), (1, 600), (388, 389)])
def test_valid_plan_covers_the_image_on_the_pooling_grid(shape: tuple[int, int]) -> None:
    config = UNetConfig()
    plan = plan_tiles(config, shape, (572, 572))
    assert not plan.blend
    covered = np.zeros(shape, bool)
    for tile in plan:
        assert all(s % a == 0 for s, a in zip(tile.output_start, config.alignment, strict=True))
        assert config.output_shape(plan.input_tile) == plan.output_tile
        assert tuple(b - a for a, b in zip(tile.input_start, tile.input_stop, strict=True)) == plan.input_tile
        assert all(i == o - 92 for i, o in zip(tile.input_start, tile.output_start, strict=True))
        covered[tile.output_slices()] = True
    assert covered.all()
    assert all(t <= 572 for t in plan.input_tile)


def test_small_images_get_small_tiles() -> None:
    plan = plan_tiles(UNetConfig(), (100, 37), (572, 572))
    assert len(plan) == 1 and plan.input_tile == (300, 236)  # outputs 116 and 52 cover 100 and 37


@pytest.mark.parametrize("dims", [2, 3])
def test_an_image_of_one_pixel_predicts_with_instance_norm(dims: int) -> None:
    """The smallest tile would leave the deepest level one pixel, where instance norm has nothing to
    normalise; the tile is one pooling step larger instead."""
    import torch

    from biounet.infer import predict
    from biounet.models import UNet

    config = UNetConfig(spatial_dims=dims, base_channels=4, depth=2, padding="same", norm="instance")
    plan = plan_tiles(config, (1,) * dims, (572,) * dims)
    assert plan.input_tile == (8,) * dims and len(plan) == 1
    torch.manual_seed(0)
    probabilities = predict(UNet(config), np.full((1,) * (dims + 1), 100, np.float32))
    assert probabilities.shape == (2, *(1,) * dims) and np.isfinite(probabilities).all()
    # Without instance norm the smallest tile stays the smallest valid one.
    assert plan_tiles(UNetConfig(spatial_dims=dims, depth=2, padding="same"), (1,) * dims,
                      (572,) * dims).input_tile == (4,) * dims


def test_square_plan_for_rotations() -> None:
    plan = plan_tiles(UNetConfig(), (100, 37), (572, 572), square=True)
    assert plan.input_tile == (300, 300)


def test_large_image_tile_count() -> None:
    plan = plan_tiles(UNetConfig(), (2048, 2048), (572, 572))
    assert plan.output_tile == (388, 388) and plan.starts[0] == (0, 384, 768, 1152, 1536, 1920)
    assert len(plan) == 36


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_blending_weights_sum_to_one_everywhere(overlap: float) -> None:
    config = UNetConfig(padding="same", depth=3)
    shape = (150, 77)
    plan = plan_tiles(config, shape, (64, 64), overlap=overlap)
    assert plan.blend
    total = np.zeros(shape)
    blender = Blender(plan)
    for tile in plan:
        total[tile.output_slices()] += blender.weights(tile)
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)
    assert all(starts[-1] + 64 == n for starts, n in zip(plan.starts, shape, strict=True))


def test_overlap_is_validated() -> None:
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(UNetConfig(padding="same"), (100, 100), (64, 64), overlap=1.0)
