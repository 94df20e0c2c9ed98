"""Deep supervision: the auxiliary heads, their targets (aligned with what the network sees), the loss, training."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from biounet.data.labels import IGNORE_INDEX
from biounet.errors import BiounetError
from biounet.losses import DeepSupervisionLoss, WeightedCrossEntropy, build_loss
from biounet.losses.deep_supervision import deep_supervision_weights, downsample_target
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import load_checkpoint
from biounet.training.config import apply_overrides
from biounet.training.run import train
from biounet.training.trainer import Trainer
from conftest import write_disc_dataset

CONFIGS = [
    UNetConfig(base_channels=4, depth=2, deep_supervision=1),
    UNetConfig(base_channels=4, depth=3, deep_supervision=2, padding="same"),
    UNetConfig(base_channels=4, depth=3, deep_supervision=2, block="residual", encoder_blocks=(1, 2, 3, 2)),
    UNetConfig(base_channels=4, depth=2, deep_supervision=1, pool_sizes=((2, 3), (2, 2)), upsample="interp"),
    UNetConfig(spatial_dims=3, base_channels=2, depth=2, deep_supervision=1, norm="batch"),
    UNetConfig(spatial_dims=3, base_channels=2, depth=2, deep_supervision=1, padding="same", block="residual",
               encoder_blocks=(2, 1, 2)),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_deep_gives_the_logits_then_each_head_at_its_shape(config: UNetConfig) -> None:
    model = UNet(config).eval()
    assert len(model.aux_heads) == config.deep_supervision
    wanted = (50, 61) if config.spatial_dims == 2 else (20, 27, 23)
    for extra in (0, 1):
        shape = tuple(s + extra * a for s, a in zip(config.valid_input_shape(wanted), config.alignment, strict=True))
        x = torch.rand(2, config.in_channels, *shape)
        with torch.no_grad():
            outputs = model.forward_deep(x)
            logits = model(x)
        assert [tuple(o.shape) for o in outputs] == [(2, config.out_channels, *s)
                                                     for s in config.deep_output_shapes(shape)]
        assert config.deep_output_shapes(shape)[0] == config.output_shape(shape)
        assert torch.equal(outputs[0], logits)


def test_deep_output_shapes_and_strides_by_hand() -> None:
    # Valid, depth 2, 3x3: 44 -> 40 -> 20 -> 16 -> 8 -> 4 -> (up) 8 -> 4 (level 1) -> (up) 8 -> 4 (level 0).
    config = UNetConfig(base_channels=2, depth=2, deep_supervision=1)
    assert config.deep_output_shapes((44, 52)) == ((4, 12), (4, 8))  # 52 -> 48, 24, 20, 10, 6, 12, 8, 16, 12
    assert config.deep_output_strides == ((1, 1), (2, 2))
    anisotropic = UNetConfig(spatial_dims=3, depth=3, deep_supervision=2, pool_sizes=((1, 2, 2), (2, 2, 2), (2, 2, 2)))
    assert anisotropic.deep_output_strides == ((1, 1, 1), (1, 2, 2), (2, 4, 4))
    with pytest.raises(BiounetError, match="nearest valid size"):
        config.deep_output_shapes((45, 44))


def test_a_model_without_heads_has_one_output() -> None:
    model = UNet(UNetConfig(base_channels=2, depth=2)).eval()
    x = torch.rand(1, 1, 44, 44)
    with torch.no_grad():
        (only,) = model.forward_deep(x)
        assert torch.equal(only, model(x))


def test_targets_are_sampled_at_the_centre_of_each_cell_by_hand() -> None:
    # The valid model above on a 44 x 44 patch: level 1 (stride 2, 4 x 4) covers rows/columns 18..25, one
    # pixel per 2 x 2 cell, the second of each pair: 19, 21, 23, 25. Level 0 is rows/columns 20..23.
    config = UNetConfig(base_channels=2, depth=2, deep_supervision=1)
    full, level1 = config.deep_output_shapes((44, 44))
    coordinates = 100 * torch.arange(44)[:, None] + torch.arange(44)[None, :]
    assert downsample_target(coordinates[None], level1, (2, 2))[0].tolist() == [
        [1919, 1921, 1923, 1925], [2119, 2121, 2123, 2125], [2319, 2321, 2323, 2325], [2519, 2521, 2523, 2525]]
    assert downsample_target(coordinates[None], full, (1, 1))[0].tolist() == [
        [2020, 2021, 2022, 2023], [2120, 2121, 2122, 2123], [2220, 2221, 2222, 2223], [2320, 2321, 2322, 2323]]
    # A label: class 1 on rows 20..23 and columns 18..21, one ignored pixel at (21, 23), the rest 0.
    label = torch.zeros(1, 44, 44, dtype=torch.long)
    label[0, 20:24, 18:22] = 1
    label[0, 21, 23] = IGNORE_INDEX
    assert downsample_target(label, level1, (2, 2))[0].tolist() == [
        [0, 0, 0, 0], [1, 1, -1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    # Same padding covers the whole patch: an 8 x 8 patch's level 1 is rows/columns 1, 3, 5, 7.
    same = UNetConfig(base_channels=2, depth=2, padding="same", deep_supervision=1)
    assert same.deep_output_shapes((8, 8)) == ((8, 8), (4, 4))
    small = 10 * torch.arange(8)[:, None] + torch.arange(8)[None, :]
    assert downsample_target(small[None], (4, 4), (2, 2))[0].tolist() == [
        [11, 13, 15, 17], [31, 33, 35, 37], [51, 53, 55, 57], [71, 73, 75, 77]]
    # An odd stride takes the middle pixel of each cell: 9 pixels, 3 cells of 3 -> 1, 4, 7.
    assert downsample_target(torch.arange(9)[None, None].expand(1, 3, 9), (3, 3), (1, 3))[0, 0].tolist() == [1, 4, 7]


def test_targets_that_do_not_centre_the_footprint_are_refused() -> None:
    with pytest.raises(BiounetError, match="does not centre"):
        downsample_target(torch.zeros(1, 9, 10), (4, 4), (2, 2))  # a margin of 1 on the first axis
    with pytest.raises(BiounetError, match="does not centre"):
        downsample_target(torch.zeros(1, 6, 8), (4, 4), (2, 2))  # smaller than the footprint


def linear_probe(config: UNetConfig) -> UNet:
    """The network as a linear map whose output pixels each see a footprint symmetric about their cell:
    positive equal weights (so every ReLU passes its input on), no biases, average instead of max pooling (so
    a pooled cell's footprint is the whole cell), in float64, and the up-sampling steps silenced. Those
    bring in a coarser level's cell, which holds the pixel off its centre (the two pixels an up-convolution
    makes of one see the same cell): a pixel's own-resolution path, through the skip, is what is aligned."""
    model = UNet(config).double()
    pool_cls = nn.AvgPool2d if config.spatial_dims == 2 else nn.AvgPool3d
    model.pools = nn.ModuleList(pool_cls(p) for p in config.pools)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
        for up in model.ups:
            up.conv.weight.zero_()
    return model


