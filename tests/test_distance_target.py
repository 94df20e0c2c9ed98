"""The distance instance target: foreground + each object pixel's normalised distance to its boundary, learnt
beside each other, then split by a seeded watershed on the distance; the target, its augmentation, the
post-processing (whole, tiled, block by block), the checkpoint, the config switch and a tiny training."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch
import yaml
from scipy import ndimage
from skimage.segmentation import find_boundaries

from biounet.augment import AugmentConfig, Augmenter
from biounet.cli.main import main
from biounet.data.examples import Example
from biounet.data.labels import IGNORE_INDEX, LabelConfig
from biounet.data.sampling import PatchSampler
from biounet.data.targets import CLASS_NAMES, DISTANCE_NAMES, distance_target
from biounet.errors import BiounetError
from biounet.infer.blocks import Block
from biounet.infer.instances import instances_from_probabilities, instances_to_store
from biounet.infer.predict import predict
from biounet.losses import build_loss
from biounet.metrics.instances import matching_dataset
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.config import UNetConfig
from biounet.models.instance_params import InstanceParams
from biounet.models.outputs import logits_to_probabilities, probabilities_to_mask
from biounet.models.unet import UNet
from biounet.planning import planner
from biounet.training.config import TrainConfig, apply_overrides
from biounet.training.finetune import finetune_config
from biounet.training.run import train
from biounet.training.trainer import Trainer
from conftest import write_nuclei_dataset

zarr = pytest.importorskip("zarr")
from biounet.infer.store import PredictionStore, StoreLayout  # noqa: E402

# What a plan writes for instance labels (the boundary target): the switch must turn it into a distance run.
BOUNDARY_PLAN = ["labels.kind=instances", "model.out_channels=3", "class_names=[background,interior,boundary]",
                 "monitor=accuracy", "loss.name=ce_dice"]
DISTANCE = "labels.instance_target=distance"


def discs(shape: tuple[int, int], discs: list[tuple[int, int, float, int]]) -> np.ndarray:
    """An instance map of discs ``(cy, cx, radius, id)``; a later disc does not overwrite an earlier one."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    label = np.zeros(shape, np.int32)
    for cy, cx, r, object_id in discs:
        label[((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2) & (label == 0)] = object_id
    return label


def touching_pair() -> np.ndarray:
    """Two discs of radii 9 and 14 whose centres are 22 px apart: they share a contact line (ids 3 and 9,
    with a gap), and a lone disc (id 4) away from both."""
    return discs((64, 80), [(30, 22, 9.0, 3), (30, 44, 14.0, 9), (54, 70, 5.0, 4)])


def contact(label: np.ndarray, a: int, b: int) -> np.ndarray:
    """Pixels of object ``a`` with a face neighbour in object ``b``."""
    grown = ndimage.binary_dilation(label == b, ndimage.generate_binary_structure(2, 1))
    return (label == a) & grown


# --- the target ---------------------------------------------------------------------------------------------

def test_distance_peaks_at_each_centre_and_falls_to_the_contact_line() -> None:
    label = touching_pair()
    assert contact(label, 3, 9).sum() >= 5  # the discs really touch
    distance = distance_target(label)
    assert distance.dtype == np.float32 and distance.shape == label.shape
    boundaries = find_boundaries(label, connectivity=1, mode="inner") & (label > 0)
    # 0 outside and on every boundary pixel (the boundary target's boundary class), > 0 on the rest.
    assert (distance[label == 0] == 0).all() and (distance[boundaries] == 0).all()
    assert (distance[(label > 0) & ~boundaries] > 0).all()
    for object_id, centre, radius in ((3, (30, 22), 9.0), (9, (30, 44), 14.0), (4, (54, 70), 5.0)):
        inside = label == object_id
        # Normalised per object: the small disc peaks at 1 as the large one does, at its centre.
        assert distance[inside].max() == pytest.approx(1.0)
        peak = np.unravel_index(np.argmax(np.where(inside, distance, -1)), label.shape)
        assert np.hypot(peak[0] - centre[0], peak[1] - centre[1]) <= 1.5
        # Each pixel: its Euclidean distance to the nearest boundary pixel of its object, over the largest.
        raw = ndimage.distance_transform_edt(inside & ~boundaries)
        assert raw.max() == pytest.approx(radius - 1, abs=1.5)
        np.testing.assert_allclose(distance[inside], (raw / raw.max())[inside], rtol=1e-6)
    # Both sides of the contact line are 0, and the distance rises from it into each disc.
    for a, b in ((3, 9), (9, 3)):
        line = contact(label, a, b)
        assert (distance[line] == 0).all()
        step = ndimage.binary_dilation(line, ndimage.generate_binary_structure(2, 1)) & (label == a) & ~boundaries
        assert step.sum() >= 5 and (distance[step] > 0).all()


def test_objects_without_an_interior_keep_a_seed_where_they_touch_nothing() -> None:
    label = np.zeros((12, 12), np.int32)
    label[2:10, 2:6] = 1
    label[2:10, 6:8] = 2  # two pixels wide, against object 1: no pixel off its boundary
    distance = distance_target(label)
    assert (distance[2:10, 6] == 0).all()  # its contact with object 1
    assert (distance[2:10, 7] == 1).all()  # touching only background: a seed, as the boundary classes keep
    assert distance[label == 1].max() == 1.0


def test_distance_ids_with_gaps_edges_and_errors() -> None:
    # An object cut by the image's edge rises towards the edge (the edge is no boundary).
    label = discs((40, 40), [(0, 20, 10.0, 7)])
    distance = distance_target(label)
    assert distance[0, 20] == pytest.approx(1.0) and distance[0, 20] > distance[5, 20] > distance[9, 20] > 0
    # An object filling the whole image has no boundary at all: 1 throughout.
    assert (distance_target(np.full((5, 6), 2)) == 1).all()
    # 3D, and anisotropic spacing measured in its units.
    ball = np.zeros((9, 21, 21), np.int32)
    ball[1:8, 3:18, 3:18] = 5
    flat = distance_target(ball, spacing=(4.0, 1.0, 1.0))
    assert flat.max() == pytest.approx(1.0) and flat[4, 10, 10] == pytest.approx(1.0)
    with pytest.raises(BiounetError, match="integer"):
        distance_target(np.zeros((4, 4), np.float32))


def test_label_config_targets_and_distance_with_unannotated_pixels() -> None:
    label = touching_pair().astype(np.int64)
    config = LabelConfig(kind="instances", ignore=255, instance_target="distance")
    classes, instances = config.targets(label, 2)
    # Touching objects stay touching: the distance, not a background gap, tells them apart.
    np.testing.assert_array_equal(classes, (label > 0).astype(np.int64))
    np.testing.assert_array_equal(instances, label)
    # An unannotated stripe across the large disc is neither a boundary nor background for the distance.
    striped = label.copy()
    striped[:, 40:42] = 255
    expected = distance_target(touching_pair())
    got = config.distance(striped)
    keep = np.ones(label.shape, bool)
    keep[:, 40:42] = False
    np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-6)
    assert (got[~keep] == 0).all()
    with pytest.raises(BiounetError, match="instance labels"):
        LabelConfig(kind="binary", foreground=1, instance_target="distance").distance((label > 0).astype(np.int64))
    with pytest.raises(BiounetError, match="instance_target"):
        LabelConfig(instance_target="centres")  # type: ignore[arg-type]


