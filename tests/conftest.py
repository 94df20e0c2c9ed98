from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Qt draws off screen; napari's OpenGL canvas still gets its context from the X server that pytest-xvfb
# starts (Qt's xcb platform would need more system libraries than a bare machine has).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO / "data" / "isbi2012"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips the tests that need napari's viewer at collection when there is no X server (pytest-xvfb sets
    ``DISPLAY`` before collection when it finds Xvfb): skipped from inside a fixture instead, napari's
    ``make_napari_viewer`` fails at teardown (``'Function' object has no attribute 'rep_call'``)."""
    if os.environ.get("DISPLAY"):
        return
    skip = pytest.mark.skip(reason="napari's canvas needs an X server: install Xvfb (apt install xvfb), which "
                                   "pytest-xvfb starts")
    for item in items:
        if "make_napari_viewer" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def isbi_image() -> Path:
    return ISBI / "images" / "00.png"


def write_disc_dataset(folder: Path, count: int, size: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic microscopy: bright noisy discs on a dark background; labels 255 inside discs, else 0."""
    import imageio.v3 as iio

    rng = np.random.default_rng(seed)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        label = np.zeros((size, size), bool)
        for _ in range(4):
            cy, cx, r = rng.integers(8, size - 8), rng.integers(8, size - 8), rng.integers(4, 9)
            label |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        image = 60 + 120 * label + rng.normal(0, 20, (size, size))
        iio.imwrite(images / f"{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
        iio.imwrite(labels / f"{i:02d}.png", (label * 255).astype(np.uint8))
    return images, labels


def write_lines_dataset(folder: Path, count: int, size: int = 128, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic thin structures in colour: a few dark-red curvilinear lines, 1-2 px wide, on a textured,
    colour-varying background (foreground about 3 % of the pixels); labels 0/1."""
    import imageio.v3 as iio
    from scipy import ndimage
    from skimage.draw import line_aa

    rng = np.random.default_rng(seed)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(count):
        label = np.zeros((size, size), bool)
        for _ in range(3):
            # A random walk with smooth turns, drawn segment by segment.
            y, x, angle = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0, 2 * np.pi)
            for _ in range(12):
                angle += rng.normal(0, 0.4)
                ny, nx = y + 8 * np.sin(angle), x + 8 * np.cos(angle)
                rr, cc, _ = line_aa(int(y), int(x), int(np.clip(ny, 0, size - 1)), int(np.clip(nx, 0, size - 1)))
                keep = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
                label[rr[keep], cc[keep]] = True
                y, x = float(np.clip(ny, 0, size - 1)), float(np.clip(nx, 0, size - 1))
        texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size, 3)), (4, 4, 0)) * 60
        tint = rng.uniform(90, 170, 3)
        image = tint + texture + rng.normal(0, 8, (size, size, 3))
        # Blurred ink and noise over it: the line's edge pixels are ambiguous, as in a real image.
        ink = 0.6 * np.clip(ndimage.gaussian_filter(label.astype(float), 0.8) * 2.5, 0, 1)[..., None]
        image = image * (1 - ink) + np.array([110.0, 20.0, 20.0]) * ink + rng.normal(0, 12, (size, size, 3))
        iio.imwrite(images / f"{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
        iio.imwrite(labels / f"{i:02d}.png", label.astype(np.uint8))
    return images, labels


def write_nuclei_dataset(folder: Path, count: int, size: int = 96, seed: int = 0) -> tuple[Path, Path]:
    """Synthetic nuclei that touch: bright noisy discs in pairs that share a border, darker where they meet;
    labels are uint16 instance ids (0 = background) with gaps between the pairs' ids."""
    import imageio.v3 as iio

    rng = np.random.default_rng(seed)
    images, labels = folder / "images", folder / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        label = np.zeros((size, size), np.uint16)
        distance = np.full((size, size), np.inf)
        next_id = 1
        for _ in range(3):
            cy, cx, r = rng.integers(14, size - 14), rng.integers(20, size - 20), rng.integers(6, 9)
            for dx in (-r + 1, r - 1):  # two discs whose centres are 2r - 2 apart: they touch
                d = np.sqrt((yy - cy) ** 2 + (xx - cx - dx) ** 2)
                inside = (d <= r) & (d < distance)
                label[inside] = next_id
                distance = np.where(inside, d, distance)
                next_id += 1
            next_id += 7  # ids with gaps, as instance tools write them (few consecutive ids read as classes)
        # Brightness falls off towards each nucleus' edge, so touching nuclei show a darker seam.
        image = 40 + 160 * np.clip(1.2 - distance / 9, 0, 1) * (label > 0) + rng.normal(0, 10, (size, size))
        iio.imwrite(images / f"{i:02d}.png", np.clip(image, 0, 255).astype(np.uint8))
        iio.imwrite(labels / f"{i:02d}.png", label)
    return images, labels


def discs(diameter: float, shape: tuple[int, int] = (256, 256), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fluorescence-like grey image of separate bright discs of one diameter, and their ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    ids = np.zeros(shape, np.int32)
    radius, count = diameter / 2, 0
    for _ in range(2000):
        cy, cx = rng.uniform(radius + 2, shape[0] - radius - 2), rng.uniform(radius + 2, shape[1] - radius - 2)
        d = np.hypot(yy - cy, xx - cx)
        if (ids[d <= radius + max(3.0, radius / 2)] > 0).any():
            continue
        count += 1
        ids[d <= radius] = count
        if count == 40:
            break
    image = 20 + 180 * (ids > 0) + rng.normal(0, 8, shape)
    return np.clip(image, 0, 255).astype(np.uint8)[None], ids
