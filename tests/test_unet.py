"""The U-Net's architecture and shape arithmetic, against the papers."""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest
import torch
import yaml
from torch import nn

from biounet.errors import BiounetError
from biounet.models import UNet, UNetConfig


def conv_layers(model: nn.Module) -> list[nn.Module]:
    kinds = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    return [m for m in model.modules() if isinstance(m, kinds)]


def test_paper_configuration_matches_ronneberger_2015() -> None:
    config = UNetConfig.paper()
    model = UNet(config)
    assert len(conv_layers(model)) == 23
    assert sum(p.numel() for p in model.parameters()) == 31_030_658
    assert config.output_shape((572, 572)) == (388, 388)
    assert config.halo_size() == (184, 184)
    with torch.no_grad():
        logits = model.eval()(torch.zeros(1, 1, 572, 572))
    assert logits.shape == (1, 2, 388, 388)


def test_paper_channel_progression() -> None:
    model = UNet(UNetConfig.paper())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    widths = [m.out_channels for m in convs[:10]]
    assert widths == [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(u.in_channels, u.out_channels, u.kernel_size) for u in ups] == [
        (1024, 512, (2, 2)), (512, 256, (2, 2)), (256, 128, (2, 2)), (128, 64, (2, 2))]


def test_3d_paper_configuration_matches_cicek_2016() -> None:
    config = UNetConfig.paper_3d()
    assert config.output_shape((132, 132, 116)) == (44, 44, 28)
    model = UNet(config)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    # Channels double already before each pooling: 32 -> 64, 64 -> 128, 128 -> 256, 256 -> 512.
    assert [m.out_channels for m in convs[:8]] == [32, 64, 64, 128, 128, 256, 256, 512]
    assert all(m.kernel_size == (3, 3, 3) and m.padding == (0, 0, 0) for m in convs[:-1])
    ups = [m for m in model.modules() if isinstance(m, nn.ConvTranspose3d)]
    # The up-convolutions keep the channels; each expanding level then has 768 -> 256, 384 -> 128, 192 -> 64.
    assert [(u.in_channels, u.out_channels, u.stride) for u in ups] == [
        (512, 512, (2, 2, 2)), (256, 256, (2, 2, 2)), (128, 128, (2, 2, 2))]
    assert [(m.in_channels, m.out_channels) for m in convs[8:]] == [
        (768, 256), (256, 256), (384, 128), (128, 128), (192, 64), (64, 64), (64, 3)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(norms) == len(convs) - 1
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool3d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [((2, 2, 2), (2, 2, 2))] * 3
    # The same structure at 1/16 of the width runs the real 132x132x116 input through quickly.
    small = UNet(dataclasses.replace(config, base_channels=2)).eval()
    with torch.no_grad():
        assert small(torch.zeros(1, 1, 132, 132, 116)).shape == (1, 3, 44, 44, 28)


ANISOTROPIC = UNetConfig(spatial_dims=3, base_channels=2, depth=3, pool_sizes=((1, 2, 2), (1, 2, 2), (2, 2, 2)),
                         kernel_sizes=((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3)))


def test_anisotropic_levels_have_exact_shape_arithmetic() -> None:
    config = ANISOTROPIC
    # z: level kernels 1, 1, 3 and bottom 3; pools 1, 1, 2. Hand-computed for z = 16:
    # 16 -> 16 -> 16 -> (16 - 4) / 2 = 6 -> 6 - 4 = 2 -> 2 * 2 - 4 = 0: too small; z = 18 gives 2.
    assert config.output_shape((18, 92, 92)) == (2, 4, 4)
    assert config.alignment == (2, 8, 8)
    assert config.halo_size() == (16, 88, 88)
    assert not config.is_valid_input((16, 92, 92))
    for wanted in [(5, 89, 97), (20, 100, 120), (31, 95, 140)]:
        shape = config.valid_input_shape(wanted)
        assert all(s >= w for s, w in zip(shape, wanted, strict=True))
        with torch.no_grad():
            out = UNet(config).eval()(torch.zeros(1, 1, *shape))
        assert tuple(out.shape[2:]) == config.output_shape(shape)
    pools = [m for m in UNet(config).modules() if isinstance(m, nn.MaxPool3d)]
    assert [p.kernel_size for p in pools] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]


def test_anisotropic_same_model_keeps_the_size() -> None:
    config = dataclasses.replace(ANISOTROPIC, padding="same", upsample="interp")
    assert config.valid_input_shape((5, 30, 30)) == (6, 32, 32)
    with torch.no_grad():
        assert UNet(config).eval()(torch.zeros(1, 1, 6, 32, 32)).shape == (1, 2, 6, 32, 32)


