"""Training augmentation: identity, geometry against hand-computed maps, image/label/weight in step."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from biounet.augment import AugmentConfig, Augmenter, AugmentParams
from biounet.augment.elastic import bspline_basis, control_displacements, control_grid_shape, dense_displacements
from biounet.augment.spatial import rotation_matrix, rotation_planes
from biounet.errors import BiounetError

STRONG = AugmentConfig(elastic_sigma=10.0, rotate=180.0, flip=True, scale=(0.7, 1.4), shift=5.0, brightness=0.0,
                       contrast=(1.0, 1.0), gamma=(1.0, 1.0), noise=0.0)
SHAPES = {2: (40, 52), 3: (14, 18, 22)}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(dims: int, n: int = 2, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = SHAPES[dims]
    label = torch.randint(0, 3, (n, *shape))
    label[:, :3] = -1  # an ignore value
    return torch.rand(n, channels, *shape), label, torch.rand(n, *shape) * 10


def coordinate_image(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """(n, dims, *shape): channel k holds each pixel's coordinate along axis k."""
    axes = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij")
    return torch.stack(axes)[None].repeat(n, *([1] * (len(shape) + 1)))


# -- identity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dims", [2, 3])
def test_no_augmentation_changes_nothing(dims: int) -> None:
    image, label, weight = batch(dims)
    out = Augmenter(AugmentConfig.none(), dims)(image, label, weight, generator=gen())
    assert (out[0] - image).abs().max() <= 1e-5
    assert out[1] is not None and torch.equal(out[1], label)
    assert out[2] is not None and (out[2] - weight).abs().max() <= 1e-5


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_through_the_sampling_grid_changes_nothing(dims: int) -> None:
    image, label, weight = batch(dims)
    params = AugmentParams(SHAPES[dims], matrix=torch.eye(dims).repeat(2, 1, 1),
                           control=torch.zeros(2, dims, *([3] * dims)))
    out_image, out_label, out_weight = params.apply(image, label, weight)
    assert (out_image - image).abs().max() <= 1e-5
    assert out_label is not None and torch.equal(out_label, label)
    assert out_weight is not None and (out_weight - weight).abs().max() <= 1e-4  # weights up to 10


def test_zero_probabilities_change_nothing() -> None:
    config = AugmentConfig(elastic_p=0.0, rotate=0.0, flip=False, scale=(1.0, 1.0), intensity_p=0.0)
    image, label, weight = batch(2)
    out = Augmenter(config)(image, label, weight, generator=gen())
    assert (out[0] - image).abs().max() <= 1e-5
    assert out[1] is not None and torch.equal(out[1], label)


# -- geometry -----------------------------------------------------------------------------------------------


def test_affine_map_matches_the_hand_computed_source_coordinates() -> None:
    shape = (41, 41)
    angle, zoom, shift = 30.0, 2.0, torch.tensor([1.5, -2.0])
    matrix = rotation_matrix(torch.tensor([[angle]]), 2) / zoom
    params = AugmentParams(shape, matrix=matrix, offset=shift[None])
    out, _, _ = params.apply(coordinate_image(1, shape))
    c, a = 20.0, math.radians(angle)
    y, x = 25, 14  # any pixel whose source lies inside the patch
    expected_y = c + (math.cos(a) * (y - c) + math.sin(a) * (x - c)) / zoom + 1.5
    expected_x = c + (-math.sin(a) * (y - c) + math.cos(a) * (x - c)) / zoom - 2.0
    assert out[0, :, y, x].tolist() == pytest.approx([expected_y, expected_x], abs=1e-4)
    # Zooming in by 2 halves distances from the centre in the source.
    assert float((out[0, :, 30, 20] - out[0, :, 10, 20]).norm()) == pytest.approx(10.0, abs=1e-4)


def test_zoom_range_enlarges_the_content() -> None:
    config = dataclasses.replace(AugmentConfig.none(), scale=(2.0, 2.0))
    out, _, _ = Augmenter(config)(coordinate_image(1, (41, 41)), generator=gen())
    # Zooming in by 2: pixels 20 apart read source pixels 10 apart around the centre.
    assert out[0, :, 30, 20].tolist() == pytest.approx([25.0, 20.0], abs=1e-4)
    assert out[0, :, 10, 20].tolist() == pytest.approx([15.0, 20.0], abs=1e-4)


