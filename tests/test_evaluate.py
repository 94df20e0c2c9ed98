"""``biounet evaluate`` and the named-metric suite shared with validation and the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from biounet.cli.main import main
from biounet.errors import BiounetError
from biounet.metrics.evaluate import evaluate
from biounet.metrics.pairs import pair_by_stem
from biounet.metrics.suite import pair_from_arrays, score


def test_pairs_by_stem_prefer_probability_maps(tmp_path: Path) -> None:
    preds = [tmp_path / "a_mask.png", tmp_path / "a_prob.tif", tmp_path / "b.png"]
    truths = [tmp_path / "a.png", tmp_path / "b.png"]
    assert pair_by_stem(preds, truths) == [(preds[1], truths[0]), (preds[2], truths[1])]
    with pytest.raises(BiounetError, match=r"c\.png: no prediction with this stem"):
        pair_by_stem(preds, [tmp_path / "c.png"])


def test_suite_on_a_hand_made_case() -> None:
    truth = np.zeros((6, 6), np.int64)
    truth[:, :3] = 1                                  # 18 cell pixels
    pred = np.zeros((6, 6), np.int64)
    pred[:, :2] = 1                                   # 12 pixels, all inside the truth
    scores = score(pair_from_arrays(pred, truth), ["dice", "iou", "pixel_error", "rand_error"])
    assert scores["dice"] == pytest.approx(2 * 12 / 30)
    assert scores["iou"] == pytest.approx(12 / 18)
    # Pixel F1 of the cells: precision 1, recall 12/18 -> F1 = 0.8.
    assert scores["pixel_error"] == pytest.approx(1 - 0.8)
    # Rand: one truth segment of 18 px; predicted: one segment of 12 and 6 singletons.
    s_ab, s_b, s_a = 12**2 + 6, 12**2 + 6, 18**2
    precision, recall = s_ab / s_b, s_ab / s_a
    assert scores["rand_error"] == pytest.approx(1 - 2 * precision * recall / (precision + recall))


def test_probability_maps_and_masks_agree_for_hard_probabilities() -> None:
    truth = (np.random.rand(20, 20) > 0.5).astype(np.int64)
    mask = (np.random.rand(20, 20) > 0.5).astype(np.int64)
    probs = np.stack([1.0 - mask, mask]).astype(np.float32)
    names = ["dice", "iou", "pixel_error", "rand_error"]
    assert score(pair_from_arrays(probs, truth), names) == pytest.approx(score(pair_from_arrays(mask, truth), names))


def write_case(tmp_path: Path) -> tuple[Path, Path]:
    truths, preds = tmp_path / "truth", tmp_path / "pred"
    truths.mkdir()
    preds.mkdir()
    for i in range(3):
        label = np.zeros((40, 40), np.uint8)
        label[5:30, 5 + i:30] = 255                   # ISBI-style 0/255 truth
        iio.imwrite(truths / f"{i:02d}.png", label)
        prob = np.zeros((2, 40, 40), np.float32)
        prob[1] = (label > 0) * 0.9 + 0.05
        prob[0] = 1 - prob[1]
        tifffile.imwrite(preds / f"{i:02d}_prob.tif", prob, photometric="minisblack")
        iio.imwrite(preds / f"{i:02d}_mask.png", (label > 0).astype(np.uint8))
    return preds, truths


def test_cli_scores_perfect_predictions_perfectly_and_writes_json_csv(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    preds, truths = write_case(tmp_path)
    names = "dice,iou,pixel_error,rand_error,v_rand,v_info,warping_error"
    code = main(["evaluate", "--pred", str(preds), "--truth", str(truths), "--metrics", names,
                 "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["image", *names.split(",")] and out[-2].startswith("mean")
    assert out[-1] == "truth: binary labels (0 = background, 255 = foreground)"
    data = json.loads((tmp_path / "s.json").read_text())
    assert [row["image"] for row in data["images"]] == ["00", "01", "02"]
    assert all(row["prediction"].endswith("_prob.tif") for row in data["images"])
    mean = data["mean"]
    assert mean["dice"] == 1.0 and mean["iou"] == 1.0 and mean["pixel_error"] == 0.0
    assert mean["rand_error"] == 0.0 and mean["v_rand"] == 1.0 and mean["warping_error"] == 0.0
    assert (tmp_path / "s.csv").read_text().splitlines()[-1].startswith("mean,,,1.0,1.0")


@pytest.mark.parametrize(("args", "message"), [
    (["--metrics", "dice,accuracy"], "unknown metrics accuracy"),
    (["--truth-kind", "classes", "--metrics", "dice"], "label values|cannot score|classes"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                 message: str) -> None:
    preds, truths = write_case(tmp_path)
    code = main(["evaluate", "--pred", str(preds), "--truth", str(truths), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert re.search(message, err[0])


def test_instance_metrics_on_a_real_dsb2018_mask(tmp_path: Path) -> None:
    truth = iio.imread(Path(__file__).parent / "data" / "dsb2018" / "mask_0c6507d4.png").astype(np.int64)
    ids = [i for i in np.unique(truth) if i]
    pred = truth.copy()
    pred[pred == ids[0]] = 0                                  # one nucleus missed: a false negative
    pred[pred == ids[1]] = 1000                               # renumbered: ids do not matter
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    iio.imwrite(tmp_path / "t" / "x.png", truth.astype(np.uint16))
    iio.imwrite(tmp_path / "p" / "x.png", pred.astype(np.uint16))
    code = main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--truth-kind",
                 "instances", "--metrics", "ap50,f1_50,pq,dsb2018", "--json", str(tmp_path / "s.json")])
    assert code == 0
    mean = json.loads((tmp_path / "s.json").read_text())["mean"]
    n = len(ids)
    assert mean["ap50"] == pytest.approx((n - 1) / n)         # TP = n - 1, FP = 0, FN = 1
    assert mean["f1_50"] == pytest.approx(2 * (n - 1) / (2 * (n - 1) + 1))
    assert mean["pq"] == pytest.approx((n - 1) / (n - 1 + 0.5))  # matched IoUs are all 1
    assert mean["dsb2018"] == pytest.approx((n - 1) / n)


def test_surface_metrics_follow_spacing() -> None:
    truth = np.zeros((20, 20), np.int64)
    truth[5:15, 5:15] = 1
    pred = np.roll(truth, 2, axis=0)                          # shifted by 2 rows
    names = ["hd95", "asd", "surface_dice"]
    unit = score(pair_from_arrays(pred, truth), names)
    scaled = score(pair_from_arrays(pred, truth, spacing=(3.0, 1.0)), names)
    assert unit["hd95"] == pytest.approx(2.0) and scaled["hd95"] == pytest.approx(6.0)
    assert 0 < unit["surface_dice"] < 1


def evaluate_one(tmp_path: Path, truth: np.ndarray, prediction: np.ndarray, *args: str) -> dict[str, Any]:
    """Runs ``biounet evaluate`` on one truth (PNG or TIFF) and prediction; returns the JSON report."""
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "p").mkdir(exist_ok=True)
    if truth.dtype == np.uint8:
        iio.imwrite(tmp_path / "t" / "x.png", truth)
    else:
        tifffile.imwrite(tmp_path / "t" / "x.tif", truth)
    name = "x_prob.tif" if prediction.dtype.kind == "f" else "x_mask.tif"
    tifffile.imwrite(tmp_path / "p" / name, prediction, photometric="minisblack")
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), *args,
                 "--json", str(tmp_path / "s.json")]) == 0
    report: dict[str, Any] = json.loads((tmp_path / "s.json").read_text())
    return report


def sparse_truth() -> np.ndarray:
    """A 0/1 disc annotated on a band of rows only; 255 marks the unannotated rest."""
    yy, xx = np.indices((40, 40))
    truth = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 100).astype(np.uint8)
    truth[:15] = 255
    truth[26:] = 255
    return truth


def test_sparse_truth_with_ignore_scores_an_empty_prediction_zero(tmp_path: Path) -> None:
    truth = sparse_truth()
    empty = np.zeros((40, 40), np.uint8)
    report = evaluate_one(tmp_path, truth, empty, "--ignore", "255", "--metrics", "dice,iou")
    assert report["truth"] == {"kind": "binary", "foreground": 1, "ignore": 255}
    assert report["mean"] == {"dice": 0.0, "iou": 0.0}


def test_sparse_truth_with_ignore_leaves_unannotated_pixels_out(tmp_path: Path) -> None:
    truth = sparse_truth()
    # Right on the annotated band, anything at all (here: all foreground) where nothing was annotated.
    prediction = np.where(truth == 255, 1, truth).astype(np.uint8)
    report = evaluate_one(tmp_path, truth, prediction, "--ignore", "255", "--metrics", "dice")
    assert report["mean"] == {"dice": 1.0}


def test_instance_truth_against_a_perfect_mask_scores_one(tmp_path: Path) -> None:
    yy, xx = np.indices((60, 60))
    truth = np.zeros((60, 60), np.uint16)
    for i, (y, x) in enumerate([(12, 12), (12, 45), (45, 12), (45, 45), (30, 30)], start=1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 <= 36] = i
    mask = (truth > 0).astype(np.uint8)
    report = evaluate_one(tmp_path, truth, mask, "--metrics", "dice,iou,ap50")
    assert report["truth"]["kind"] == "instances"
    assert report["mean"] == {"dice": 1.0, "iou": 1.0, "ap50": 1.0}


def test_a_class_map_missing_a_class_is_read_as_classes_of_the_probability_map(tmp_path: Path) -> None:
    truth = np.zeros((30, 30), np.uint8)
    truth[5:20, 5:20] = 2                                                    # class 1 is absent
    probabilities = np.eye(3, dtype=np.float32)[truth].transpose(2, 0, 1)    # a perfect 3-class map
    report = evaluate_one(tmp_path, truth, probabilities, "--metrics", "dice")
    assert report["truth"]["kind"] == "classes"
    assert report["images"][0]["dice_2"] == 1.0


def test_foreground_picks_one_value_of_a_binary_truth(tmp_path: Path) -> None:
    truth = np.zeros((30, 30), np.uint8)
    truth[2:10, 2:10] = 1
    truth[15:25, 15:25] = 2
    mask = (truth == 2).astype(np.uint8)
    report = evaluate_one(tmp_path, truth, mask, "--truth-kind", "binary", "--foreground", "2", "--metrics", "dice")
    assert report["mean"] == {"dice": 1.0}


def test_a_truth_that_does_not_fit_the_kind_is_one_line_naming_it(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    truth = np.array([[0, 1, 2]] * 3, np.uint8)
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    iio.imwrite(tmp_path / "t" / "x.png", truth)
    iio.imwrite(tmp_path / "p" / "x.png", truth)
    code = main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--truth-kind",
                 "binary", "--metrics", "dice"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "x.png: label values [0, 1, 2] do not fit binary labels" in err[0]


def test_isbi_stack_scores_all_slices_at_one_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from biounet.metrics.isbi import isbi_challenge_scores

    preds, truths = write_case(tmp_path)
    # Blur one slice's probabilities so that the best threshold is not the same for every slice alone.
    noisy = tifffile.imread(preds / "01_prob.tif")
    noisy[1] = np.clip(noisy[1] * 0.5 + np.random.default_rng(0).uniform(0, 0.5, noisy[1].shape), 0, 1)
    noisy[0] = 1 - noisy[1]
    tifffile.imwrite(preds / "01_prob.tif", noisy, photometric="minisblack")
    code = main(["evaluate", "--pred", str(preds), "--truth", str(truths), "--metrics", "rand_error,v_rand",
                 "--isbi-stack", "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("stack of 3 slices, one threshold for all (ISBI 2012): rand_error ")
    stack = json.loads((tmp_path / "s.json").read_text())["stack"]
    probabilities = [tifffile.imread(preds / f"{i:02d}_prob.tif")[1] for i in range(3)]
    labels = [(iio.imread(truths / f"{i:02d}.png") > 0).astype(np.int64) for i in range(3)]
    expected = isbi_challenge_scores(probabilities, labels, warping=False)
    assert stack["slices"] == 3
    for name in ("rand_error", "v_rand", "v_info", "pixel_error"):
        assert stack[name] == pytest.approx(getattr(expected, name)), name
        assert stack[f"{name}_threshold"] == pytest.approx(getattr(expected, f"{name}_threshold")), name
    assert 0 < stack["pixel_error"] < 1
    csv_rows = (tmp_path / "s.csv").read_text().splitlines()
    assert csv_rows[0].split(",")[:6] == ["image", "prediction", "truth", "rand_error", "v_rand", "slices"]
    assert csv_rows[-1].startswith(f"stack,,,{stack['rand_error']},{stack['v_rand']},3,")


def test_metrics_and_evaluation_import_no_torch() -> None:
    code = 'import biounet.metrics, biounet.metrics.evaluate, sys; assert "torch" not in sys.modules'
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str, str]:
    """``biounet evaluate ARGS --json --csv``: the JSON report, the printed text and the CSV."""
    capsys.readouterr()
    assert main(["evaluate", *args, "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")]) == 0
    report: dict[str, Any] = json.loads((tmp_path / "s.json").read_text())
    return report, capsys.readouterr().out, (tmp_path / "s.csv").read_bytes().decode()


def test_evaluate_function_gives_the_cli_report_with_the_isbi_stack(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    preds, truths = write_case(tmp_path)
    noisy = tifffile.imread(preds / "01_prob.tif")
    noisy[1] = np.clip(noisy[1] * 0.5 + np.random.default_rng(1).uniform(0, 0.5, noisy[1].shape), 0, 1)
    noisy[0] = 1 - noisy[1]
    tifffile.imwrite(preds / "01_prob.tif", noisy, photometric="minisblack")
    names = ["dice", "iou", "pixel_error", "rand_error", "v_rand", "v_info", "warping_splits_merges"]
    report, out, csv = cli_report(tmp_path, capsys, "--pred", str(preds), "--truth", str(truths), "--metrics",
                                  ",".join(names), "--isbi-stack")
    evaluation = evaluate(preds, [truths], metrics=names, isbi_stack=True)
    assert evaluation.to_dict() == report
    assert 0 < report["stack"]["pixel_error"] < 1 and report["stack"]["slices"] == 3
    assert evaluation.to_text() + "\n" == out
    assert evaluation.to_csv() == csv


def test_evaluate_function_gives_the_cli_report_with_the_object_curve(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    yy, xx = np.indices((50, 50))
    for i in range(2):
        truth = np.zeros((50, 50), np.uint16)
        for k, (y, x) in enumerate([(10, 10), (10, 38), (38, 10), (38, 38), (25, 25)], start=1):
            truth[(yy - y) ** 2 + (xx - x - i) ** 2 <= 30 + 4 * k] = k
        pred = np.roll(truth, 2 * i + 1, axis=1)
        pred[pred == 3] = 0                                  # one object missed
        iio.imwrite(tmp_path / "t" / f"im{i}.png", truth)
        tifffile.imwrite(tmp_path / "p" / f"im{i}_instances.tif", pred)
    report, out, csv = cli_report(tmp_path, capsys, "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"),
                                  "--truth-kind", "instances", "--metrics", "dice,ap50,pq,dsb2018")
    evaluation = evaluate(str(tmp_path / "p"), tmp_path / "t", metrics=["dice", "ap50", "pq", "dsb2018"],
                          truth_kind="instances")
    assert evaluation.to_dict() == report
    assert report["objects"]["curve"][0]["true_positives"] == 8 and 0 < report["objects"]["mean_accuracy"] < 1
    assert evaluation.to_text() + "\n" == out
    assert evaluation.to_csv() == csv
