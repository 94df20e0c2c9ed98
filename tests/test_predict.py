"""Overlap-tile prediction: tiled equals whole-image, blending, TTA, any array-like in and out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from biounet.errors import BiounetError
from biounet.infer import predict
from biounet.infer.tiling import plan_tiles
from biounet.models import UNet, UNetConfig
from biounet.models.normalization import Normalization


def whole_image_probabilities(model: UNet, image: np.ndarray) -> np.ndarray:
    """One pass over the image mirror-padded by half the halo on every side."""
    padded = whole_padded(model.config, image)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(padded)[None].float())
    return torch.softmax(logits, 1)[0].numpy()


def whole_padded(config: UNetConfig, image: np.ndarray) -> np.ndarray:
    """The image mirror-padded by half the halo on every side."""
    return np.pad(image, [(0, 0)] + [(h // 2, h // 2) for h in config.halo_size()], mode="reflect")


def image_whose_padded_size_is_valid(config: UNetConfig, wanted: tuple[int, ...]) -> np.ndarray:
    spatial = tuple(s - h for s, h in zip(config.valid_input_shape(wanted), config.halo_size(), strict=True))
    return np.random.rand(config.in_channels, *spatial).astype(np.float32)


@pytest.mark.parametrize("config", [
    UNetConfig(base_channels=4, depth=2),
    UNetConfig(base_channels=4, depth=3, in_channels=2, out_channels=3),
    UNetConfig(base_channels=4, depth=2, upsample="interp"),
])
def test_tiled_equals_one_whole_image_pass(config: UNetConfig) -> None:
    model = UNet(config)
    image = image_whose_padded_size_is_valid(config, (190, 260))
    plan = plan_tiles(config, image.shape[1:], (90, 90))
    assert all(len(starts) >= 3 for starts in plan.starts), "the test needs several tiles per axis"
    tiled = predict(model, image, tile=90, batch_size=3)
    whole = whole_image_probabilities(model, image)
    assert tiled.shape == whole.shape == (config.out_channels, *image.shape[1:])
    assert np.abs(tiled - whole).max() <= 1e-5


def test_tiled_equals_whole_for_the_paper_network() -> None:
    model = UNet(UNetConfig(base_channels=8))
    image = image_whose_padded_size_is_valid(model.config, (700, 572))  # 516 x 388: 2 x 1 tiles of 388
    tiled = predict(model, image, tile=572, batch_size=2)
    assert np.abs(tiled - whole_image_probabilities(model, image)).max() <= 1e-5


def test_tiled_equals_whole_in_3d() -> None:
    config = UNetConfig(spatial_dims=3, base_channels=2, depth=2)
    model = UNet(config)
    image = image_whose_padded_size_is_valid(config, (80, 90, 100))
    tiled = predict(model, image, tile=64, batch_size=4)
    assert len(plan_tiles(config, image.shape[1:], (64, 64, 64))) >= 8
    assert np.abs(tiled - whole_image_probabilities(model, image)).max() <= 1e-5


def test_tiled_equals_whole_for_an_anisotropic_3d_model() -> None:
    config = UNetConfig(spatial_dims=3, base_channels=2, depth=2, pool_sizes=((1, 2, 2), (2, 2, 2)),
                        kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)))
    model = UNet(config)
    image = image_whose_padded_size_is_valid(config, (30, 90, 100))
    tiled = predict(model, image, tile=(20, 60, 60), batch_size=3)
    assert len(plan_tiles(config, image.shape[1:], (20, 60, 60))) >= 8
    assert np.abs(tiled - whole_image_probabilities(model, image)).max() <= 1e-5


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (61, 17), (200, 131)])
def test_any_image_size_gives_probabilities_of_that_size(shape: tuple[int, int]) -> None:
    model = UNet(UNetConfig(base_channels=4, depth=3))
    probs = predict(model, np.random.rand(*shape).astype(np.float32), tile=100)
    assert probs.shape == (2, *shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)


def pointwise_same_model() -> UNet:
    """A same-padded model whose 3x3 kernels are zero off-centre: its output at a pixel depends only on
    that pixel, so blending correctly weighted tiles must reproduce the whole-image pass exactly."""
    model = UNet(UNetConfig(base_channels=4, depth=0, padding="same"))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d) and module.kernel_size == (3, 3):
                centre = module.weight[:, :, 1, 1].clone()
                module.weight.zero_()
                module.weight[:, :, 1, 1] = centre
    return model


@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_blended_tiles_reproduce_a_position_independent_model(overlap: float) -> None:
    model = pointwise_same_model()
    image = np.random.rand(1, 157, 203).astype(np.float32)
    tiled = predict(model, image, tile=64, overlap=overlap)
    with torch.no_grad():
        whole = torch.softmax(model(torch.from_numpy(image)[None]), 1)[0].numpy()
    assert np.abs(tiled - whole).max() <= 1e-5


def test_blending_hides_tile_borders() -> None:
    """A same model with real context differs at tile borders; blending keeps the seams small."""
    model = UNet(UNetConfig(base_channels=4, depth=2, padding="same"))
    image = np.random.rand(1, 256, 256).astype(np.float32)
    with torch.no_grad():
        whole = torch.softmax(model.eval()(torch.from_numpy(image)[None]), 1)[0].numpy()
    blended = predict(model, image, tile=64, overlap=0.5)
    hard = predict(model, image, tile=64, overlap=0.0)
    interior = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(blended - whole)[interior].mean() < 0.5 * np.abs(hard - whole)[interior].mean()


def test_tta_is_exactly_equivariant_under_the_dihedral_group() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    image = image_whose_padded_size_is_valid(model.config, (180, 180))[0]
    base = predict(model, image, tile=100, tta=True)
    for k in range(4):
        for flip in (False, True):
            moved = np.rot90(image[:, ::-1] if flip else image, k).copy()
            expected = np.rot90(base[:, :, ::-1] if flip else base, k, axes=(1, 2))
            assert np.abs(predict(model, moved, tile=100, tta=True) - expected).max() <= 1e-5


def test_3d_flip_tta_is_exactly_equivariant() -> None:
    config = UNetConfig(spatial_dims=3, base_channels=2, depth=2)
    model = UNet(config)
    image = image_whose_padded_size_is_valid(config, (50, 60, 40))
    # One tile: flips act on each tile, and a tile grid is symmetric under flips only when it is one tile.
    assert len(plan_tiles(config, image.shape[1:], (132, 132, 132))) == 1
    base = predict(model, image, tta=True)
    # The flip average equals one whole-volume pass per flip, undone and averaged.
    whole = np.mean([np.flip(whole_image_probabilities(model, np.flip(image, axes).copy()), axes)
                     for axes in [()] + [a for n in (1, 2, 3) for a in itertools.combinations((1, 2, 3), n)]], axis=0)
    assert np.abs(base - whole).max() <= 1e-5
    for axes in [(1,), (2, 3), (1, 2, 3)]:
        moved = np.flip(image, axes).copy()
        assert np.abs(predict(model, moved, tta=True) - np.flip(base, axes)).max() <= 1e-5


def test_tta_changes_an_untrained_prediction_but_keeps_probabilities() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    image = np.random.rand(70, 50).astype(np.float32)
    plain, tta = predict(model, image), predict(model, image, tta=True)
    assert np.abs(plain - tta).max() > 1e-3
    np.testing.assert_allclose(tta.sum(0), 1.0, rtol=1e-5)


def test_single_output_models_give_sigmoid_probabilities() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2, out_channels=1))
    image = image_whose_padded_size_is_valid(model.config, (100, 100))
    probs = predict(model, image, tile=60)
    with torch.no_grad():
        logits = model(torch.from_numpy(whole_padded(model.config, image))[None])
    np.testing.assert_allclose(probs, torch.sigmoid(logits)[0].numpy(), atol=1e-6)


class WriteOnlyArray:
    """A minimal array-like output, like a zarr array or an HDF5 dataset."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.data = np.full(shape, np.nan, np.float32)
        self.shape, self.writes = shape, 0

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return self.data[key]

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        self.writes += 1
        self.data[key] = value


