"""The dataset fingerprint on hand-made data whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from skimage.draw import line

from biounet.data.labels import LabelConfig
from biounet.errors import BiounetError
from biounet.planning.fingerprint import fingerprint


def write_pairs(folder: Path, images: list[np.ndarray], labels: list[np.ndarray]) -> list[tuple[Path, Path]]:
    """PNG pairs ``folder/images/NN.png`` and ``folder/labels/NN.png``; images are (H, W) or (H, W, 3)."""
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir(parents=True)
    pairs = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        pair = (folder / "images" / f"{i:02d}.png", folder / "labels" / f"{i:02d}.png")
        iio.imwrite(pair[0], image)
        iio.imwrite(pair[1], label)
        pairs.append(pair)
    return pairs


def discs(centres: list[tuple[int, int]], radius: int = 10, size: int = 128, value: int = 255) -> np.ndarray:
    """Discs of the pixels within ``radius`` of each centre (``2 radius + 1`` pixels across)."""
    yy, xx = np.mgrid[:size, :size]
    inside = np.zeros((size, size), bool)
    for cy, cx in centres:
        inside |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    return (inside * value).astype(np.uint8)


def grey(label: np.ndarray, seed: int = 0) -> np.ndarray:
    """A noisy image, brighter where the label is nonzero."""
    noise = np.random.default_rng(seed).integers(0, 30, label.shape)
    return (40 + 120 * (label > 0) + noise).astype(np.uint8)


def test_discs_size_count_and_isolation(tmp_path: Path) -> None:
    labels = [discs([(30, 30), (30, 90), (95, 60)]), discs([(30, 30), (95, 95), (95, 30)])]
    fp = fingerprint(write_pairs(tmp_path, [grey(x) for x in labels], labels))
    assert fp.labels == LabelConfig(kind="binary", foreground=255)
    assert fp.count == 2 and fp.spatial_dims == 2 and fp.shapes == ((128, 128), (128, 128))
    assert fp.objects is not None
    assert fp.objects.per_image == 3
    assert fp.objects.diameter == pytest.approx(20, abs=1)
    assert fp.objects.diameter_p10 == pytest.approx(fp.objects.diameter_p90)  # all discs alike
    assert fp.objects.near_fraction == 0
    # The skeleton of a disc is its centre; its distance to the jagged edge (10.05) gives a width of 19.1.
    assert fp.classes[1].thickness == pytest.approx(20, abs=1)


@pytest.mark.parametrize(("gap", "near"), [(0, 1.0), (2, 1.0), (3, 1.0), (4, 0.0)])
def test_discs_near_each_other(tmp_path: Path, gap: int, near: float) -> None:
    # Two rows of disc pairs whose facing edges are `gap` background pixels apart (0: touching, one object).
    label = discs([(25, 20), (25, 41 + gap), (90, 20), (90, 41 + gap)], size=120)
    fp = fingerprint(write_pairs(tmp_path, [grey(label)], [label]))
    assert fp.objects is not None
    assert fp.objects.per_image == (2 if gap == 0 else 4)
    assert fp.objects.near_fraction == (0.0 if gap == 0 else near)


def test_instances_touching(tmp_path: Path) -> None:
    # Ids with gaps are instance ids (consecutive small ids would read as classes).
    label = np.zeros((60, 60), np.uint8)
    label[10:20, 10:20], label[10:20, 20:30], label[40:50, 40:50] = 7, 8, 20
    fp = fingerprint(write_pairs(tmp_path, [grey(label)], [label]))
    assert fp.labels.kind == "instances"
    assert fp.num_classes == 2
    assert fp.objects is not None
    assert fp.objects.per_image == 3
    assert fp.objects.near_fraction == pytest.approx(2 / 3)
    # As training sees it: the contact between 7 and 8 becomes background (2 columns of 10 pixels).
    assert fp.classes[1].frequency == pytest.approx((300 - 20) / 3600)


def test_binary_and_class_labels(tmp_path: Path) -> None:
    mask = np.zeros((40, 50), np.uint8)
    mask[5:15, 5:25] = 1  # 200 pixels
    fp = fingerprint(write_pairs(tmp_path / "binary", [grey(mask)], [mask]))
    assert fp.labels == LabelConfig(kind="binary", foreground=1)
    assert fp.num_classes == 2
    assert fp.classes[1].frequency == pytest.approx(200 / 2000)
    assert fp.foreground_fraction == pytest.approx(0.1)

    first, second = np.zeros((40, 50), np.uint8), np.zeros((40, 50), np.uint8)
    first[:10, :10], first[20:30, :] = 1, 2  # 100 and 500 pixels
    second[:20, :20] = 1  # 400 pixels
    fp = fingerprint(write_pairs(tmp_path / "classes", [grey(first), grey(second)], [first, second]))
    assert fp.labels.kind == "classes"
    assert fp.num_classes == 3
    assert [c.frequency for c in fp.classes] == pytest.approx([3000 / 4000, 500 / 4000, 500 / 4000])
    assert fp.objects is not None
    assert fp.objects.per_image == 1.5  # two objects in the first image, one in the second


def test_thin_lines_and_blobs(tmp_path: Path) -> None:
    label = np.zeros((160, 160), np.uint8)
    for r0, c0, r1, c1 in [(5, 5, 60, 150), (60, 5, 10, 140), (20, 30, 20, 130), (5, 80, 70, 90)]:
        label[line(r0, c0, r1, c1)] = 1
    label[discs([(110, 30), (115, 80), (110, 130)], radius=15, size=160) > 0] = 2
    bars = np.zeros((40, 100), np.uint8)
    bars[10:15, 10:90] = 255
    fp = fingerprint(write_pairs(tmp_path / "lines", [grey(label)], [label]))
    assert fp.classes[1].skeleton_ratio > 0.8
    assert fp.classes[2].skeleton_ratio < 0.2
    assert fp.classes[1].thickness == pytest.approx(1, abs=0.5)
    fp = fingerprint(write_pairs(tmp_path / "bars", [grey(bars)], [bars]))
    assert fp.classes[1].thickness == pytest.approx(5, abs=0.5)


def test_colour_channels(tmp_path: Path) -> None:
    label = discs([(30, 30)], size=64)
    rgb_grey = np.repeat(grey(label)[..., None], 3, axis=2)
    rgb_grey[0, :3, 0] += 1  # a grey level off here and there is still grey
    fp = fingerprint(write_pairs(tmp_path / "grey", [rgb_grey], [label]))
    assert (fp.channel_kind, fp.stored_channels, fp.channels) == ("grey-as-rgb", 3, 1)
    assert len(fp.intensity) == 1
    colour = rgb_grey.copy()
    colour[..., 0] = 255 - colour[..., 0]
    fp = fingerprint(write_pairs(tmp_path / "colour", [colour], [label]))
    assert (fp.channel_kind, fp.stored_channels, fp.channels) == ("rgb", 3, 3)
    assert len(fp.intensity) == 3
    fp = fingerprint(write_pairs(tmp_path / "plain", [grey(label)], [label]))
    assert (fp.channel_kind, fp.stored_channels, fp.channels) == ("grey", 1, 1)


def test_nifti_volume_spacing(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    shape = (24, 20, 8)
    label = np.zeros(shape, np.uint8)
    label[4:14, 5:15, 2:6] = 1
    image = (50 + 100 * label).astype(np.int16)
    pair = (tmp_path / "case.nii.gz", tmp_path / "case_label.nii.gz")
    for path, data in zip(pair, (image, label), strict=True):
        volume = nib.Nifti1Image(data, np.diag([1.0, 1.0, 4.0, 1.0]))
        nib.save(volume, path)
    fp = fingerprint([pair])
    assert fp.spatial_dims == 3
    assert fp.shapes == (shape,)
    assert fp.spacing == (1.0, 1.0, 4.0)  # the array's axis order, as the header's zooms
    assert fp.anisotropy == 4
    assert fp.objects is not None
    assert fp.objects.diameter == pytest.approx((6 * 400 / math.pi) ** (1 / 3))
    assert fp.classes[1].frequency == pytest.approx(400 / label.size)


def test_ignored_pixels_left_out(tmp_path: Path) -> None:
    label = np.zeros((20, 20), np.uint8)
    label[:5, :] = 255  # 100 unannotated pixels
    label[10:15, 10:15] = 1  # 25 pixels of class 1 among 300 annotated
    fp = fingerprint(write_pairs(tmp_path, [grey(label)], [label]), labels=LabelConfig(kind="classes", ignore=255))
    assert fp.labels == LabelConfig(kind="classes", ignore=255)
    assert [c.frequency for c in fp.classes] == pytest.approx([275 / 300, 25 / 300])


def test_foreground_and_background_means(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = [discs([(20, 20)], radius=8, size=48, value=1), discs([(30, 25)], radius=5, size=48, value=1)]
    images = [rng.integers(0, 256, (48, 48)).astype(np.uint8) for _ in labels]
    fp = fingerprint(write_pairs(tmp_path, images, labels))
    pixels, classes = np.concatenate([x.ravel() for x in images]), np.concatenate([x.ravel() for x in labels])
    (stats,) = fp.intensity
    assert stats.foreground_mean == pytest.approx(pixels[classes == 1].mean())
    assert stats.background_mean == pytest.approx(pixels[classes == 0].mean())
    assert stats.mean == pytest.approx(pixels.mean())
    assert stats.p50 == pytest.approx(np.percentile(pixels, 50))


def test_report_and_dict(tmp_path: Path) -> None:
    labels = [discs([(30, 30), (30, 90)]), discs([(60, 60)], size=100)]
    fp = fingerprint(write_pairs(tmp_path, [grey(x) for x in labels], labels))
    text = fp.report()
    assert "2 training pairs" in text
    assert "shape 114x114 (min 100x100, max 128x128)" in text
    assert "diameter 20.1 px" in text
    data = fp.to_dict()
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert data["labels"] == {"kind": "binary", "foreground": 255, "ignore": None}
    assert data["shapes"] == [[128, 128], [100, 100]]


def test_mismatched_shapes_name_the_label(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path, [grey(discs([(30, 30)]))], [discs([(30, 30)], size=100)])
    with pytest.raises(BiounetError, match="does not match") as info:
        fingerprint(pairs)
    assert info.value.path == str(pairs[0][1])


def test_no_pairs() -> None:
    with pytest.raises(BiounetError, match="no training pairs"):
        fingerprint([])