def test_examples_carry_the_distance_in_memory_and_patch_by_patch(tmp_path: Path) -> None:
    from biounet.data.examples import LazyExample, WeightMapConfig, load_example
    from biounet.models.normalization import Normalization
    from test_lazy_training import _cells

    image, label = _cells(tmp_path, (96, 96))
    kwargs = dict(spatial_dims=2, in_channels=1, num_classes=2, normalization=Normalization("zscore"),
                  labels=LabelConfig("instances", instance_target="distance"), weights=WeightMapConfig(sigma=2.0))
    whole = load_example(image, label, **kwargs)  # type: ignore[arg-type]
    assert whole.distance is not None and whole.objects is not None
    np.testing.assert_array_equal(whole.distance, distance_target(whole.objects))
    np.testing.assert_array_equal(whole.target, (whole.objects > 0).astype(np.int64))  # touching: not separated
    lazy = LazyExample(image, label, **kwargs)  # type: ignore[arg-type]
    # The margin (20 px) around this region stays inside the image and holds every object that reaches it.
    region = [(40, 56), (38, 58)]
    patch = lazy.patch(region)
    inside = tuple(slice(a, b) for a, b in region)
    assert len(patch) == 4 and len(whole.patch(region)) == 4
    np.testing.assert_allclose(patch[3], whole.distance[inside], atol=1e-6)
    np.testing.assert_array_equal(patch[1], whole.target[inside])
    assert len(load_example(image, label, **{**kwargs, "labels": LabelConfig("instances")}).patch(region)) == 3  # type: ignore[arg-type]


