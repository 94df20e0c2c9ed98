"""Instances of a zarr prediction store, block by block: equal to the whole image's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from biounet.data.targets import boundary_classes
from biounet.infer.blocks import Block
from biounet.infer.instances import instances_from_probabilities, instances_to_store
from biounet.models.instance_params import InstanceParams

zarr = pytest.importorskip("zarr")
from biounet.infer.store import PredictionStore, StoreLayout  # noqa: E402


def _touching(shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    """Probabilities (background, interior, boundary) of touching blobs, blurred as a network's are."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    centres = (rng.random((count, len(shape))) * np.array(shape)).astype(int)
    seeds[tuple(centres.T)] = np.arange(1, count + 1)
    distance, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    radii = rng.uniform(3, 9, count + 1)
    owner = seeds[tuple(nearest)]
    truth = np.where(distance <= radii[owner], owner, 0)
    classes = boundary_classes(truth)
    probs = np.stack([(classes == k).astype(np.float32) for k in range(3)])
    probs = ndimage.gaussian_filter(probs, (0,) + (1.0,) * len(shape)) + rng.normal(0, 0.05, probs.shape)
    probs = np.clip(probs, 1e-3, None).astype(np.float32)
    return probs / probs.sum(0, keepdims=True)


def _store(path: Path, items: list[np.ndarray], block: tuple[int, ...], stack: bool = False) -> Path:
    classes, *shape = items[0].shape
    dims = len(shape)
    layout = StoreLayout("Z" if stack else "", "YX" if dims == 2 else "ZYX", (len(items),) if stack else (),
                         tuple(shape), classes, block, (1.0,) * (dims + stack))
    store = PredictionStore.open(path, layout, "float32", {"test": True})
    for item, probs in enumerate(items):
        for index in np.ndindex(*layout.grid):
            start = tuple(i * b for i, b in zip(index, block, strict=True))
            stop = tuple(min(s + b, n) for s, b, n in zip(start, block, shape, strict=True))
            b = Block(index, start, stop)
            store.write((item,) if stack else (), b, probs[(slice(None), *b.slices())])
    return path


def _instances(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["instances/0"][...])


@pytest.mark.parametrize(("shape", "count", "block"), [((203, 171), 150, (37, 29)), ((40, 52, 47), 60, (13, 16, 11))])
def test_block_instances_equal_the_whole_image(tmp_path: Path, shape: tuple[int, ...], count: int,
                                                block: tuple[int, ...]) -> None:
    probs = _touching(shape, count, 0)
    params = InstanceParams(seed=0.5, foreground=0.5, min_size=12)
    expected = instances_from_probabilities(probs, params)
    crossing = sum(1 for box in ndimage.find_objects(expected) if box is not None and any(
        s.start // b != (s.stop - 1) // b for s, b in zip(box, block, strict=True)))
    assert crossing >= 10  # many objects cross block faces
    found = instances_to_store(_store(tmp_path / "p.zarr", [probs], block), params)
    assert found == expected.max() > 40
    np.testing.assert_array_equal(_instances(tmp_path / "p.zarr"), expected)


def test_semantic_components_and_stacks_numbered_over_the_stack(tmp_path: Path) -> None:
    planes = [_touching((90, 80), 30, seed) for seed in (1, 2, 3)]
    semantic = [np.stack([p[0], p[1] + p[2]]) for p in planes]
    path = _store(tmp_path / "s.zarr", semantic, (25, 21), stack=True)
    total = instances_to_store(path, None)
    got = _instances(path)
    offset = 0
    for z, probs in enumerate(semantic):
        expected, count = ndimage.label(probs[1] > 0.5)
        np.testing.assert_array_equal(got[z], np.where(expected > 0, expected + offset, 0))
        offset += count
    assert total == offset


def test_cli_zarr_instances_of_the_shipped_nuclei_model_equal_the_in_memory_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from biounet.cli.main import main
    from biounet.infer import predict
    from biounet.io.readers import read_image
    from biounet.models.checkpoint import load_checkpoint
    from biounet.pretrained import resolve_model

    image = read_image(Path(__file__).parent / "data" / "dsb2018" / "image_be269669.png", 2)[:3]
    source = zarr.open_array(str(tmp_path / "nuclei.zarr"), mode="w", shape=image.shape, chunks=(3, 64, 64),
                             dtype=image.dtype)
    source[...] = image
    assert main(["predict", "--model", "nuclei", str(tmp_path / "nuclei.zarr"), "--out",
                 str(tmp_path / "out.zarr"), "--out-format", "zarr", "--tile", "124", "--block", "40",
                 "--object-size", "none"]) == 0
    checkpoint = load_checkpoint(resolve_model("nuclei"))
    expected = instances_from_probabilities(predict(checkpoint, image, tile=124), checkpoint.instances)
    printed = capsys.readouterr().out
    assert f"{expected.max()} objects in instances/0" in printed and "64 of 64 blocks" in printed
    np.testing.assert_array_equal(_instances(tmp_path / "out.zarr"), expected)
