"""Training pairs too large for memory: read patch by patch, targets and weights computed per patch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from biounet.cli.main import main
from biounet.data import examples
from biounet.data.examples import LazyExample, WeightMapConfig, load_example
from biounet.data.labels import LabelConfig
from biounet.errors import BiounetError
from biounet.models.normalization import Normalization
from biounet.training.config import apply_overrides
from biounet.training.run import load_examples

zarr = pytest.importorskip("zarr")


def _cells(tmp_path: Path, shape: tuple[int, ...], name: str = "vol") -> tuple[Path, Path]:
    """Touching blobs in a volume stored as zarr arrays (image and instance label), chunked."""
    rng = np.random.default_rng(0)
    seeds = np.zeros(shape, np.int32)
    centres = (rng.random((40, len(shape))) * np.array(shape)).astype(int)
    seeds[tuple(centres.T)] = np.arange(1, 41)
    distance, nearest = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    label = np.where(distance < 7, seeds[tuple(nearest)], 0).astype(np.uint16)
    image = (60 + 100 * (label > 0) + rng.normal(0, 15, shape)).clip(0, 255).astype(np.uint8)
    paths = []
    for kind, data in (("images", image), ("labels", label)):
        folder = tmp_path / kind
        folder.mkdir(exist_ok=True)
        array = zarr.open_array(str(folder / f"{name}.zarr"), mode="w", shape=shape, chunks=(16,) * len(shape),
                                dtype=data.dtype)
        array[...] = data
        paths.append(folder / f"{name}.zarr")
    return paths[0], paths[1]


def test_lazy_patches_equal_the_in_memory_example_inside_the_volume(tmp_path: Path) -> None:
    image, label = _cells(tmp_path, (40, 56, 60))
    kwargs = dict(spatial_dims=3, in_channels=1, num_classes=3, normalization=Normalization("zscore"),
                  labels=LabelConfig("instances"), weights=WeightMapConfig(w0=10.0, sigma=2.0, class_balance=False))
    whole = load_example(image, label, **kwargs)  # type: ignore[arg-type]
    lazy = LazyExample(image, label, **kwargs)  # type: ignore[arg-type]
    assert lazy.shape == whole.shape and lazy.size == whole.size
    region = [(12, 30), (20, 40), (22, 44)]  # far enough inside that the margin sees what the whole volume does
    pixels, target, weight = lazy.patch(region)
    inside = tuple(slice(a, b) for a, b in region)
    np.testing.assert_allclose(pixels, whole.image[(slice(None), *inside)], atol=1e-5)
    np.testing.assert_array_equal(target, whole.target[inside])
    np.testing.assert_allclose(weight, whole.weight[inside], rtol=1e-5)
    edge = lazy.patch([(-6, 10), (0, 12), (50, 66)])  # beyond the volume: mirrored, as in-memory patches are
    assert edge[0].shape == (1, 16, 12, 16) and np.isfinite(edge[2]).all()


def test_lazy_example_names_the_label_of_a_mismatched_pair(tmp_path: Path) -> None:
    image, _ = _cells(tmp_path, (24, 32, 32), "a")
    _, label = _cells(tmp_path, (24, 32, 30), "b")
    with pytest.raises(BiounetError, match=r"label shape \(24, 32, 30\) does not match its image \(24, 32, 32\)") \
            as info:
        LazyExample(image, label, spatial_dims=3, in_channels=1, num_classes=2, normalization=Normalization(),
                    labels=LabelConfig("instances"), weights=WeightMapConfig())
    assert info.value.path == str(label)


def test_training_reads_a_large_pair_patch_by_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(examples, "LAZY_FROM_BYTES", 16 * 40 * 48 * 48)  # the first volume only is "large"
    _cells(tmp_path, (40, 48, 48), "big")
    _cells(tmp_path, (24, 32, 32), "small")
    config_path = tmp_path / "config.yaml"
    settings = [f"data.images={tmp_path / 'images'}", f"data.labels={tmp_path / 'labels'}",
                "model.spatial_dims=3", "model.base_channels=4", "model.depth=2", "model.padding=same",
                "model.norm=instance", "model.out_channels=3", "labels.kind=instances", "tile=24", "batch_size=2",
                "samples_per_epoch=6", "epochs=2", "loss.name=ce_dice", "monitor=accuracy",
                "data.val_images=" + str(tmp_path / "images"), "data.val_labels=" + str(tmp_path / "labels")]
    config = apply_overrides({}, settings)
    _, train, val = load_examples(config, progress=False)
    assert [type(e).__name__ for e in train] == ["LazyExample", "Example"]
    assert [type(e).__name__ for e in val] == ["Example", "Example"]
    config_path.write_text(config.to_yaml())
    assert main(["train", "--config", str(config_path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert (tmp_path / "run" / "model.pt").exists()
