from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO / "data" / "isbi2012"


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