def test_shifts_beyond_the_border_read_the_mirrored_patch() -> None:
    image, label, weight = batch(2)
    params = AugmentParams(SHAPES[2], offset=torch.tensor([[-2.0, 3.0]]).repeat(2, 1))
    out_image, out_label, _ = params.apply(image, label, weight)
    # Output (y, x) reads input (y - 2, x + 3), mirrored about the border pixels (NumPy's "reflect").
    padded = np.pad(label.numpy(), ((0, 0), (2, 0), (0, 3)), mode="reflect")
    assert out_label is not None and np.array_equal(out_label.numpy(), padded[:, :-2, 3:])
    padded_image = np.pad(image.numpy(), ((0, 0), (0, 0), (2, 0), (0, 3)), mode="reflect")
    assert np.abs(out_image.numpy() - padded_image[:, :, :-2, 3:]).max() <= 1e-5


def test_elastic_displacement_components_follow_the_tensor_axes() -> None:
    shape = (20, 24)
    control = torch.zeros(1, 2, 3, 3)
    control[:, 0], control[:, 1] = 2.0, -1.0  # every pixel moves by (dy, dx) = (2, -1)
    out, _, _ = AugmentParams(shape, control=control).apply(coordinate_image(1, shape))
    assert torch.allclose(out[0, :, 5, 7], torch.tensor([7.0, 6.0]), atol=1e-4)


@pytest.mark.parametrize("changes", [{"elastic_sigma": 5.0, "elastic_p": 0.5}, {"brightness": 0.5, "intensity_p": 0.5}])
def test_probabilities_pick_about_that_share_of_samples(changes: dict[str, float]) -> None:
    config = dataclasses.replace(AugmentConfig.none(), **changes)
    image = torch.rand(1, 1, 16, 16).repeat(64, 1, 1, 1)
    out, _, _ = Augmenter(config)(image, generator=gen())
    changed = (out - image).flatten(1).abs().amax(dim=1) > 1e-4
    assert 0.25 < changed.float().mean() < 0.75


