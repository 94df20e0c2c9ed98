"""Residual encoder (nnU-Net's ResEnc): blocks, exact shape arithmetic, tiling, init, and old checkpoints."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from biounet.errors import BiounetError
from biounet.infer import predict
from biounet.infer.tiling import plan_tiles
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.unet import ConvBlock, ResidualBlock
from biounet.pretrained import resolve_model
from test_predict import image_whose_padded_size_is_valid, whole_image_probabilities


def live_branches(model: UNet) -> UNet:
    """Gives every residual branch random weights: a fresh block is its skip path (zero_branch), which would
    hide a branch that is misaligned with its skip."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ResidualBlock):
                scale = getattr(module.norm2, "weight", None)
                if isinstance(scale, nn.Parameter):
                    scale.fill_(1.0)
                else:
                    fan_in = module.conv2.in_channels * math.prod(module.conv2.kernel_size)
                    nn.init.normal_(module.conv2.weight, std=math.sqrt(1.0 / fan_in))
    return model


def expected_halo(config: UNetConfig) -> tuple[int, ...]:
    """The halo of a valid model summed level by level, independently of UNetConfig's walk through the sizes:
    each level loses 2 (k - 1) per convolution (2 per block, `blocks` blocks going down, one block coming up),
    counted in input pixels (times the poolings above the level)."""
    halo = []
    for axis in range(config.spatial_dims):
        total, stride = 0, 1
        for level in range(config.depth + 1):
            per_block = 2 * (config.kernels[level][axis] - 1)
            up = per_block if level < config.depth else 0
            total += stride * (config.blocks[level] * per_block + up)
            if level < config.depth:
                stride *= config.pools[level][axis]
        halo.append(total)
    return tuple(halo)


CONFIGS = [
    UNetConfig(base_channels=4, depth=2, block="residual"),
    UNetConfig(base_channels=4, depth=2, block="residual", encoder_blocks=(2, 2, 2)),
    UNetConfig(base_channels=4, depth=2, block="residual", encoder_blocks=(1, 2, 3), norm="batch"),
    UNetConfig(base_channels=8, depth=2, block="residual", encoder_blocks=(3, 1, 2), padding="same", norm="group"),
    UNetConfig(base_channels=4, depth=3, block="residual", encoder_blocks=(1, 3, 2, 1), padding="same",
               upsample="interp", widen="before_pool"),
    UNetConfig(base_channels=4, depth=2, block="residual", encoder_blocks=(2, 1, 3), pool_sizes=((2, 3), (2, 2)),
               kernel_sizes=((3, 5), (3, 3), (1, 3))),
    UNetConfig(spatial_dims=3, base_channels=2, depth=1, block="residual", encoder_blocks=(2, 3)),
    UNetConfig(spatial_dims=3, base_channels=2, depth=2, block="residual", encoder_blocks=(1, 2, 3), norm="batch",
               padding="same"),
    UNetConfig(spatial_dims=3, base_channels=2, depth=2, block="residual", encoder_blocks=(3, 2, 1),
               pool_sizes=((1, 2, 2), (2, 2, 2)), kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3))),
]


def test_hand_computed_shapes() -> None:
    # 2D valid, depth 1, 3x3 kernels, (2, 3) blocks: n -> n - 8 -> /2 -> -12 -> *2 -> -4.
    config = UNetConfig(base_channels=2, depth=1, block="residual", encoder_blocks=(2, 3))
    assert config.output_shape((40, 42)) == (4, 6)  # 40 -> 32 -> 16 -> 4 -> 8 -> 4
    assert config.valid_input_shape((1, 1)) == (38, 38)  # 38 -> 30 -> 15 -> 3 -> 6 -> 2; 36 gives 0
    assert not config.is_valid_input((36, 38)) and not config.is_valid_input((39, 38))
    assert config.halo_size() == (36, 36)
    assert config.input_shape_for_output((4, 5)) == (40, 42)
    with torch.no_grad():
        assert UNet(config).eval()(torch.zeros(1, 1, 40, 42)).shape == (1, 2, 4, 6)


