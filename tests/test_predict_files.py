"""``predict_files``, the library's files -> outputs workflow: the same outputs as ``biounet predict``."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.infer.files import Written, predict_files
from biounet.infer.predict import TileOptions
from biounet.models import UNet, UNetConfig
from biounet.models.checkpoint import save_checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.normalization import Normalization


@pytest.fixture
def instance_model(tmp_path: Path) -> Path:
    path = tmp_path / "instance.pt"
    save_checkpoint(path, UNet(UNetConfig(out_channels=3, base_channels=4, depth=2)), Normalization("percentile"),
                    instances=InstanceParams(seed=0.2, foreground=0.6))
    return path


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "cells.png"
    iio.imwrite(path, (np.random.default_rng(3).random((40, 52)) * 255).astype(np.uint8))
    return path


def test_predict_files_writes_the_bytes_biounet_predict_writes(instance_model: Path, image: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "--model", str(instance_model), str(image), "--out", str(tmp_path / "cli"),
                 "--tile", "44"]) == 0
    printed = capsys.readouterr().out
    seen: list[Written] = []
    written = predict_files(instance_model, [image], tmp_path / "lib", options=TileOptions(tile=44),
                            progress=False, on_written=seen.append)
    names = ["cells_prob.tif", "cells_mask.png", "cells_instances.tif", "cells_objects.csv"]
    assert seen == written == [Written(image, tuple(tmp_path / "lib" / n for n in names))]
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / "lib" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    # The CLI prints what predict_files returns.
    assert f"{image} -> {', '.join(str(tmp_path / 'cli' / n) for n in names)}" in printed


def test_predict_files_zarr_reports_blocks_and_objects(instance_model: Path, image: Path, tmp_path: Path) -> None:
    [written] = predict_files(instance_model, [str(image)], tmp_path / "out.zarr", options=TileOptions(tile=44),
                              out_format="zarr", block=32, progress=False)
    assert written.paths == (tmp_path / "out.zarr",) and written.blocks == (4, 4)
    assert written.objects is not None and written.skipped == ("objects",)


def test_predict_files_checks_output_names_before_writing(instance_model: Path, image: Path, tmp_path: Path) -> None:
    with pytest.raises(BiounetError, match="outputs must be some of"):
        predict_files(instance_model, [image], tmp_path / "out", outputs=["prob", "blobs"])
    assert not (tmp_path / "out").exists()