@pytest.mark.parametrize("config", [
    UNetConfig(base_channels=4, depth=2),
    UNetConfig(base_channels=4, depth=3, norm="batch"),
    UNetConfig(base_channels=8, depth=2, norm="group", upsample="interp"),
    UNetConfig(base_channels=4, depth=1, in_channels=3, out_channels=5, norm="instance"),
    UNetConfig(base_channels=4, depth=2, padding="same"),
    UNetConfig(spatial_dims=3, base_channels=2, depth=2, norm="batch"),
    UNetConfig(spatial_dims=3, base_channels=2, depth=1, padding="same"),
    UNetConfig(spatial_dims=3, base_channels=2, depth=2, widen="before_pool", upsample="interp"),
    ANISOTROPIC,
])
def test_forward_shape_equals_output_shape(config: UNetConfig) -> None:
    model = UNet(config).eval()
    wanted = (37, 45) if config.spatial_dims == 2 else (23, 19, 30)
    shape = config.valid_input_shape(wanted)
    with torch.no_grad():
        logits = model(torch.zeros(2, config.in_channels, *shape))
    assert logits.shape == (2, config.out_channels, *config.output_shape(shape))


@pytest.mark.parametrize("config", [UNetConfig(depth=4), UNetConfig(depth=2), UNetConfig(depth=3, padding="same")])
def test_valid_input_shape_is_the_smallest_valid_size_at_or_above(config: UNetConfig) -> None:
    for wanted in range(1, 400, 7):
        (size,) = config.valid_input_shape((wanted, 1))[:1]
        assert size >= wanted and config.is_valid_input((size, size))
        assert not any(config.is_valid_input((s, s)) for s in range(wanted, size))


def test_valid_inputs_recur_with_the_pooling_stride() -> None:
    config = UNetConfig()
    valid = [s for s in range(1, 700) if config.is_valid_input((s, s))]
    assert valid[0] == 188 and all(b - a == 16 for a, b in itertools.pairwise(valid))
    assert all(s - config.output_shape((s, s))[0] == 184 for s in valid)


def test_invalid_input_is_rejected_with_the_nearest_valid_size() -> None:
    config = UNetConfig()
    with pytest.raises(BiounetError, match="nearest valid size above is 572"):
        config.output_shape((570, 572))
    with pytest.raises(BiounetError, match="2D spatial shape"):
        config.output_shape((572,))


def test_input_shape_for_output_covers_the_output() -> None:
    config = UNetConfig()
    assert config.input_shape_for_output((388, 388)) == (572, 572)
    assert config.input_shape_for_output((389, 1)) == (588, 188)


def test_same_padding_keeps_the_size_and_needs_multiples_of_the_stride() -> None:
    config = UNetConfig(padding="same", depth=4)
    assert config.output_shape((512, 96)) == (512, 96)
    assert config.valid_input_shape((500, 1)) == (512, 16)
    assert config.halo_size() == (0, 0)


def test_he_initialisation() -> None:
    model = UNet(UNetConfig(base_channels=64, depth=1))
    for layer in conv_layers(model):
        weight = layer.weight
        if isinstance(layer, nn.ConvTranspose2d):
            fan_in = layer.in_channels  # stride == kernel: one input position per channel
        else:
            fan_in = layer.in_channels * math.prod(layer.kernel_size)
        if weight.numel() > 4000:
            assert weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
        assert layer.bias is None or torch.all(layer.bias == 0)


def test_dropout_sits_at_the_end_of_the_contracting_path() -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2, dropout=0.5))
    x = torch.rand(1, 1, 60, 60)
    channels: list[int] = []
    model.dropout.register_forward_pre_hook(lambda _m, args: channels.append(args[0].shape[1]))
    model.train()
    assert not torch.equal(model(x), model(x))
    # Applied to the deepest contracting level (8 channels) and the bottom (16), nowhere else.
    assert channels == [8, 16, 8, 16]
    model.eval()
    assert torch.equal(model(x), model(x))


def test_skips_are_cropped_not_padded() -> None:
    model = UNet(UNetConfig(base_channels=2, depth=1)).eval()
    seen: list[tuple[int, ...]] = []
    model.up_blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.zeros(1, 1, 20, 20))
    # 20 -> 16 (skip) -> pool 8 -> 4 -> up 8: the skip is cropped 16 -> 8.
    assert seen == [(1, 4, 8, 8)]


@pytest.mark.parametrize("bad", [dict(spatial_dims=4), dict(depth=-1), dict(padding="full"), dict(dropout=1.0),
                                 dict(norm="layer"), dict(base_channels=4, norm="group"), dict(widen="never"),
                                 dict(depth=2, pool_sizes=((2, 2),)), dict(depth=1, pool_sizes=((0, 2),)),
                                 dict(depth=1, kernel_sizes=((3, 3), (2, 3)))])
def test_bad_configs_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(BiounetError):
        UNetConfig(**bad)  # type: ignore[arg-type]


def test_config_round_trips_through_a_dict() -> None:
    config = UNetConfig(base_channels=8, padding="same", norm="batch")
    assert UNetConfig.from_dict(config.to_dict()) == config
    # Nested lists, as YAML gives them, become the tuples the config holds.
    plain = yaml.safe_load(yaml.safe_dump(ANISOTROPIC.to_dict()))
    assert plain["pool_sizes"] == [[1, 2, 2], [1, 2, 2], [2, 2, 2]]
    assert UNetConfig.from_dict(plain) == ANISOTROPIC
    with pytest.raises(BiounetError, match="unknown model config keys: widht"):
        UNetConfig.from_dict({"widht": 3})