@pytest.mark.parametrize(("config", "size"), [
    (UNetConfig(base_channels=2, depth=2, deep_supervision=1), (52, 60)),
    (UNetConfig(base_channels=2, depth=3, deep_supervision=2, pool_sizes=((2, 3), (2, 2), (3, 2))), (100, 110)),
    (UNetConfig(base_channels=2, depth=3, deep_supervision=2, block="residual", encoder_blocks=(2, 1, 3, 1),
                upsample="interp"), (124, 140)),
    (UNetConfig(base_channels=2, depth=2, deep_supervision=1, padding="same"), (96, 104)),
    (UNetConfig(base_channels=2, depth=2, deep_supervision=1, padding="same", block="residual",
                encoder_blocks=(1, 2, 1), pool_sizes=((3, 2), (2, 2))), (108, 96)),
])
def test_each_heads_target_pixel_lies_where_its_output_looks(config: UNetConfig, size: tuple[int, int]) -> None:
    """The input pixels an output pixel depends on (its gradient) are centred on a point; the target pixel
    downsample_target picks for it is that point (odd stride) or half a pixel past it (even stride)."""
    model = linear_probe(config)
    shape = config.valid_input_shape(size)
    x = torch.ones(1, 1, *shape, dtype=torch.float64, requires_grad=True)
    outputs = model.forward_deep(x)
    coordinates = [torch.arange(s).view(-1, *([1] * (len(shape) - 1 - axis))).expand(shape)[None]
                   for axis, s in enumerate(shape)]
    for out, stride in zip(outputs, config.deep_output_strides, strict=True):
        out_shape = tuple(out.shape[2:])
        picked = [downsample_target(c, out_shape, stride)[0] for c in coordinates]
        # A pixel away from the borders (a same model's zero padding would cut its footprint), and one at a corner.
        for index in ((*[s // 2 for s in out_shape],), (0,) * len(out_shape)):
            (grad,) = torch.autograd.grad(out[(0, 0, *index)], x, retain_graph=True)
            grad = grad[0, 0]
            if config.padding == "same" and index != (0, 0):
                assert grad[0].abs().sum() == 0 and grad[:, 0].abs().sum() == 0, "the footprint reaches a border"
            elif config.padding == "same":
                continue
            for axis in range(len(shape)):
                profile = grad.sum(dim=tuple(a for a in range(len(shape)) if a != axis))
                centre = float((profile * torch.arange(shape[axis])).sum() / profile.sum())
                want = 0.5 if stride[axis] % 2 == 0 else 0.0
                assert float(picked[axis][index]) - centre == pytest.approx(want, abs=1e-9), (stride, index, axis)


def test_weights_halve_per_level_and_sum_to_one() -> None:
    assert deep_supervision_weights(1) == (1.0,)
    assert deep_supervision_weights(3) == pytest.approx((4 / 7, 2 / 7, 1 / 7))
    with pytest.raises(BiounetError):
        DeepSupervisionLoss(WeightedCrossEntropy(), ((1, 1), (2, 2)), weights=(1.0,))


def test_the_loss_is_the_weighted_sum_of_each_level_on_its_own_target() -> None:
    config = UNetConfig(base_channels=2, depth=2, deep_supervision=1)
    full_shape, low_shape = config.deep_output_shapes((44, 44))
    label = torch.zeros(2, 44, 44, dtype=torch.long)
    label[:, 20:24, 18:22] = 1
    label[:, 21, 23] = IGNORE_INDEX
    weight = torch.rand(2, 44, 44) + 0.5
    full = torch.randn(2, 2, *full_shape, requires_grad=True)
    low = torch.randn(2, 2, *low_shape, requires_grad=True)
    inner = build_loss("ce_dice", ignore_index=IGNORE_INDEX)
    loss = DeepSupervisionLoss(inner, config.deep_output_strides)([full, low], label, weight)
    # By hand: level 0 is the centre 4 x 4 (rows/columns 20..23), level 1 rows/columns 19, 21, 23, 25.
    centre, cells = slice(20, 24), slice(19, 26, 2)
    expected = (2 / 3) * inner(full, label[:, centre, centre], weight[:, centre, centre]) + \
        (1 / 3) * inner(low, label[:, cells, cells], weight[:, cells, cells])
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # The ignored pixel (21, 23) is level 1's (1, 2) and level 0's (1, 3): neither gets a gradient.
    loss.backward()
    assert full.grad is not None and low.grad is not None
    assert torch.all(full.grad[:, :, 1, 3] == 0) and torch.all(low.grad[:, :, 1, 2] == 0)
    assert torch.all(full.grad[:, :, 1, 2] != 0) and torch.all(low.grad[:, :, 1, 1] != 0)
    with pytest.raises(BiounetError, match="2 outputs"):
        DeepSupervisionLoss(inner, ((1, 1),))([full, low], label, weight)


TINY = ["model.base_channels=4", "model.depth=2", "tile=60", "samples_per_epoch=4", "batch_size=2", "epochs=1",
        "optim.lr=0.01", "optim.scheduler=none", "checkpoint_seconds=0", "model.deep_supervision=1"]


def test_a_training_step_trains_the_auxiliary_heads(tmp_path: Path) -> None:
    images, labels = write_disc_dataset(tmp_path / "data", 4)
    config = apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", "model.block=residual",
                                  "model.encoder_blocks=[1,2,2]"])
    assert config.model == UNetConfig(base_channels=4, depth=2, deep_supervision=1, block="residual",
                                      encoder_blocks=(1, 2, 2))
    grads: list[float] = []

    def aux_gradient(trainer: Trainer) -> None:
        grad = trainer.model.aux_heads[0].weight.grad
        grads.append(float(grad.abs().sum()) if grad is not None else 0.0)

    trainer = train(config, tmp_path / "run", progress=False, callbacks={"on_step_end": [aux_gradient]})
    assert isinstance(trainer.loss_fn, DeepSupervisionLoss)
    assert trainer.state.step == 2 and np.isfinite(trainer.state.history[-1]["train_loss"])
    # Each step's loss reached the auxiliary head.
    assert len(grads) == 2 and all(g > 0 for g in grads)
    trained = load_checkpoint(tmp_path / "run" / "last.pt").model
    assert trained.config == config.model and len(trained.aux_heads) == 1


def test_two_ranks_train_with_deep_supervision_as_one_process(tmp_path: Path) -> None:
    """DDP averages only the gradients of what its forward ran: the heads' outputs must come through it."""
    images, labels = write_disc_dataset(tmp_path / "data", 4)
    config = tmp_path / "config.yaml"
    overrides = [*TINY, "optim.lr=0.001", "samples_per_epoch=8", "deterministic=true", "checkpoint_seconds=1000"]
    config.write_text(apply_overrides({}, [*overrides, f"data.images={images}", f"data.labels={labels}"]).to_yaml())
    from biounet.cli.main import main

    assert main(["train", "--config", str(config), "--set", "batch_size=2", "--out", str(tmp_path / "one"),
                 "--quiet"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "biounet",
               "train", "--config", str(config), "--set", "batch_size=1", "--out", str(tmp_path / "ddp"), "--quiet"]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, ddp = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert one.extra["train_state"]["counters"]["step"] == ddp.extra["train_state"]["counters"]["step"] == 4
    for key, value in one.model.state_dict().items():
        torch.testing.assert_close(ddp.model.state_dict()[key], value, atol=1e-5, rtol=0, msg=key)

