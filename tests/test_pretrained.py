"""The shipped model: found by name, and actually segments held-out ISBI 2012 slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biounet.cli.main import main
from biounet.data.labels import read_label
from biounet.errors import BiounetError
from biounet.io.readers import read_image
from biounet.metrics.suite import pair_from_arrays, score
from biounet.pretrained import available, resolve_model, sample_image

ISBI = Path(__file__).resolve().parents[1] / "data" / "isbi2012"
DSB = Path(__file__).resolve().parent / "data" / "dsb2018"


def test_names_resolve_to_shipped_checkpoints_and_paths_win(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert available()[0] == "nuclei" and "isbi2012-membranes" in available()  # the default first
    assert resolve_model("isbi2012-membranes").name == "isbi2012-membranes.pt"
    assert resolve_model("dsb2018-nuclei") == resolve_model("nuclei")  # its former name still works
    assert sample_image("dsb2018-nuclei") == sample_image("nuclei")
    own = tmp_path / "isbi2012-membranes"
    own.write_bytes(b"x")
    assert resolve_model(own) == own
    # An output folder named like a shipped model (`--out nuclei/`) does not hide the model.
    (tmp_path / "nuclei").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("nuclei").name == "nuclei.pt" and resolve_model("nuclei").is_file()
    with pytest.raises(BiounetError, match="not a shipped model: nuclei, isbi2012-membranes"):
        resolve_model(tmp_path / "nope.pt")


def test_shipped_model_segments_a_held_out_slice(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["predict", "--model", "isbi2012-membranes", str(ISBI / "images" / "27.png"), "--out", str(out)]) == 0
    probs = read_image(out / "27_prob.tif")
    truth = (read_image(ISBI / "labels" / "27.png")[0] == 255).astype(np.int64)
    scores = score(pair_from_arrays(probs, truth), ["dice", "rand_error"])
    # Slice 27 was never seen in training or checkpoint selection.
    assert scores["dice"] > 0.9 and scores["rand_error"] < 0.15


def test_shipped_nuclei_model_separates_touching_nuclei_of_a_held_out_image(tmp_path: Path) -> None:
    from scipy import ndimage

    from biounet.metrics.instances import matching_dataset

    out = tmp_path / "out"
    image = tmp_path / "be269669.png"
    image.write_bytes((DSB / "image_be269669.png").read_bytes())
    assert main(["predict", "--model", "nuclei", str(image), "--out", str(out), "--object-size", "none"]) == 0
    truth = read_label(DSB / "mask_be269669.png")
    found = read_label(out / "be269669_instances.tif")
    accuracy = matching_dataset([found], [truth], (0.5,))[0].accuracy
    # By default the model measures the nuclei (10 px, below the sizes it knows best) and predicts the image
    # enlarged to its own size: a little worse on this image (0.763), far better on images of larger nuclei.
    assert main(["predict", "--model", "nuclei", str(image), "--out", str(tmp_path / "auto")]) == 0
    default = matching_dataset([read_label(tmp_path / "auto" / "be269669_instances.tif")], [truth], (0.5,))[0]
    assert default.accuracy > 0.7
    # A test-split image (never seen in training or tuning) with 33 nuclei, several touching: even the
    # connected components of the TRUE foreground mask reach only 26 / 34 = 0.765.
    perfect_mask = matching_dataset([ndimage.label(truth > 0)[0]], [truth], (0.5,))[0].accuracy
    assert perfect_mask == pytest.approx(26 / 34)
    assert accuracy > 0.8 > perfect_mask
    rows = (out / "be269669_objects.csv").read_text().splitlines()
    assert len(rows) == 1 + found.max() and rows[0].startswith("label,area_px,area,")


def test_instances_are_seamless_across_tiles() -> None:
    from biounet.infer import predict
    from biounet.infer.instances import instances_from_probabilities
    from biounet.io.channels import match_channels
    from biounet.models.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(resolve_model("nuclei"))
    image = match_channels(read_image(DSB / "image_be269669.png"), 3)
    whole = instances_from_probabilities(predict(checkpoint, image, tile=700), checkpoint.instances)
    # Output tiles of 36 px: most nuclei (8-20 px) cross a tile border, several cross two.
    tiled = instances_from_probabilities(predict(checkpoint, image, tile=124), checkpoint.instances)
    assert whole.max() >= 25
    np.testing.assert_array_equal(tiled, whole)