def test_output_may_be_any_array_like() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    image = np.random.rand(1, 150, 170).astype(np.float32)
    out = WriteOnlyArray((2, 150, 170))
    assert predict(model, image, tile=60, out=out) is out
    assert out.writes == len(plan_tiles(model.config, (150, 170), (60, 60)))
    np.testing.assert_allclose(out.data, predict(model, image, tile=60), atol=1e-6)


def test_normalization_is_applied_with_whole_image_statistics() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    image = (np.random.rand(1, 150, 170) * 1000 + 50).astype(np.float32)
    norm = Normalization("zscore")
    direct = predict(model, norm(image), tile=60)
    assert np.abs(predict(model, image, tile=60, normalization=norm) - direct).max() <= 1e-5


def test_bad_inputs_are_reported() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2))
    with pytest.raises(BiounetError, match="does not fit a model with 1 channel"):
        predict(model, np.zeros((3, 50, 50), np.float32))
    bad = np.zeros((50, 50), np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(BiounetError, match="NaN"):
        predict(model, bad)
    with pytest.raises(BiounetError, match="output array has shape"):
        predict(model, np.zeros((50, 50), np.float32), out=np.zeros((2, 50, 51), np.float32))


@pytest.mark.parametrize("config", [UNetConfig(base_channels=4, depth=2, norm="batch"),
                                    UNetConfig(spatial_dims=3, base_channels=2, depth=2, norm="batch", padding="same")])
def test_batch_norm_folds_into_the_convolutions_for_inference(config: UNetConfig) -> None:
    from biounet.infer.fusion import fold_batch_norm

    model = UNet(config)
    # Non-trivial running statistics and affine parameters, as after training.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d) for m in model.modules())
    x = torch.randn(2, 1, *config.valid_input_shape((40,) * config.spatial_dims))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert torch.allclose(got, expected, atol=1e-4 * float(expected.abs().max()))
    # predict uses the folded copy and leaves the caller's model its batch norms.
    image = x[0].numpy()
    probs = predict(model, image)
    assert any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d) for m in model.modules())
    assert probs.shape == (2, *image.shape[1:])
    if config.padding == "valid":
        assert np.abs(probs - whole_image_probabilities(model, image)).max() <= 1e-4
