"""Nuclei models on a stranger's images without training: the DSB 2018 test split as it is and rescaled.

For each model given (a checkpoint or a shipped model's name), each of the 20 test images of
``../shared/data/dsb2018`` (never used for training, tuning or checkpoint choice) is segmented as
``biounet predict --model M`` segments a file (:func:`biounet.infer.stack.segment_array`), at three sizes:

- ``1x``: as it is;
- ``0.5x`` and ``2x``: the image resized (linear, anti-aliased when shrinking) and its true instance labels
  resized alike (nearest), so that the nuclei are half or twice as many pixels across;

each plainly and with ``--object-size auto`` (passes at full and at half size measure the objects; when they
are smaller than any the model knows or larger than 1.25x its median, the image is predicted again rescaled
to its median: see
:func:`biounet.infer.stack.segment_array`). Scores: accuracy@0.5 with matches
pooled over the images (StarDist's ``matching_dataset``, ``by_image=False``), the mean accuracy over IoU
0.50..0.90, and accuracy@0.5 of the grey (fluorescence) and colour (brightfield, stained tissue) images on
their own. Time: the seconds of all 20 segmentations, and auto's over the plain one's.

    git show 41bf1d4:src/biounet/pretrained/dsb2018-nuclei.pt > bench_runs/dsb2018-nuclei-30min.pt
    .venv/bin/python benchmarks/bench_generalist.py nuclei bench_runs/dsb2018-nuclei-30min.pt [--csv out.csv]

compares the shipped ``nuclei`` with the 30-minute model of 80 images it replaced. ``--validation N`` scores
held-out stage1 images instead (to choose settings on); ``--link-data DIR`` makes the training folders of
``nuclei`` (see its card); ``--pack DIR`` copies them compactly (43 MB: grey PNGs where R = G = B, labels
of 8 bits where they fit), same names, for a GPU machine that gets only the repository (``gpu_generalist.sh``).
``--retune OUT.pt`` tunes the model's post-processing again (:func:`~biounet.training.tuning.tune_instance_params`,
as training does at its end) on the 60 images its training run validated on, predicted as ``biounet predict``
predicts them at their own size, and writes the model with it to ``OUT.pt``: what a change of the
post-processing's rules needs, the weights unchanged.

Run it alone: the times are wall-clock on this machine's CPU.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from skimage.transform import resize

from biounet.data.labels import read_label
from biounet.infer.predict import TileOptions
from biounet.infer.stack import segment_array
from biounet.io.axes import plan_stack
from biounet.io.readers import read_image
from biounet.metrics.instances import CURVE_THRESHOLDS, matching_dataset
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.pretrained import resolve_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dsb2018"
STAGE1 = ROOT.parent / "shared" / "data" / "dsb2018-stage1"
SCALES = (1.0, 0.5, 2.0)


def test_split() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(id, image (C, H, W) as stored, true ids (H, W))`` of the 20 test images."""
    rows = list(csv.DictReader((DATA / "index.csv").open()))
    return [_pair(r["id"], DATA / "images" / f"{r['id']}.png", DATA / "masks" / f"{r['id']}.png")
            for r in rows if r["split"] == "test"]


def link_data(folder: Path) -> None:
    """The shipped ``nuclei`` model's 600 training pairs as links in ``folder/images`` and ``folder/labels``: the 80
    train-split pairs of ``../shared/data/dsb2018`` and the 520 of ``../shared/data/dsb2018-stage1``."""
    sources = [(DATA, r["id"]) for r in csv.DictReader((DATA / "index.csv").open()) if r["split"] == "train"]
    sources += [(STAGE1, p.stem) for p in sorted((STAGE1 / "images").glob("*.png"))]
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for root, name in sources:
        for sub, source in (("images", "images"), ("labels", "masks")):
            link = folder / sub / f"{name}.png"
            if not link.is_symlink():
                link.symlink_to((root / source / f"{name}.png").resolve())