# --- augmentation -------------------------------------------------------------------------------------------

def test_warp_moves_the_distance_exactly_as_the_weight_map() -> None:
    label = torch.from_numpy(np.stack([touching_pair(), np.roll(touching_pair(), 9, axis=1)]).astype(np.int64))
    distance = torch.from_numpy(np.stack([distance_target(x) for x in label.numpy()]))
    image = torch.rand(2, 1, *label.shape[1:])
    augmenter = Augmenter(AugmentConfig(rotate=180.0, flip=True, scale=(0.8, 1.2), elastic_sigma=4.0,
                                        elastic_grid=3), 2)
    params = augmenter.sample(2, tuple(label.shape[1:]), torch.Generator().manual_seed(3))
    _, moved_label, as_weight = params.apply(image, label, distance)
    moved = params.warp(distance)
    assert as_weight is not None and moved_label is not None
    torch.testing.assert_close(moved, as_weight, rtol=0, atol=0)  # one grid, bilinear: the weight map's path
    assert not torch.equal(moved, distance)  # it did move
    # Same geometry as the labels: deep pixels (distance > 0.5) land inside objects, and each moved object's
    # distance peak lies inside it.
    assert bool(((moved > 0.5) & (moved_label == 0)).sum() == 0)
    for n in range(2):
        for object_id in (3, 9):
            inside = moved_label[n] == object_id
            assert float(moved[n][inside].max()) > 0.8
    # A flip maps pixel centres onto pixel centres: the moved distance is exactly the moved label's distance.
    flips = Augmenter(AugmentConfig(rotate=0.0, flip=True, scale=(1.0, 1.0), elastic_sigma=0.0), 2)
    for seed in range(4):
        flipped = flips.sample(2, tuple(label.shape[1:]), torch.Generator().manual_seed(seed))
        _, flipped_label, _ = flipped.apply(image, label)
        assert flipped_label is not None
        for n in range(2):
            np.testing.assert_allclose(flipped.warp(distance)[n].numpy(),
                                       distance_target(flipped_label[n].numpy()), atol=1e-5)
    with pytest.raises(ValueError, match="floating point"):
        params.warp(label)