@pytest.mark.parametrize("config", CONFIGS)
def test_output_shape_is_the_forward_shape_for_a_range_of_inputs(config: UNetConfig) -> None:
    model = live_branches(UNet(config)).eval()
    dims = config.spatial_dims
    first = config.valid_input_shape((1,) * dims)
    halo = config.halo_size()
    if config.padding == "valid":
        assert halo == expected_halo(config)
    else:
        assert halo == (0,) * dims
    valid_sizes = []
    for axis in range(dims):
        sizes = [s for s in range(first[axis], first[axis] + 3 * config.alignment[axis] + 1)
                 if config.is_valid_input(first[:axis] + (s,) + first[axis + 1:])]
        # Valid sizes recur with the pooling stride, and the output is the input less the halo at each.
        assert np.diff(sizes).tolist() == [config.alignment[axis]] * 3
        valid_sizes.append(sizes)
    for step in range(4):
        shape = tuple(sizes[step] for sizes in valid_sizes)
        with torch.no_grad():
            out = model(torch.rand(1, config.in_channels, *shape))
        assert tuple(out.shape[2:]) == config.output_shape(shape)
        assert config.output_shape(shape) == tuple(s - h for s, h in zip(shape, halo, strict=True))
        assert config.input_shape_for_output(config.output_shape(shape)) == shape


def test_encoder_levels_hold_their_residual_blocks_and_the_decoder_stays_plain() -> None:
    config = UNetConfig(base_channels=4, depth=2, block="residual", encoder_blocks=(1, 3, 2), widen="before_pool")
    model = UNet(config)
    stages = [*model.down, model.bottom]
    assert [len(stage) for stage in stages] == [1, 3, 2]
    assert all(isinstance(block, ResidualBlock) for stage in stages for block in stage)
    assert all(isinstance(block, ConvBlock) for block in model.up_blocks)
    # widen before_pool: level l gives (4 << l, 8 << l); the first block changes channels through a 1x1
    # projection, the others keep them and add their input as it is.
    first = [stage[0] for stage in stages]
    assert [(b.conv1.in_channels, b.conv1.out_channels, b.conv2.out_channels) for b in first] == \
        [(1, 4, 8), (8, 8, 16), (16, 16, 32)]
    assert all(isinstance(b.skip, nn.Sequential) and b.skip[0].kernel_size == (1, 1) for b in first)
    assert all(isinstance(block.skip, nn.Identity) for stage in stages for block in list(stage)[1:])


def test_a_valid_block_adds_its_centre_cropped_input() -> None:
    config = UNetConfig(in_channels=3, base_channels=3, depth=0, block="residual")
    block = live_branches(UNet(config)).bottom[0].eval()
    assert isinstance(block.skip, nn.Identity)  # 3 channels in, 3 out
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        branch = block.conv2(torch.relu(block.conv1(x)))
        assert torch.allclose(block(x), torch.relu(branch + x[:, :, 2:-2, 2:-2]), atol=1e-6)


def test_tiled_equals_whole_for_a_residual_valid_model() -> None:
    config = UNetConfig(base_channels=4, depth=2, block="residual", encoder_blocks=(1, 2, 3), out_channels=3)
    model = live_branches(UNet(config))
    image = image_whose_padded_size_is_valid(config, (230, 260))
    plan = plan_tiles(config, image.shape[1:], (120, 120))
    assert all(len(starts) >= 3 for starts in plan.starts), "the test needs several tiles per axis"
    tiled = predict(model, image, tile=120, batch_size=3)
    whole = whole_image_probabilities(model, image)
    assert tiled.shape == whole.shape == (3, *image.shape[1:])
    assert np.abs(tiled - whole).max() <= 1e-5


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_fresh_residual_blocks_start_as_their_skip_path(norm: str) -> None:
    config = UNetConfig(base_channels=8, depth=0, block="residual", encoder_blocks=(1,), norm=norm)  # type: ignore[arg-type]
    block = UNet(config).bottom[0].eval()
    x = torch.randn(2, 1, 12, 12)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(block.skip(x[:, :, 2:-2, 2:-2])))