def pack_data(folder: Path) -> None:
    """The 600 training pairs of :func:`link_data` copied into ``folder/images`` and ``folder/labels`` under the
    same names (so ``split_validation`` holds out the same images), as small as lossless PNG makes them: an
    RGB(A) image with R = G = B and an opaque alpha as one grey channel (the model repeats it into three,
    as it does the RGB), labels in 8 bits where they have fewer than 256 objects."""
    import tempfile

    import imageio.v3 as iio

    with tempfile.TemporaryDirectory() as tmp:
        link_data(Path(tmp))
        for sub in ("images", "labels"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for path in sorted((Path(tmp) / sub).glob("*.png")):
                array = iio.imread(path)
                if sub == "labels":
                    array = array.astype(np.uint8 if array.max() < 256 else np.uint16)
                elif array.ndim == 3:
                    if array.shape[2] == 4 and (array[..., 3] == 255).all():
                        array = array[..., :3]
                    if array.shape[2] == 3 and (array == array[..., :1]).all():
                        array = array[..., 0]
                iio.imwrite(folder / sub / path.name, array)


def run_validation() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The 60 images the ``nuclei`` training run held out (``split_validation`` of its 600 pairs, seed 0,
    10 %): what it tuned its post-processing on."""
    return [_pair(i.stem, i, lbl) for i, lbl in _held_out()]


def _held_out() -> list[tuple[Path, Path]]:
    """The (image, label) paths of the ``nuclei`` training run's validation images (resolved: they outlive the
    folder of links :func:`link_data` makes for the split)."""
    import tempfile

    from biounet.data.examples import pair_files, split_validation

    with tempfile.TemporaryDirectory() as tmp:
        link_data(Path(tmp))
        _, held_out = split_validation(pair_files(Path(tmp) / "images", Path(tmp) / "labels"), 0.1, 0)
        return [(i.resolve(), lbl.resolve()) for i, lbl in held_out]


def retune(model: str, out: Path) -> None:
    """``model`` with its post-processing tuned again on :func:`run_validation`, written to ``out``."""
    from biounet.models.checkpoint import save_checkpoint
    from biounet.training.tuning import tune_instance_params

    checkpoint = load_checkpoint(resolve_model(model))
    images = run_validation()
    probabilities = []
    for _, image, _ in images:
        plan = plan_stack("CYX", image.shape, 2, checkpoint.config.in_channels)
        probabilities.append(segment_array(checkpoint, image, plan, Path("bench"), instances=False,
                                           options=TileOptions(object_size="none")).probs)
    tuned = tune_instance_params(probabilities, [truth for _, _, truth in images], output=checkpoint.config.output)
    print(f"{model}: was {checkpoint.instances}; tuned {tuned.params}: accuracy@0.5 {tuned.accuracy:.4f} on the "
          f"{len(images)} validation images (defaults {tuned.default_accuracy:.4f})")
    save_checkpoint(out, checkpoint.model, checkpoint.normalization, checkpoint.class_names, extra=checkpoint.extra,
                    instances=tuned.params, tta=checkpoint.tta, object_size=checkpoint.object_size)


def validation_split(count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """For choosing settings without the test split: ``count`` images of ``dsb2018-stage1`` that the ``nuclei``
    training run held out for its own validation (``split_validation`` of its 600 pairs, seed 0, 10 %) and
    that are not in the 100-image subset (so the 30-minute model never trained on them either)."""
    subset = {r["id"] for r in csv.DictReader((DATA / "index.csv").open())}
    return [_pair(i.stem, i, lbl) for i, lbl in _held_out() if i.stem not in subset][:count]


def _pair(name: str, image: Path, label: Path) -> tuple[str, np.ndarray, np.ndarray]:
    return name, read_image(image, 2), read_label(label, 2)


def kind(image: np.ndarray) -> str:
    """``grey`` for one channel or RGB(A) with R = G = B, else ``colour``."""
    rgb = image[:3]
    return "grey" if rgb.shape[0] == 1 or (np.ptp(rgb.astype(np.int16), axis=0) <= 1).all() else "colour"


def rescaled(image: np.ndarray, truth: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The image (uint8, linear, anti-aliased when shrinking) and its labels (nearest) resized by ``scale``."""
    if scale == 1.0:
        return image, truth
    shape = tuple(max(1, round(n * scale)) for n in truth.shape)
    pixels = resize(image.astype(np.float32), (image.shape[0], *shape), order=1, anti_aliasing=scale < 1,
                    preserve_range=True)
    ids = resize(truth, shape, order=0, anti_aliasing=False, preserve_range=True).astype(truth.dtype)
    return np.clip(np.rint(pixels), 0, 255).astype(image.dtype), ids


