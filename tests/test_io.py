"""Image reading and writing: formats, channel layouts, dtypes, and one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from biounet.errors import BiounetError
from biounet.io.channels import can_match, match_channels
from biounet.io.readers import probe_image, read_image
from biounet.io.writers import write_mask, write_probabilities
from biounet.models.normalization import Normalization


@pytest.mark.parametrize(("name", "array", "expected_shape"), [
    ("gray8.png", np.random.randint(0, 255, (20, 30), np.uint8), (1, 20, 30)),
    ("gray16.png", np.random.randint(0, 65535, (20, 30), np.uint16), (1, 20, 30)),
    ("rgb.png", np.random.randint(0, 255, (20, 30, 3), np.uint8), (3, 20, 30)),
    ("rgba.png", np.random.randint(0, 255, (20, 30, 4), np.uint8), (4, 20, 30)),
])
def test_png_round_trip(tmp_path: Path, name: str, array: np.ndarray, expected_shape: tuple[int, ...]) -> None:
    path = tmp_path / name
    iio.imwrite(path, array)
    image = read_image(path)
    assert image.shape == expected_shape and image.dtype == array.dtype
    assert np.array_equal(np.moveaxis(image, 0, -1).squeeze(), array)
    assert probe_image(path).shape == expected_shape


def test_jpeg_rgb(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    iio.imwrite(path, np.full((16, 24, 3), 128, np.uint8))
    assert read_image(path).shape == (3, 16, 24)


@pytest.mark.parametrize(("array", "kwargs", "expected_shape"), [
    (np.random.rand(20, 30).astype(np.float32), {}, (1, 20, 30)),
    (np.random.rand(3, 20, 30).astype(np.float32), {"metadata": {"axes": "CYX"}, "photometric": "minisblack"},
     (3, 20, 30)),
    (np.random.randint(0, 255, (20, 30, 3), np.uint8), {"photometric": "rgb"}, (3, 20, 30)),
    (np.random.randint(0, 4000, (2, 20, 30), np.uint16), {"photometric": "minisblack"}, (2, 20, 30)),
])
def test_tiff_channel_layouts(tmp_path: Path, array: np.ndarray, kwargs: dict[str, object],
                              expected_shape: tuple[int, ...]) -> None:
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, array, **kwargs)  # type: ignore[arg-type]
    image = read_image(path)
    assert image.shape == expected_shape and image.dtype == array.dtype
    assert probe_image(path).shape == expected_shape
    if array.shape[-1] == 3:
        assert np.array_equal(image, np.moveaxis(array, -1, 0))
    else:
        assert np.array_equal(image.reshape(array.shape), array)


def test_real_isbi_slice(isbi_image: Path) -> None:
    image = read_image(isbi_image)
    assert image.shape == (1, 512, 512) and image.dtype == np.uint8


def test_channel_matching() -> None:
    rgb = np.zeros((3, 4, 5), np.uint8)
    rgb[1] = 100
    gray = match_channels(rgb, 1)
    assert gray.shape == (1, 4, 5) and np.allclose(gray, 58.7)
    assert match_channels(np.zeros((4, 4, 5)), 3).shape == (3, 4, 5)
    # Grey to a colour model: the grey-as-RGB a fluorescence image becomes when saved as RGB.
    grey = np.arange(20, dtype=np.uint16).reshape(1, 4, 5)
    assert np.array_equal(match_channels(grey, 3), np.concatenate([grey] * 3))
    with pytest.raises(BiounetError, match="2 channel"):
        match_channels(np.zeros((2, 4, 5)), 3, "two.tif")


@pytest.mark.parametrize("have", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("want", [1, 2, 3, 4])
def test_channel_check_is_the_adaptation(have: int, want: int) -> None:
    """The early check (``can_match``, what ``biounet predict`` checks before reading a file) accepts exactly
    the channel counts that ``match_channels`` adapts, to the model's count."""
    image = np.ones((have, 4, 5), np.float32)
    if can_match(have, want):
        assert match_channels(image, want).shape == (want, 4, 5)
    else:
        with pytest.raises(BiounetError):
            match_channels(image, want)
    assert can_match(have, want) == (have == want or (have, want) in {(3, 1), (4, 1), (4, 3), (1, 3)})


@pytest.mark.parametrize(("content", "name", "message"), [
    (None, "missing.png", "file not found"),
    (b"not an image at all", "broken.png", "cannot read image"),
    (b"II*\x00garbage", "broken.tif", "cannot read image"),
    (b"hello", "notes.txt", "unsupported file type"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path: Path, content: bytes | None, name: str,
                                                        message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    for reader in (read_image, probe_image):
        with pytest.raises(BiounetError, match=message) as info:
            reader(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_nan_images_are_rejected(tmp_path: Path) -> None:
    array = np.ones((10, 10), np.float32)
    array[2, 2] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", array)
    with pytest.raises(BiounetError, match="NaN"):
        read_image(tmp_path / "nan.tif")


def test_volumes_are_not_2d_images(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "vol.tif", np.zeros((5, 8, 9, 10), np.uint8))
    with pytest.raises(BiounetError, match="as a 2D image"):
        read_image(tmp_path / "vol.tif")


def test_probabilities_round_trip_as_float32_tiff(tmp_path: Path) -> None:
    probs = np.random.rand(3, 17, 19).astype(np.float32)
    write_probabilities(tmp_path / "p_prob.tif", probs)
    assert np.array_equal(read_image(tmp_path / "p_prob.tif"), probs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p_prob.tif"]  # no temporary left behind


def test_masks_are_png_or_16_bit_tiff(tmp_path: Path) -> None:
    small = np.random.randint(0, 3, (10, 12))
    assert write_mask(tmp_path / "a_mask.png", small) == tmp_path / "a_mask.png"
    assert np.array_equal(iio.imread(tmp_path / "a_mask.png"), small)
    large = np.random.randint(0, 300, (10, 12))
    written = write_mask(tmp_path / "b_mask.png", large)
    assert written == tmp_path / "b_mask.tif" and np.array_equal(tifffile.imread(written), large)


def test_percentile_normalization() -> None:
    image = np.linspace(0, 1000, 10001, dtype=np.float32).reshape(1, 1, -1)
    out = Normalization("percentile", 1.0, 99.0)(image)
    assert out.dtype == np.float32
    assert np.percentile(out, 1) == pytest.approx(0.0, abs=1e-4)
    assert np.percentile(out, 99) == pytest.approx(1.0, abs=1e-4)


def test_zscore_is_per_channel_and_constant_channels_are_safe() -> None:
    image = np.stack([np.random.rand(50, 50) * 7 + 3, np.full((50, 50), 5.0)])
    out = Normalization("zscore")(image)
    assert out[0].mean() == pytest.approx(0, abs=1e-5) and out[0].std() == pytest.approx(1, abs=1e-4)
    assert np.all(out[1] == 0)


def test_statistics_of_huge_images_come_from_a_subsample() -> None:
    image = np.random.rand(1, 4096, 4096).astype(np.float32)
    offset, scale = Normalization("zscore").fit(image)
    assert offset[0] == pytest.approx(0.5, abs=0.01) and scale[0] == pytest.approx(np.sqrt(1 / 12), abs=0.01)