@pytest.mark.parametrize("dims", [2, 3])
def test_quarter_turns_equal_torch_rot90(dims: int) -> None:
    side = 11
    shape = (side,) * dims
    image, label, weight = torch.rand(2, 2, *shape), torch.randint(-1, 5, (2, *shape)), torch.rand(2, *shape)
    for k, (i, j) in enumerate(rotation_planes(dims)):
        for turn in (1, -1):
            degrees = torch.zeros(2, len(rotation_planes(dims)))
            degrees[:, k] = 90.0 * turn
            params = AugmentParams(shape, matrix=rotation_matrix(degrees, dims))
            out_image, out_label, out_weight = params.apply(image, label, weight)
            assert torch.allclose(out_image, torch.rot90(image, turn, dims=(i + 2, j + 2)), atol=1e-5)
            assert out_label is not None and torch.equal(out_label, torch.rot90(label, turn, dims=(i + 1, j + 1)))
            assert out_weight is not None
            assert torch.allclose(out_weight, torch.rot90(weight, turn, dims=(i + 1, j + 1)), atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_flips_equal_torch_flip(dims: int) -> None:
    image, label, weight = batch(dims)
    for axis in range(dims):
        signs = torch.ones(dims)
        signs[axis] = -1
        params = AugmentParams(SHAPES[dims], matrix=torch.diag(signs).repeat(2, 1, 1))
        out_image, out_label, out_weight = params.apply(image, label, weight)
        assert torch.allclose(out_image, torch.flip(image, [axis + 2]), atol=1e-5)
        assert out_label is not None and torch.equal(out_label, torch.flip(label, [axis + 1]))
        assert out_weight is not None and torch.allclose(out_weight, torch.flip(weight, [axis + 1]), atol=1e-4)


def test_random_flips_are_exact_and_cover_all_combinations() -> None:
    config = dataclasses.replace(AugmentConfig.none(), flip=True)
    label = torch.randint(0, 100, (1, 9, 12)).repeat(32, 1, 1)
    _, out, _ = Augmenter(config)(label[:, None].float(), label, generator=gen())
    assert out is not None
    flips = [(), (1,), (2,), (1, 2)]
    seen = set()
    for n in range(32):
        matches = [f for f in flips if torch.equal(out[n], torch.flip(label[n : n + 1], f)[0] if f else label[n])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 4


BSPLINE_3D = dataclasses.replace(STRONG, elastic_spacing=6.0, elastic_sigma=3.0)


@pytest.mark.parametrize(("dims", "config"), [(2, STRONG), (3, STRONG), (3, BSPLINE_3D)])
def test_strong_deformation_moves_image_label_and_weight_together(dims: int, config: AugmentConfig) -> None:
    shape = SHAPES[dims]
    n = 3
    coords = coordinate_image(n, shape)
    label = torch.randint(0, 50, (n, *shape))
    weight = torch.rand(n, *shape)
    out_coords, out_label, out_weight = Augmenter(config, dims)(coords, label, weight, generator=gen(1))
    assert out_label is not None and out_weight is not None
    # The ramps are reproduced exactly by linear interpolation (mirroring included), so each output
    # pixel's channels are the source coordinates it was read from.
    moved = (out_coords - coords).norm(dim=1)
    assert moved.mean() > 3.0
    src = out_coords.numpy().astype(np.float64)
    assert src.min() >= -1e-4 and all(src[:, k].max() <= s - 1 + 1e-4 for k, s in enumerate(shape))
    nearest = np.rint(src).astype(np.int64)
    # Skip pixels whose source lies within rounding error of a tie between two label pixels.
    clear = (np.abs(src - np.floor(src) - 0.5) > 1e-3).all(axis=1)
    for i in range(n):
        expected_label = label[i].numpy()[tuple(nearest[i])]
        assert np.array_equal(out_label[i].numpy()[clear[i]], expected_label[clear[i]])
        expected_weight = ndimage.map_coordinates(weight[i].numpy().astype(np.float64), src[i], order=1, mode="mirror")
        assert np.abs(out_weight[i].numpy() - expected_weight).max() < 1e-4
    assert clear.mean() > 0.99


@pytest.mark.parametrize("dims", [2, 3])
def test_labels_only_take_input_values_and_keep_the_ignore_value(dims: int) -> None:
    values = torch.tensor([255, 0, 3, 7])
    label = values[torch.randint(0, 4, (4, *SHAPES[dims]))]
    image = torch.rand(4, 1, *SHAPES[dims])
    _, out, _ = Augmenter(AugmentConfig(), dims)(image, label, generator=gen())
    assert out is not None and out.dtype == torch.int64
    assert set(out.unique().tolist()) == {0, 3, 7, 255}


def test_elastic_field_passes_through_control_vectors_with_the_given_spread() -> None:
    control = control_displacements(400, (3, 3), 10.0, gen())
    assert control.shape == (400, 2, 3, 3)
    assert float(control.std()) == pytest.approx(10.0, abs=0.3)
    field = dense_displacements(control, (33, 33))
    assert torch.allclose(field[:, :, ::16, ::16], control, atol=1e-4)
    # Smooth: neighbouring pixels move almost alike, unlike the 10 px spread of the field itself.
    assert field.diff(dim=-1).abs().max() < 5.0 and field.diff(dim=-1).abs().mean() < 1.0


def test_bspline_grid_covers_the_patch_with_one_point_beyond_each_end() -> None:
    # The 3D U-Net's grid: spacing 32 over 132 voxels puts points at -32, 0, 32, ..., 192: the
    # support of every voxel's four B-splines.
    assert control_grid_shape((132, 132, 116), 3, 32.0) == (8, 8, 7)
    assert control_grid_shape((40, 52), 3, 0.0) == (3, 3)
    basis = bspline_basis(9, 5, 4.0, dtype=torch.float64)
    assert torch.allclose(basis.sum(dim=1), torch.ones(9, dtype=torch.float64))
    # Voxel 4 sits on control point 2 (at (2 - 1) * 4): it weighs 2/3 and its neighbours 1/6 each.
    assert torch.allclose(basis[4], torch.tensor([0.0, 1 / 6, 2 / 3, 1 / 6, 0.0], dtype=torch.float64))


def test_bspline_field_reproduces_affine_control_vectors_exactly() -> None:
    # Cubic B-splines reproduce polynomials up to degree 1: control vectors that are an affine function
    # of the control points' positions give exactly that function at every voxel.
    shape, spacing = (20, 13, 17), 5.0
    grid = control_grid_shape(shape, 3, spacing)
    positions = torch.meshgrid(*[(torch.arange(g, dtype=torch.float32) - 1) * spacing for g in grid], indexing="ij")
    a = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.3, 0.1], [-0.1, 0.0, 0.2]])
    b = torch.tensor([1.0, -2.0, 0.5])
    control = (torch.einsum("ij,j...->i...", a, torch.stack(positions)) + b.view(3, 1, 1, 1))[None]
    field = dense_displacements(control, shape, spacing)
    voxels = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    expected = torch.einsum("ij,j...->i...", a, voxels) + b.view(3, 1, 1, 1)
    assert field.shape == (1, 3, *shape)
    assert torch.allclose(field[0], expected, atol=1e-4)