def segment(checkpoint: Checkpoint, image: np.ndarray, object_size: str | None) -> tuple[np.ndarray, float, float]:
    """Object ids as ``biounet predict`` gives them for a file holding ``image``, the scale it was predicted at
    and the seconds it took."""
    plan = plan_stack("CYX", image.shape, 2, checkpoint.config.in_channels)
    started = time.perf_counter()
    found = segment_array(checkpoint, image, plan, Path("bench"), options=TileOptions(object_size=object_size))
    seconds = time.perf_counter() - started
    assert found.ids is not None
    return found.ids, found.scale, seconds  # one item: its ids are the image's


def row(checkpoint: Checkpoint, test: list[tuple[str, np.ndarray, np.ndarray]], scale: float,
        object_size: str | None) -> dict[str, float]:
    found, truths, kinds, scales, seconds = [], [], [], [], 0.0
    for _, image, truth in test:
        image, truth = rescaled(image, truth, scale)
        ids, used, took = segment(checkpoint, image, object_size)
        found.append(ids)
        truths.append(truth)
        kinds.append(kind(image))
        scales.append(used)
        seconds += took
    curve = matching_dataset(found, truths, CURVE_THRESHOLDS)
    scores = {"accuracy@0.5": curve[0].accuracy, "mean accuracy 0.5..0.9": float(np.mean([m.accuracy for m in curve])),
              "seconds": seconds, "median scale": float(np.median(scales))}
    for name in ("grey", "colour"):
        pick = [i for i, k in enumerate(kinds) if k == name]
        scores[f"{name} ({len(pick)}) accuracy@0.5"] = \
            matching_dataset([found[i] for i in pick], [truths[i] for i in pick], (0.5,))[0].accuracy
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="checkpoints or shipped model names")
    parser.add_argument("--link-data", type=Path, default=None, metavar="DIR",
                        help="only link the nuclei model's 600 training pairs into DIR/images and DIR/labels")
    parser.add_argument("--pack", type=Path, default=None, metavar="DIR",
                        help="only copy those 600 pairs compactly into DIR/images and DIR/labels")
    parser.add_argument("--retune", type=Path, default=None, metavar="OUT.pt",
                        help="only tune the model's post-processing again and write the model to OUT.pt")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--validation", type=int, default=0, metavar="N",
                        help="score N held-out stage1 images instead of the test split (to choose settings on)")
    args = parser.parse_args()
    if args.link_data:
        link_data(args.link_data)
        return
    if args.pack:
        pack_data(args.pack)
        return
    if not args.models:
        parser.error("give at least one model")
    if args.retune:
        retune(args.models[0], args.retune)
        return
    test = validation_split(args.validation) if args.validation else test_split()
    print(f"{len(test)} {'validation' if args.validation else 'test'} images", flush=True)
    rows = []
    for model in args.models:
        checkpoint = load_checkpoint(resolve_model(model))
        size = checkpoint.object_size
        print(f"{model}: objects of {size.describe() if size else 'unknown size'}", flush=True)
        for scale in SCALES:
            plain = row(checkpoint, test, scale, "none")
            autos = [("auto", row(checkpoint, test, scale, "auto"))] if size is not None else []
            for sizing, scores in [("as it is", plain), *autos]:
                scores = {"model": model, "image size": f"{scale:g}x", "object size": sizing, **scores}
                scores["time / plain"] = scores["seconds"] / plain["seconds"]
                rows.append(scores)
                print(" | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in scores.values()),
                      flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, keys)
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