def test_trainer_step_feeds_the_loss_a_distance_moved_with_the_target(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    label = touching_pair()
    example = Example("pair", np.random.default_rng(0).random((1, *label.shape), np.float32),
                      (label > 0).astype(np.int64), np.ones(label.shape, np.float32), label,
                      distance_target(label))
    config = apply_overrides({}, [*BOUNDARY_PLAN, DISTANCE, "model.base_channels=4", "model.depth=2",
                                  "model.padding=same", "batch_size=4", "augment.rotate=180",
                                  "augment.elastic_sigma=4", "data_workers=0"])
    shape = (48, 48)
    trainer = Trainer(config, UNet(config.model), PatchSampler([example], shape, shape), lambda _m: {}, tmp_path,
                      torch.device("cpu"))
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    loss_fn = trainer.loss_fn

    def spy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        seen.append((target, extra[0]))
        return loss_fn(logits, target, weight, *extra)

    trainer.loss_fn = spy  # type: ignore[assignment]
    for _ in range(3):
        assert np.isfinite(trainer.train_step())
    for target, distance in seen:
        assert distance.shape == target.shape and float(distance.max()) > 0.5
        # If the distance moved otherwise than the target (or not at all), its deep pixels would fall outside.
        assert int(((distance > 0.5) & (target == 0)).sum()) == 0
        assert float(distance[target == 1].mean()) > 0.2


def test_loss_counts_the_distance_on_annotated_pixels_only() -> None:
    loss = build_loss("ce_dice", IGNORE_INDEX, distance=True)
    target = torch.tensor([[[0, 1, 1, IGNORE_INDEX]]])
    distance = torch.tensor([[[0.0, 0.5, 1.0, float("nan")]]])
    logits = torch.zeros(1, 2, 1, 4, requires_grad=True)
    value = loss(logits, target, torch.ones(1, 1, 4), distance)
    value.backward()
    assert torch.isfinite(value) and logits.grad is not None and float(logits.grad[0, :, 0, 3].abs().sum()) == 0
    # Perfect distance logits lower the loss by exactly the distance term's excess over its minimum.
    exact = torch.zeros(1, 2, 1, 4)
    exact[0, 1, 0, :3] = torch.logit(torch.tensor([1e-6, 0.5, 1 - 1e-6]))
    assert float(loss(exact, target, None, distance)) < float(loss(torch.zeros(1, 2, 1, 4), target, None, distance))
    with pytest.raises(BiounetError, match="distance target"):
        loss(logits, target, None)
    # The distance term alone: the weight map's mean of the per-pixel BCE over the counted pixels.
    from biounet.losses import ForegroundDistanceLoss

    regression = ForegroundDistanceLoss(lambda *_: torch.zeros(()), IGNORE_INDEX)  # type: ignore[arg-type]
    logits = torch.randn(1, 2, 1, 4)
    weight = torch.tensor([[[0.5, 3.0, 1.0, 7.0]]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 1, 0, :3], distance[0, 0, :3],
                                                               reduction="none")
    expected = (bce * weight[0, 0, :3]).sum() / 3
    torch.testing.assert_close(regression(logits, target, weight, distance), expected)


# --- post-processing ----------------------------------------------------------------------------------------

def perfect(label: np.ndarray) -> np.ndarray:
    """A "perfect" foreground/distance prediction of an instance map."""
    return np.stack([(label > 0).astype(np.float32), distance_target(label)])


def one_to_one(found: np.ndarray, truth: np.ndarray, least_iou: float) -> None:
    """Every true object is one found object and vice versa, each overlapping its partner by ``least_iou``."""
    truth_ids = [i for i in np.unique(truth) if i]
    assert found.max() == len(truth_ids)  # nothing merged, nothing split
    for object_id in truth_ids:
        inside = truth == object_id
        partners, counts = np.unique(found[inside], return_counts=True)
        best = partners[np.argmax(counts)]
        assert best > 0
        iou = np.sum(inside & (found == best)) / np.sum(inside | (found == best))
        assert iou >= least_iou, (object_id, iou)


def test_post_processing_separates_two_touching_discs() -> None:
    label = touching_pair()
    params = InstanceParams(seed=0.5, foreground=0.5)
    found = instances_from_probabilities(perfect(label), params, "distance")
    one_to_one(found, label, 0.95)
    # Read as a two-class model's (components of the last channel), the same channels give only the cores.
    cores = instances_from_probabilities(perfect(label), params)
    assert cores.max() == 3 and np.count_nonzero(cores) < 0.5 * np.count_nonzero(found)
    # Equal discs: the watershed gives back the drawn partition exactly.
    equal = discs((40, 60), [(20, 19, 9.0, 1), (20, 37, 9.0, 2)])
    assert contact(equal, 1, 2).any()
    found = instances_from_probabilities(perfect(equal), params, "distance")
    np.testing.assert_array_equal(found, equal)
    # Blurred and noisy as a network's output is (smooth: a network's errors are correlated in space): still
    # each disc once.
    rng = np.random.default_rng(0)
    blurred = ndimage.gaussian_filter(perfect(label) + rng.normal(0, 0.1, (2, *label.shape)), (0, 1.5, 1.5))
    one_to_one(instances_from_probabilities(np.clip(blurred, 0, 1), params, "distance"), label, 0.85)
    with pytest.raises(BiounetError, match="2 channels"):
        instances_from_probabilities(np.zeros((3, 8, 8)), params, "distance")


def crowd(shape: tuple[int, ...], count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Touching convex blobs (discs cut by their Voronoi cells) and their blurred, noisy foreground/distance."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    centres = (rng.random((count, len(shape))) * np.array(shape)).astype(int)
    seeds[tuple(centres.T)] = np.arange(1, count + 1)
    distance, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    radii = rng.uniform(4, 9, count + 1)
    owner = seeds[tuple(nearest)]
    truth = np.where(distance <= radii[owner], owner, 0).astype(np.int32)
    probs = ndimage.gaussian_filter(perfect(truth), (0,) + (0.7,) * len(shape))
    probs = probs + rng.normal(0, 0.03, probs.shape)
    return truth, np.clip(probs, 0, 1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_a_crowd_of_touching_blobs_is_found_object_by_object(seed: int) -> None:
    # Every contact is 0 on both sides, so a low seed threshold (the lowest the tuning tries) still separates
    # touching blobs; higher ones can cut the ridge of an elongated blob into two seeds. A few pixels of a
    # blob's rasterised tip may seed on their own: the minimum size (here 0.15 of the median blob, which the
    # tuning tries as 0.1 and 0.2) drops them.
    truth, noisy = crowd((160, 140), 90, seed)
    params = InstanceParams(seed=0.3, foreground=0.5, min_size=15)
    for probabilities, least_iou in ((perfect(truth), 0.8), (noisy, 0.7)):
        found = instances_from_probabilities(probabilities, params, "distance")
        one_to_one(found, truth, least_iou)
        assert matching_dataset([found], [truth], (0.5,))[0].accuracy == 1.0


def write_store(path: Path, items: list[np.ndarray], block: tuple[int, ...], prob_dtype: str = "float32") -> Path:
    channels, *shape = items[0].shape
    dims = len(shape)
    stack = len(items) > 1
    layout = StoreLayout("Z" if stack else "", "YX" if dims == 2 else "ZYX", (len(items),) if stack else (),
                         tuple(shape), channels, block, (1.0,) * (dims + stack), "distance")
    store = PredictionStore.open(path, layout, prob_dtype, {"test": True})
    for item, probs in enumerate(items):
        for index in np.ndindex(*layout.grid):
            start = tuple(i * b for i, b in zip(index, block, strict=True))
            stop = tuple(min(s + b, n) for s, b, n in zip(start, block, shape, strict=True))
            b = Block(index, start, stop)
            store.write((item,) if stack else (), b, probs[(slice(None), *b.slices())])
    return path


def stored(path: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")[f"{name}/0"][...])


@pytest.mark.parametrize(("shape", "count", "block", "prob_dtype"),
                         [((203, 171), 140, (37, 29), "float32"), ((150, 130), 80, (33, 40), "uint8"),
                          ((40, 52, 47), 50, (13, 16, 11), "float32")])
def test_block_by_block_instances_equal_the_whole_image(tmp_path: Path, shape: tuple[int, ...], count: int,
                                                        block: tuple[int, ...], prob_dtype: str) -> None:
    _, probs = crowd(shape, count, 0)
    params = InstanceParams(seed=0.5, foreground=0.5, min_size=10)
    path = write_store(tmp_path / "p.zarr", [probs], block, prob_dtype)
    # The store's mask of a distance model is its foreground, not an argmax over foreground and distance.
    np.testing.assert_array_equal(stored(path, "mask"), (probs[0] > 0.5).astype(np.uint8))
    as_stored = stored(path, "prob").astype(np.float32) / (255.0 if prob_dtype == "uint8" else 1.0)
    expected = instances_from_probabilities(as_stored, params, "distance")
    crossing = sum(1 for box in ndimage.find_objects(expected) if box is not None and any(
        s.start // b != (s.stop - 1) // b for s, b in zip(box, block, strict=True)))
    assert crossing >= 10 and expected.max() > 0.8 * count * 0.5
    assert instances_to_store(path, params, "distance") == expected.max()
    np.testing.assert_array_equal(stored(path, "instances"), expected)
    # Read as a three-class store, the same channels give other objects: the kind is what decides.
    assert instances_to_store(path, None, "distance") == expected.max()  # a distance model's defaults
    assert not np.array_equal(stored(path, "instances"), instances_from_probabilities(as_stored, params))


def test_distance_model_probabilities_are_sigmoids_and_tiled_equals_whole() -> None:
    torch.manual_seed(0)
    image = np.random.default_rng(1).random((1, 150, 170), np.float32)
    # Valid convolutions: tiles abut and equal one pass over the whole (mirror-padded) image.
    model = UNet(UNetConfig(base_channels=4, depth=2, output="distance")).eval()
    whole = predict(model, image, tile=400)
    tiled = predict(model, image, tile=60)
    assert whole.shape == (2, 150, 170) and not np.allclose(whole.sum(0), 1.0)
    assert np.abs(tiled - whole).max() <= 1e-5
    # Each channel is a sigmoid of its own logit, as the model's output kind says.
    same = UNet(UNetConfig(base_channels=4, depth=2, output="distance", padding="same")).eval()
    one_tile = predict(same, image[:, :144, :160], tile=(144, 160))
    with torch.no_grad():
        logits = same(torch.from_numpy(image[None, :, :144, :160]))
    np.testing.assert_allclose(one_tile, torch.sigmoid(logits)[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(one_tile, logits_to_probabilities(logits, "distance")[0].numpy(), atol=1e-6)
    assert not np.allclose(one_tile, logits_to_probabilities(logits)[0].numpy(), atol=1e-2)  # not a softmax
    mask = probabilities_to_mask(np.stack([np.full((2, 2), 0.6), np.full((2, 2), 0.9)]), "distance")
    assert (mask == 1).all() and mask.dtype == np.uint8  # the foreground, not the larger channel
    with pytest.raises(BiounetError, match="out_channels = 2"):
        UNetConfig(out_channels=3, output="distance")


# --- checkpoint and config ----------------------------------------------------------------------------------

def test_checkpoint_round_trip_keeps_the_output_kind(tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_channels=4, depth=2, output="distance"))
    params = InstanceParams(seed=0.4, foreground=0.6, min_size=7)
    save_checkpoint(tmp_path / "d.pt", model, instances=params)
    loaded = load_checkpoint(tmp_path / "d.pt")
    assert loaded.config.output == "distance" and loaded.config == model.config
    assert loaded.instances == params and loaded.class_names == list(DISTANCE_NAMES)
    assert loaded.describe()["model"]["output"] == "distance"
    # Without stored post-processing a distance model still gets its defaults: its channels need them.
    save_checkpoint(tmp_path / "bare.pt", model)
    assert load_checkpoint(tmp_path / "bare.pt").instances == InstanceParams()
    # A checkpoint written before the setting existed reads as a class model.
    boundary = UNet(UNetConfig(out_channels=3, base_channels=4, depth=2))
    save_checkpoint(tmp_path / "old.pt", boundary, class_names=list(CLASS_NAMES), instances=InstanceParams())
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    meta = yaml.safe_load(payload["config"])
    del meta["model"]["output"]
    payload["config"] = yaml.safe_dump(meta)
    torch.save(payload, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.config.output == "classes" and old.config == boundary.config


def test_one_switch_turns_a_boundary_plan_into_a_distance_run() -> None:
    config = apply_overrides({}, [*BOUNDARY_PLAN, DISTANCE])
    assert (config.model.output, config.model.out_channels) == ("distance", 2)
    assert config.class_names == DISTANCE_NAMES and config.instance_task and config.num_classes == 2
    assert TrainConfig.from_dict(yaml.safe_load(config.to_yaml())) == config  # config.yaml reads back alike
    boundary = apply_overrides({}, BOUNDARY_PLAN)
    assert (boundary.model.output, boundary.model.out_channels, boundary.labels.instance_target) == \
        ("classes", 3, "boundary")
    with pytest.raises(BiounetError, match="go together"):
        apply_overrides({}, [*BOUNDARY_PLAN, "model.out_channels=2", "model.output=distance"])
    with pytest.raises(BiounetError, match="needs instance labels"):
        apply_overrides({}, ["labels.kind=binary", DISTANCE])
    with pytest.raises(BiounetError, match="out_channels = 2"):
        apply_overrides({}, ["labels.kind=instances", "model.out_channels=4", DISTANCE])


def test_planner_can_choose_the_distance_target(monkeypatch: pytest.MonkeyPatch) -> None:
    from biounet.planning.fingerprint import ClassStats, ObjectStats
    from test_plan import fake, plan_of

    fp = fake((320, 320), classes=(ClassStats(0.85, 0.02, 50.0), ClassStats(0.15, 0.1, 14.0)),
              objects=ObjectStats(30, 16.0, 10.0, 24.0, 0.4), labels=LabelConfig(kind="instances"))
    assert planner.INSTANCE_TARGET == "boundary"  # until it wins the measured comparison
    config = plan_of(fp).config()
    assert config.labels.instance_target == "boundary" and config.model.out_channels == 3
    flipped = plan_of(fp).config([DISTANCE])
    assert (flipped.model.output, flipped.model.out_channels, flipped.class_names) == ("distance", 2, DISTANCE_NAMES)
    monkeypatch.setattr(planner, "INSTANCE_TARGET", "distance")
    plan = plan_of(fp)
    chosen = plan.config()
    assert chosen == flipped
    assert any("distance to its object's boundary" in reason for _, reason in plan.reasons)
    # Timing a candidate width trains real steps, on a patch with a distance.
    timed = planner._time_candidate(apply_overrides(chosen.to_dict(), ["tile=92", "batch_size=1"]), 4,
                                    torch.device("cpu"), steps=1)
    assert timed.step_seconds > 0


def test_finetuning_a_distance_model_keeps_its_target(tmp_path: Path) -> None:
    images, labels = write_nuclei_dataset(tmp_path / "data", 2)
    model = UNet(UNetConfig(base_channels=4, depth=2, output="distance"))
    save_checkpoint(tmp_path / "d.pt", model)
    config = finetune_config(tmp_path / "d.pt", images, labels, minutes=1.0)
    assert config.labels.instance_target == "distance" and config.model == model.config


# --- end to end ---------------------------------------------------------------------------------------------

def test_tiny_training_writes_a_distance_model_that_finds_nuclei(tmp_path: Path) -> None:
    images, labels = write_nuclei_dataset(tmp_path / "data", 6)
    config = apply_overrides({}, [*BOUNDARY_PLAN, DISTANCE, "model.base_channels=8", "model.depth=2", "tile=92",
                                  "samples_per_epoch=60", "batch_size=2", "epochs=1", "optim.lr=3e-3",
                                  "augment.elastic_sigma=0", "checkpoint_seconds=0", "data_workers=0",
                                  f"data.images={images}", f"data.labels={labels}"])
    out = tmp_path / "run"
    train(config, out, progress=False)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["labels"]["instance_target"] == "distance" and saved["model"]["output"] == "distance"
    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint.config.output == "distance" and checkpoint.class_names == list(DISTANCE_NAMES)
    assert checkpoint.instances is not None  # tuned on the validation image
    # `biounet predict` writes probabilities (two sigmoids), the foreground mask and the objects.
    image = iio.imread(images / "00.png")
    iio.imwrite(tmp_path / "cells.png", image)
    tiffs, zarrs = tmp_path / "tiff", tmp_path / "zarr"
    assert main(["predict", "--model", str(out / "model.pt"), str(tmp_path / "cells.png"), "--out", str(tiffs),
                 "--tile", "60"]) == 0
    probs = tifffile.imread(tiffs / "cells_prob.tif")
    instances = tifffile.imread(tiffs / "cells_instances.tif")
    mask = iio.imread(tiffs / "cells_mask.png")
    assert probs.shape == (2, *image.shape) and probs.min() >= 0 and probs.max() <= 1
    assert not np.allclose(probs.sum(0), 1.0)
    np.testing.assert_array_equal(mask > 0, probs[0] > 0.5)
    np.testing.assert_array_equal(instances, instances_from_probabilities(probs, checkpoint.instances, "distance"))
    truth = iio.imread(labels / "00.png").astype(np.int64)
    assert instances.max() >= 3 and matching_dataset([instances], [truth], (0.5,))[0].true_positives >= 2
    # Block by block into a zarr store: the same objects as the whole image.
    assert main(["predict", "--model", str(out / "model.pt"), str(tmp_path / "cells.png"), "--out", str(zarrs),
                 "--tile", "60", "--out-format", "zarr", "--block", "32"]) == 0
    store = zarrs / "cells.zarr"
    assert np.prod(zarr.open_group(str(store), mode="r")["blocks"].shape) > 1  # several blocks
    np.testing.assert_allclose(stored(store, "prob"), probs, atol=1e-5)
    np.testing.assert_array_equal(stored(store, "instances"), instances)


def test_deep_supervision_samples_the_distance_with_the_target_at_every_level(tmp_path: Path) -> None:
    label = touching_pair()
    example = Example("pair", np.random.default_rng(0).random((1, *label.shape), np.float32),
                      (label > 0).astype(np.int64), np.ones(label.shape, np.float32), label,
                      distance_target(label))
    config = apply_overrides({}, [*BOUNDARY_PLAN, DISTANCE, "model.base_channels=4", "model.depth=2",
                                  "model.padding=same", "model.deep_supervision=1", "batch_size=2",
                                  "augment.rotate=180", "data_workers=0"])
    shape = (48, 48)
    trainer = Trainer(config, UNet(config.model), PatchSampler([example], shape, shape), lambda _m: {}, tmp_path,
                      torch.device("cpu"))
    inner = trainer.loss_fn.loss
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def spy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        seen.append((logits, target, extra[0]))
        return inner(logits, target, weight, *extra)

    class Spy(torch.nn.Module):
        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return spy(*args)

    trainer.loss_fn.loss = Spy()
    assert np.isfinite(trainer.train_step())
    assert [tuple(t.shape[1:]) for _, t, _ in seen] == [(48, 48), (24, 24)]
    for logits, target, distance in seen:
        assert distance.shape == target.shape == (2, *logits.shape[2:]) and float(distance.max()) > 0.5
        # Sampled at the target's pixels: no deep object pixel lands on background (the rotation's linear
        # interpolation of the distance leaves small values just outside objects).
        assert int(((distance > 0.5) & (target == 0)).sum()) == 0
