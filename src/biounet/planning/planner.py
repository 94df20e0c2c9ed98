"""A training plan from the data, the device and the budget: what ``biounet train`` does without a config.

nnU-Net derives its configuration from a dataset fingerprint but assumes a GPU and days. Here the budget
is part of the plan: the network's width is the widest whose step, *timed on this device* with a real
training step (sampling, augmentation, forward, backward, optimizer), still trains for enough steps in the
minutes given. Everything else follows the data: depth from the object size, tile from the image size,
loss from whether objects crowd each other or the foreground is thin or rare, normalisation from the
intensities, augmentation from object size and anisotropy. Each choice carries a one-line reason.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from biounet.augment.config import AugmentConfig
from biounet.data.examples import pair_files
from biounet.data.labels import LabelConfig
from biounet.data.targets import CLASS_NAMES, DISTANCE_NAMES, InstanceTarget
from biounet.infer.devices import resolve_device
from biounet.models.config import Padding, UNetConfig
from biounet.models.symmetry import TTA_GAIN
from biounet.planning.fingerprint import Fingerprint, fingerprint
from biounet.training.config import TrainConfig, apply_overrides

# Rather a narrower network that trains this many steps in the budget than a wider one that barely starts.
# Measured on ISBI 2012 in 20 CPU minutes (benchmarks/ablation.py, seed 0): base 16 at ~2,000 steps scored
# Rand error 0.114, base 8 at ~4,000 steps 0.080; at 2,000 the width flipped on a few percent of timing noise.
MIN_STEPS = 3000
# Validations per run, and the share of the budget they may take at most.
VALIDATIONS = 10
VALIDATION_SHARE = 0.15
# What `train` plans for when neither --minutes nor --epochs is given.
DEFAULT_MINUTES = 30.0
# The moving average of the weights spans this share of the planned steps, within these bounds.
EMA_SHARE = 0.05
EMA_WINDOW = (50, 1000)
# What instance labels are learnt as: "boundary" (background / interior / boundary classes) or "distance"
# (foreground and the normalised distance to the boundary, biounet.data.targets.distance_target). Boundary
# until distance wins the measured comparison on DSB 2018 (benchmarks/bench_instances.py with
# --set labels.instance_target=distance against without); then this one line flips every instance plan.
INSTANCE_TARGET: InstanceTarget = "boundary"
# A class this thin (median width in px, with a skeleton that is a good share of its area) is a line
# structure: membranes, vessels, neurites.
THIN_WIDTH = 8.0
THIN_SKELETON = 0.1


@dataclass(frozen=True)
class Timing:
    """A candidate width, timed on the device.

    Attributes:
        base_channels: the candidate's first-level width.
        step_seconds: one real training step (median of the timed ones).
        forward_seconds: one forward pass of a tile without gradients (what validation costs per tile).
    """

    base_channels: int
    step_seconds: float
    forward_seconds: float


@dataclass(frozen=True)
class Plan:
    """A planned training configuration and why.

    Attributes:
        settings: the planned config as a plain nested dict (``biounet train --config`` reads it).
        reasons: ``(setting, one-line reason)`` per choice, in the order they were made.
        timings: the candidate widths as timed on the device.
    """

    settings: dict[str, Any]
    reasons: tuple[tuple[str, str], ...]
    timings: tuple[Timing, ...] = ()

    def config(self, overrides: Sequence[str] = ()) -> TrainConfig:
        """The training config: the plan, with ``key=value`` overrides applied on top (they always win)."""
        return apply_overrides(self.settings, list(overrides))

    def report(self) -> str:
        """The plan as text: one line per choice with its reason, then the timings it was made from."""
        lines = ["plan:"]
        lines += [f"  {key}: {reason}" for key, reason in self.reasons]
        if self.timings:
            measured = ", ".join(f"base {t.base_channels}: {t.step_seconds:.3g} s/step" for t in self.timings)
            lines.append(f"  timed on this device: {measured}")
        return "\n".join(lines)

    def to_yaml(self) -> str:
        """The config as YAML, headed by the reasons as comments."""
        head = "".join(f"# {key}: {reason}\n" for key, reason in self.reasons)
        return "# Planned by `biounet plan` from the data, the device and the budget.\n" + head + \
            yaml.safe_dump(self.settings, sort_keys=False)


def make_plan(fingerprint: Fingerprint, images: str | Path, labels: str | Path, device: torch.device,
              minutes: float | None = None, epochs: int | None = None, measure: bool = True) -> Plan:
    """Plans a training run.

    Args:
        fingerprint: the training data's fingerprint.
        images: training images folder (stored in the plan's ``data`` section).
        labels: training labels folder.
        device: the device that will train; candidate widths are timed on it.
        minutes: the whole run's budget; with neither this nor ``epochs``, :data:`DEFAULT_MINUTES`.
        epochs: an epoch budget instead of minutes (the width is then not timed against a clock).
        measure: time candidate widths (off only in tests that check the rest of the plan).
    """
    planner = _Planner(fingerprint, device)
    planner.data(str(images), str(labels))
    planner.classes_and_labels()
    planner.normalization()
    planner.architecture()
    planner.loss()
    planner.augmentation()
    planner.test_time()
    planner.budget(minutes, epochs, measure)
    return Plan(planner.settings, tuple(planner.reasons), tuple(planner.timings))


class _Planner:
    """The choices, one method per section, writing into ``settings`` with a reason each."""

    def __init__(self, fingerprint: Fingerprint, device: torch.device) -> None:
        self.fp, self.device = fingerprint, device
        self.dims = fingerprint.spatial_dims
        self.settings: dict[str, Any] = {}
        self.reasons: list[tuple[str, str]] = []
        self.timings: list[Timing] = []
        objects = fingerprint.objects
        self.diameter = objects.diameter if objects is not None else 0.0
        classes = fingerprint.classes
        self.thin = [c.frequency > 0 and c.thickness <= THIN_WIDTH and c.skeleton_ratio >= THIN_SKELETON
                     for c in classes]
        # Membranes: a thin background between the objects (ISBI 2012), scored by the Rand error.
        self.membranes = len(classes) == 2 and self.thin[0] and not self.thin[1]

    def set(self, key: str, value: Any, reason: str | None = None) -> None:
        node = self.settings
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        if reason:
            self.reasons.append((key, reason))

    def data(self, images: str, labels: str) -> None:
        self.set("data.images", images)
        self.set("data.labels", labels)
        count = self.fp.count
        fraction = 0.1 if count >= 40 else 0.2
        held = min(count - 1, max(1, round(fraction * count)))
        self.set("data.val_fraction", fraction, f"{held} of {count} pairs held out to pick the best checkpoint")

    def classes_and_labels(self) -> None:
        fp = self.fp
        self.set("labels", fp.labels.to_dict(), fp.labels.describe())
        self.set("model.spatial_dims", self.dims)
        kinds = {"grey": "one grey channel", "grey-as-rgb": "RGB images whose channels are equal: read as grey",
                 "rgb": "colour images: three channels", "multichannel": f"{fp.channels} channels"}
        self.set("model.in_channels", fp.channels, kinds.get(fp.channel_kind, f"{fp.channels} channels"))
        if fp.labels.kind == "instances" and INSTANCE_TARGET == "distance":
            self.set("labels.instance_target", "distance")
            self.set("model.output", "distance")
            self.set("model.out_channels", 2, "instance labels: objects learnt as their foreground and each "
                     "pixel's distance to its object's boundary (normalised per object), then split apart by a "
                     "seeded watershed on the distance tuned on the validation images")
            self.set("class_names", list(DISTANCE_NAMES))
        elif fp.labels.kind == "instances":
            self.set("labels.instance_target", "boundary")
            self.set("model.out_channels", 3, "instance labels: objects learnt as background, interior and "
                     "boundary, then split apart by a seeded watershed tuned on the validation images")
            self.set("class_names", list(CLASS_NAMES))
        else:
            self.set("model.out_channels", fp.num_classes, f"{fp.num_classes} classes from the labels")

    def normalization(self) -> None:
        stats = self.fp.intensity
        if self.dims == 3 and stats and min(s.p0_5 for s in stats) < -500:
            self.set("normalization", {"mode": "percentile", "low": 0.5, "high": 99.5},
                     "CT-like intensities (below -500): each volume windowed at its 0.5/99.5 percentiles")
        elif self.dims == 3:
            self.set("normalization", {"mode": "zscore"},
                     "volumes with arbitrary intensity units (MRI-like): z-score per volume")
        else:
            self.set("normalization", {"mode": "percentile", "low": 1.0, "high": 99.8},
                     f"microscopy ({self.fp.dtype}): 1/99.8 percentiles per image, robust to hot pixels")

    def architecture(self) -> None:
        fp = self.fp
        smallest = min(fp.median_shape)
        if self.dims == 2:
            # Receptive field: the object and as much context again; line structures get the paper's 185 px.
            needed = max(2 * self.diameter, 185 if self.membranes else 64)
            depth = next((d for d in (3, 4, 5) if _receptive_field(d) >= needed), 5)
            while depth > 3 and _receptive_field(depth) > smallest:  # context mostly mirrored: too deep
                depth -= 1
            padding: Padding = "valid" if smallest >= 128 else "same"
            covered = f"objects of {self.diameter:.0f} px with context" if self.diameter else "the structures"
            lines = " and the membranes' context" if self.membranes else ""
            self.set("model.depth", depth, f"receptive field {_receptive_field(depth)} px covers {covered}{lines}")
            self.set("model.padding", padding,
                     "valid convolutions and overlap-tile (the paper): exact tiling of any image size"
                     if padding == "valid" else f"images of {smallest} px are smaller than a valid tile's context")
            self.set("model.norm", "none" if padding == "valid" else "instance")
            out = min(388, _round_up(smallest, 16))
            model = UNetConfig(depth=depth, padding=padding)
            tile = model.input_shape_for_output((out, out))[0] if padding == "valid" else \
                model.valid_input_shape((out, out))[0]
            # A GPU takes about the paper's 572x572 input pixels per step; a CPU gains nothing from batching
            # and a short budget more from steps.
            batch = int(min(8 if self.device.type != "cpu" else 2, max(1, round((572 / tile) ** 2))))
            median = "x".join(map(str, fp.median_shape))
            self.set("tile", int(tile), f"output {out} px per tile (median image {median})")
            self.set("batch_size", batch, "about 572x572 input pixels per step, as the paper's tile"
                     if batch < 2 or self.device.type != "cpu" else "two tiles per step on a CPU")
            self.set("model.dropout", 0.0)
        else:
            self._architecture_3d()

    def _architecture_3d(self) -> None:
        fp = self.fp
        spacing = list(fp.spacing) if len(fp.spacing) == 3 else [1.0] * 3
        # Patch: the median volume, capped at a voxel budget; the axis largest in physical size shrinks first.
        cap = 128**3 if self.device.type == "cuda" else 64**3
        patch = list(fp.median_shape)
        while math.prod(patch) > cap:
            axis = max(range(3), key=lambda a: patch[a] * spacing[a])
            patch[axis] = max(8, int(patch[axis] * 0.9))
        # nnU-Net's rule: an axis is pooled once its spacing is within 2x of the finest, while >= 8 voxels
        # remain; at most 4 levels.
        current, size = list(spacing), list(patch)
        pools: list[list[int]] = []
        while len(pools) < 4:
            level = [2 if current[a] <= 2 * min(current) and size[a] >= 8 else 1 for a in range(3)]
            if level == [1, 1, 1]:
                break
            pools.append(level)
            current = [c * f for c, f in zip(current, level, strict=True)]
            size = [s // f for s, f in zip(size, level, strict=True)]
        pools = pools if len(pools) >= 2 else [[2, 2, 2], [2, 2, 2]]
        alignment = [math.prod(p[a] for p in pools) for a in range(3)]
        patch = [_round_up(p, alignment[a]) for a, p in enumerate(patch)]
        uneven = any(1 in p for p in pools)
        self.set("model.depth", len(pools), f"{len(pools)} poolings fit a {'x'.join(map(str, patch))} patch")
        self.set("model.pool_sizes", pools if uneven else None,
                 f"spacing {' x '.join(format(s, '.3g') for s in spacing)}: a coarse axis is pooled only once "
                 "its spacing is within 2x of the finest" if uneven else None)
        self.set("model.padding", "same", "same convolutions with instance norm, as nnU-Net's 3d_fullres")
        self.set("model.norm", "instance")
        capped = f" capped at {round(cap ** (1 / 3))}^3 voxels" if math.prod(fp.median_shape) > cap else ""
        self.set("tile", patch, f"the median volume{capped}")
        self.set("batch_size", 2, "two patches per step, as nnU-Net")

    def loss(self) -> None:
        fp, objects = self.fp, self.fp.objects
        crowded = objects is not None and objects.near_fraction >= 0.2
        rare = fp.foreground_fraction < 0.1
        thin_foreground = any(self.thin[1:])
        if fp.labels.kind == "instances":
            sigma = float(min(5.0, max(2.0, round(self.diameter / 8)))) if self.diameter else 5.0
            w0 = 10.0 if self.dims == 2 else 0.0
            border = f", plus the paper's border term on the gaps between objects (w0 10, sigma {sigma:g} px)" \
                if w0 else ""
            self.set("loss", {"name": "ce_dice", "weights": {"w0": w0, "sigma": sigma, "class_balance": True}},
                     f"binary cross-entropy + Dice on the foreground, classes balanced, and binary cross-entropy "
                     f"on the distance{border}" if INSTANCE_TARGET == "distance" else
                     f"cross-entropy + Dice, classes balanced so that the thin boundary class weighs as much as "
                     f"the others{border}")
        elif self.dims == 2 and (self.membranes or (not thin_foreground and crowded)):
            sigma = float(min(5.0, max(2.0, round(self.diameter / 8)))) if self.diameter else 5.0
            why = "thin membranes between objects" if self.membranes else \
                f"{objects.near_fraction:.0%} of objects within 3 px of another" if crowded and objects else \
                "instance labels: touching objects"
            self.set("loss", {"name": "ce", "weights": {"w0": 10.0, "sigma": sigma, "class_balance": True}},
                     f"the paper's border-weighted cross-entropy (w0 10, sigma {sigma:g} px): {why}")
        elif rare or thin_foreground:
            why = "thin foreground" if thin_foreground else f"rare foreground ({fp.foreground_fraction:.1%})"
            self.set("loss", {"name": "ce_dice", "weights": {"w0": 0.0, "class_balance": True}},
                     f"cross-entropy + Dice with class balance: {why}")
        else:
            self.set("loss", {"name": "ce_dice", "weights": {"w0": 0.0, "class_balance": False}},
                     "cross-entropy + Dice (nnU-Net's default): separate, not rare objects")
        self.set("foreground_oversampling", 0.33 if rare else 0.0,
                 "a third of patches centred on foreground" if rare else None)
        if fp.labels.kind == "instances":
            self.set("monitor", "accuracy", "accuracy@0.5 of the objects is validated")
            # The best of ten noisy validations is mostly luck: on DSB 2018 (8 validation images) it was
            # epoch 4 of 11, 0.51 on the test split, where the final model scored 0.64.
            self.set("keep", "last", "the final model is kept, not the best-validated one: accuracy@0.5 of a few "
                     "validation images ranks epochs by noise, and the schedule ends at learning rate 0")
            return
        monitor = "rand_error" if self.membranes else "dice"
        self.set("monitor", monitor, "Rand error picks the checkpoint: membranes must close" if self.membranes
                 else "Dice picks the checkpoint")

    def augmentation(self) -> None:
        if self.dims == 2:
            sigma = float(min(10.0, max(2.0, round(self.diameter / 5)))) if self.diameter else 10.0
            self.set("augment", {"elastic_sigma": sigma, "elastic_grid": 3, "rotate": 180.0, "flip": True,
                                 "scale": [0.85, 1.15]},
                     f"any rotation and flips; elastic sigma {sigma:g} px on a 3x3 grid "
                     f"({f'scaled to objects of {self.diameter:.0f} px' if self.diameter else 'the paper'})")
            return
        anisotropic = self.fp.anisotropy >= 3
        rotate: float | list[float] = [0.0, 0.0, 180.0] if anisotropic else 15.0
        self.set("augment", {"elastic_spacing": 16.0, "elastic_sigma": 2.0, "elastic_p": 0.5, "rotate": rotate,
                             "flip": False, "scale": [0.85, 1.15], "noise": 0.05},
                 ("in-plane rotation only (anisotropy " + format(self.fp.anisotropy, ".1f") + ")" if anisotropic
                  else "rotations up to 15 degrees") + "; B-spline deformation on a 16-voxel grid; no flips "
                 "(left and right may be different classes)")

    def test_time(self) -> None:
        symmetry = AugmentConfig.from_dict(self.settings["augment"]).symmetry(self.dims)
        self.reasons.append(("tta", f"predictions average over the {symmetry} transforms the augmentation covers "
                             f"if, after training, that lowers the validation error by {TTA_GAIN:.0%} or more"
                             if symmetry != "none" else "no test-time augmentation: the augmentation covers "
                             "no flips or turns"))

    def budget(self, minutes: float | None, epochs: int | None, measure: bool) -> None:
        self.set("optim", {"name": "adam", "lr": 1e-3, "weight_decay": 3e-5, "scheduler": "poly",
                           "warmup": 0.02},
                 "Adam 1e-3, 2 % warm-up, then poly decay to 0 over the budget")
        cpu = self.device.type == "cpu"
        widths = (8, 16, 32) if cpu else (16, 32, 64)
        if epochs is not None and minutes is None:
            width = widths[1]
            self.set("model.base_channels", width, f"epoch budget: middle width {width} (not timed)")
            self.set("epochs", int(epochs))
            self.set("samples_per_epoch", 100 * self.settings["batch_size"])
            self._weight_average(epochs * 100)
            return
        if minutes is None:
            minutes = DEFAULT_MINUTES
            self.reasons.append(("minutes", f"no --minutes or --epochs given: planned for {minutes:g} minutes"))
        seconds = minutes * 60
        base = TrainConfig.from_dict(self.settings)
        train_seconds = seconds * (1 - VALIDATION_SHARE)
        for width in widths:  # narrowest first: once one is too slow, the wider ones are too
            timing = _time_candidate(base, width, self.device) if measure else \
                Timing(width, 0.01 * (width / 8) ** 2, 0.003 * (width / 8) ** 2)
            self.timings.append(timing)
            if train_seconds / timing.step_seconds < MIN_STEPS:
                break
        fits = [t for t in self.timings if train_seconds / t.step_seconds >= MIN_STEPS]
        chosen = fits[-1] if fits else self.timings[0]
        steps = int(train_seconds / chosen.step_seconds)
        timed = ", ".join(str(t.base_channels) for t in self.timings)
        why = (f"the widest of {timed} that trains >= {MIN_STEPS} steps in "
               f"{minutes:g} min here (~{steps} at {chosen.step_seconds:.3g} s/step)" if fits else
               f"the narrowest: even it trains only ~{steps} steps in {minutes:g} min (a longer budget helps)")
        self.set("model.base_channels", chosen.base_channels, why)
        # Validation: about VALIDATIONS times, but never more than its share of the budget.
        tiles = self._validation_tiles(base)
        per_validation = tiles * chosen.forward_seconds + 0.5
        validations = max(2, min(VALIDATIONS, int(VALIDATION_SHARE * seconds / per_validation)))
        batch = int(self.settings["batch_size"])
        samples = max(batch, int(steps / validations) * batch)
        self.set("samples_per_epoch", samples, f"an epoch of {samples // batch} steps: about {validations} "
                 f"validations of ~{per_validation:.0f} s each")
        self.set("epochs", 1_000_000)
        self.set("minutes", float(minutes))
        self.set("val_every", 1)
        self._weight_average(steps)

    def _weight_average(self, steps: int) -> None:
        # A window of a twentieth of the run: long enough to smooth the last epochs' swings, short enough
        # that the average is not dragged back to the weights of the run's first half.
        window = int(min(EMA_WINDOW[1], max(EMA_WINDOW[0], steps * EMA_SHARE)))
        self.set("ema", round(1.0 - 1.0 / window, 6),
                 f"validate and keep the moving average of the weights over the last ~{window} of ~{steps} steps: "
                 "one lucky or unlucky epoch no longer decides the model")

    def _validation_tiles(self, config: TrainConfig) -> int:
        """Tiles in the validation images (at the median shape): how many forward passes a validation takes."""
        fp = self.fp
        held = min(fp.count - 1, max(1, round(float(self.settings["data"]["val_fraction"]) * fp.count)))
        model = config.model
        tile = model.valid_input_shape(config.tile_shape, min_output=model.alignment)
        out = model.output_shape(tile)
        return held * math.prod(math.ceil(s / o) for s, o in zip(fp.median_shape, out, strict=True))


def _receptive_field(depth: int) -> int:
    """The receptive field in pixels of a 2D U-Net with 3x3 convolutions and ``depth`` poolings."""
    return UNetConfig(depth=depth).halo_size()[0] + 1


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _time_candidate(config: TrainConfig, width: int, device: torch.device, steps: int = 2) -> Timing:
    """Times real training steps (sampling, augmentation, forward, backward, Adam) of ``config`` at ``width``
    on synthetic data of the planned tile, and one tile's forward pass without gradients."""
    from biounet.data.examples import Example
    from biounet.data.sampling import PatchSampler
    from biounet.models.unet import UNet
    from biounet.training.trainer import Trainer

    # Patches drawn in this process: DataLoader workers would be started anew for every timed step.
    candidate = apply_overrides(config.to_dict(), [f"model.base_channels={width}", "data_workers=0"])
    model_config = candidate.model
    tile = model_config.valid_input_shape(candidate.tile_shape, min_output=model_config.alignment)
    out = model_config.output_shape(tile)
    rng = np.random.default_rng(0)
    shape = tuple(max(t, 8) for t in tile)
    example = Example("timing", rng.random((model_config.in_channels, *shape), np.float32),
                      rng.integers(0, candidate.num_classes, shape).astype(np.int64),
                      np.ones(shape, np.float32),
                      distance=rng.random(shape, np.float32) if model_config.output == "distance" else None)
    sampler = PatchSampler([example], tile, out, 0.0)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(candidate, UNet(model_config), sampler, lambda _m: {}, Path(scratch), device)
        trainer.model.train()
        times = []
        for _ in range(steps + 1):  # the first step warms up allocators and kernels
            started = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
        trainer.model.eval()
        with torch.no_grad():
            batch = torch.from_numpy(example.image[None]).to(device)
            started = time.perf_counter()
            trainer.model(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            forward = time.perf_counter() - started
    return Timing(width, statistics.median(times[1:]), forward)


def plan_run(images: Path, labels: Path, device: str | None = None, minutes: float | None = None,
             epochs: int | None = None, progress: bool = True,
             labels_config: LabelConfig | None = None) -> tuple[Plan, Fingerprint]:
    """The fingerprint of the training pairs in two folders and the plan made from it for ``device``.

    Args:
        images: training images folder.
        labels: training labels folder (same file stems).
        device: the training device (candidate widths are timed on it).
        minutes: the run's budget (see :func:`~biounet.planning.planner.make_plan`).
        epochs: an epoch budget instead.
        progress: show a progress bar while reading.
        labels_config: the label convention to read the labels by (default: detected, ``auto``).

    Raises:
        BiounetError: naming the file, for missing, unreadable or mismatched data.
    """
    found = fingerprint(pair_files(images, labels), labels=labels_config, progress=progress)
    return make_plan(found, images, labels, resolve_device(device), minutes, epochs), found