def test_bspline_deformation_has_the_configured_spread_and_is_smooth() -> None:
    config = AugmentConfig.none()
    config = dataclasses.replace(config, elastic_sigma=4.0, elastic_spacing=32.0)
    params = Augmenter(config, 3).sample(50, (64, 64, 64), gen())
    assert params.control is not None and params.control.shape == (50, 3, 5, 5, 5)
    assert float(params.control.std()) == pytest.approx(4.0, abs=0.2)
    field = dense_displacements(params.control, (64, 64, 64), 32.0)
    # Each voxel mixes 4^3 independent vectors, so its variance is sigma^2 times the sum of its squared
    # weights, a product over the axes (about 0.48 per axis, 0.11 in all).
    per_axis = (bspline_basis(64, 5, 32.0, dtype=torch.float64) ** 2).sum(dim=1)
    expected_std = 4.0 * math.sqrt(float((per_axis[:, None, None] * per_axis[None, :, None] * per_axis).mean()))
    assert 1.2 < expected_std < 1.5
    assert float(field.std()) == pytest.approx(expected_std, rel=0.1)
    assert field.diff(dim=-1).abs().max() < 1.0


def test_rotation_angles_are_uniform_in_the_configured_range() -> None:
    config = AugmentConfig(elastic_sigma=0.0, rotate=90.0, flip=False, scale=(1.0, 1.0))
    params = Augmenter(config).sample(4000, (8, 8), gen())
    assert params.matrix is not None
    angles = torch.rad2deg(torch.atan2(params.matrix[:, 0, 1], params.matrix[:, 0, 0]))
    assert angles.abs().max() <= 90.0 + 1e-4
    assert angles.min() < -88 and angles.max() > 88
    assert float(angles.abs().mean()) == pytest.approx(45.0, abs=2.0)  # uniform: mean |angle| = 90 / 2


def test_per_plane_rotation_limits_keep_an_anisotropic_axis_in_place() -> None:
    # Each z-section holds its own constant value: turning only in yx planes must keep every section whole.
    config = AugmentConfig(elastic_sigma=0.0, rotate=[0, 0, 180], flip=False, scale=(1.0, 1.0),
                           brightness=0.0, contrast=(1.0, 1.0), gamma=(1.0, 1.0), noise=0.0)
    volume = torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1, 1).expand(3, 1, 6, 16, 16).contiguous()
    out, _, _ = Augmenter(config, spatial_dims=3)(volume, generator=gen())
    assert torch.allclose(out, volume, atol=1e-5)
    params = Augmenter(config, spatial_dims=3).sample(500, (6, 16, 16), gen())
    assert params.matrix is not None and not torch.allclose(params.matrix[:, 1:, 1:], torch.eye(2))
    with pytest.raises(BiounetError, match="rotate needs 1 or 3 limits"):
        Augmenter(AugmentConfig(rotate=[0, 180]), spatial_dims=3)
    assert yaml.safe_load(yaml.safe_dump(config.to_dict()))["rotate"] == [0.0, 0.0, 180.0]


# -- gray values ---------------------------------------------------------------------------------------------