def test_a_deep_residual_encoder_without_norm_keeps_its_scale() -> None:
    """nnU-Net's (1, 3, 4, 6, 6) blocks without a norm: branches that each added their input's variance
    again would scale the bottom's activations by ~2^10; starting from the skip path keeps them near 1."""
    config = UNetConfig(base_channels=4, depth=4, padding="same", block="residual", encoder_blocks=(1, 3, 4, 6, 6))
    model = UNet(config).eval()
    seen: list[float] = []
    model.bottom.register_forward_hook(lambda _m, _a, out: seen.append(float(out.std())))
    with torch.no_grad():
        model(torch.randn(1, 1, 64, 64))
    assert 0.05 < seen[0] < 20


def test_plain_models_keep_their_state_dict_keys_and_old_checkpoints_load() -> None:
    # The keys of a plain model as every biounet before residual blocks wrote them.
    assert list(UNet(UNetConfig(base_channels=4, depth=1)).state_dict()) == [
        "down.0.0.weight", "down.0.0.bias", "down.0.3.weight", "down.0.3.bias", "bottom.0.weight", "bottom.0.bias",
        "bottom.3.weight", "bottom.3.bias", "ups.0.conv.weight", "ups.0.conv.bias", "up_blocks.0.0.weight",
        "up_blocks.0.0.bias", "up_blocks.0.3.weight", "up_blocks.0.3.bias", "head.weight", "head.bias"]
    # A shipped checkpoint (its config has none of the new keys) loads strictly, with the defaults.
    payload = torch.load(resolve_model("isbi2012-membranes"), map_location="cpu", weights_only=True)
    stored = yaml.safe_load(payload["config"])["model"]
    assert not {"block", "encoder_blocks", "deep_supervision"} & set(stored)
    checkpoint = load_checkpoint(resolve_model("isbi2012-membranes"))
    assert checkpoint.config.block == "plain" and checkpoint.config.encoder_blocks is None
    assert checkpoint.config.deep_supervision == 0 and len(checkpoint.model.aux_heads) == 0


def test_residual_deep_supervision_checkpoint_round_trip(tmp_path: Path) -> None:
    config = UNetConfig(base_channels=4, depth=3, block="residual", encoder_blocks=(1, 2, 2, 3), norm="batch",
                        deep_supervision=2)
    model = live_branches(UNet(config))
    save_checkpoint(tmp_path / "model.pt", model)
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.config == config
    assert loaded.model.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    x = torch.rand(2, 1, *config.valid_input_shape((70, 70)))
    with torch.no_grad():
        for mine, theirs in zip(model.eval().forward_deep(x), loaded.model.forward_deep(x), strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("bad", [
    dict(encoder_blocks=(1, 1, 1)),  # plain
    dict(block="residual", encoder_blocks=(1, 2)),  # depth 2 needs 3
    dict(block="residual", encoder_blocks=(1, 0, 1)),
    dict(block="resnet"),
    dict(deep_supervision=2),  # fewer than depth
    dict(deep_supervision=-1),
    dict(deep_supervision=True),
])
def test_bad_residual_and_deep_supervision_configs_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(BiounetError, match="invalid model config"):
        UNetConfig(depth=2, **bad)  # type: ignore[arg-type]


def test_new_fields_round_trip_through_yaml() -> None:
    config = UNetConfig(depth=3, block="residual", encoder_blocks=(1, 3, 4, 6), deep_supervision=2)
    plain = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    assert plain["encoder_blocks"] == [1, 3, 4, 6]
    assert UNetConfig.from_dict(plain) == config
    assert UNetConfig.from_dict({k: v for k, v in plain.items()
                                 if k not in ("block", "encoder_blocks", "deep_supervision")}) == \
        dataclasses.replace(config, block="plain", encoder_blocks=None, deep_supervision=0)