def test_gray_value_changes_match_hand_computed_values() -> None:
    image = torch.linspace(-1.0, 3.0, 2 * 25).reshape(2, 1, 5, 5)
    low, high = image.amin(dim=(1, 2, 3)), image.amax(dim=(1, 2, 3))
    gamma = torch.tensor([2.0, 0.5])
    out, _, _ = AugmentParams((5, 5), gamma=gamma).apply(image)
    for n in range(2):
        t = (image[n] - low[n]) / (high[n] - low[n])
        assert torch.allclose(out[n], t ** gamma[n] * (high[n] - low[n]) + low[n], atol=1e-5)
        assert float(out[n].min()) == pytest.approx(float(low[n]))
        assert float(out[n].max()) == pytest.approx(float(high[n]))
    factor, offset = torch.tensor([2.0, 0.5]), torch.tensor([0.1, -0.3])
    out, _, _ = AugmentParams((5, 5), contrast=factor, brightness=offset).apply(image)
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    expected = (image - mean) * factor.view(2, 1, 1, 1) + mean + offset.view(2, 1, 1, 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_noise_has_the_configured_spread_and_follows_the_seed() -> None:
    image = torch.zeros(2, 3, 64, 64)
    params = AugmentParams((64, 64), noise=torch.tensor([0.5, 0.0]), noise_seed=7)
    out, _, _ = params.apply(image)
    assert float(out[0].std()) == pytest.approx(0.5, rel=0.05) and abs(float(out[0].mean())) < 0.02
    assert torch.equal(out[1], image[1])
    assert torch.equal(params.apply(image)[0], out)


def test_gray_value_changes_leave_label_and_weight_alone() -> None:
    config = AugmentConfig(elastic_sigma=0.0, rotate=0.0, flip=False, scale=(1.0, 1.0), brightness=0.5,
                           contrast=(0.5, 2.0), gamma=(0.5, 2.0), noise=0.1)
    image, label, weight = batch(2)
    out_image, out_label, out_weight = Augmenter(config)(image, label, weight, generator=gen())
    assert (out_image - image).abs().mean() > 0.05
    assert out_label is not None and torch.equal(out_label, label)
    assert out_weight is not None and torch.equal(out_weight, weight)


# -- randomness ---------------------------------------------------------------------------------------------


def test_same_seed_same_result_and_samples_differ() -> None:
    augmenter = Augmenter(AugmentConfig())
    image = torch.rand(1, 1, 32, 32).repeat(4, 1, 1, 1)
    label = torch.randint(0, 2, (1, 32, 32)).repeat(4, 1, 1)
    first = augmenter(image, label, generator=gen(3))
    second = augmenter(image, label, generator=gen(3))
    assert torch.equal(first[0], second[0]) and first[1] is not None and second[1] is not None
    assert torch.equal(first[1], second[1])
    assert not torch.equal(augmenter(image, label, generator=gen(4))[0], first[0])
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(first[0][a], first[0][b], atol=1e-3)
            assert not torch.equal(first[1][a], first[1][b])


# -- config ---------------------------------------------------------------------------------------------------


def test_config_round_trips_through_yaml_and_rejects_bad_values() -> None:
    config = AugmentConfig(scale=(0.8, 1.2), elastic_grid=4)
    text = yaml.safe_dump(config.to_dict())
    assert AugmentConfig.from_dict(yaml.safe_load(text)) == config
    assert AugmentConfig.from_dict({"gamma": [0.7, 1.5]}).gamma == (0.7, 1.5)
    with pytest.raises(BiounetError, match="unknown augment config keys: sigma"):
        AugmentConfig.from_dict({"sigma": 3})
    for bad in ({"scale": [1.2, 0.8]}, {"elastic_grid": 1}, {"rotate": -5}, {"gamma": [1.0]}, {"elastic_p": 2.0}):
        with pytest.raises(BiounetError, match="invalid augment config"):
            AugmentConfig.from_dict(bad)


def test_mismatched_tensors_are_refused() -> None:
    image, label, _ = batch(2)
    augmenter = Augmenter(AugmentConfig())
    with pytest.raises(ValueError, match="label shape"):
        augmenter(image, label[:, :-1], generator=gen())
    with pytest.raises(ValueError, match="spatial shape"):
        Augmenter(AugmentConfig(), 3)(image, generator=gen())
