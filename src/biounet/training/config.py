"""The typed training configuration, read from YAML with ``--set section.key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from biounet.augment import AugmentConfig
from biounet.configs import from_dict, load_yaml
from biounet.data.examples import WeightMapConfig
from biounet.data.labels import LabelConfig
from biounet.data.targets import CLASS_NAMES, DISTANCE_NAMES
from biounet.errors import BiounetError
from biounet.models.config import UNetConfig
from biounet.models.normalization import Normalization


@dataclass(frozen=True)
class DataConfig:
    """Where the training and validation pairs are (folders matched by file stem).

    Args:
        images: training images folder.
        labels: training labels folder.
        val_images: validation images; when empty, ``val_fraction`` of the training pairs is split off.
        val_labels: validation labels.
        val_fraction: share of training pairs held out when no validation folders are given.
    """

    images: str = ""
    labels: str = ""
    val_images: str = ""
    val_labels: str = ""
    val_fraction: float = 0.2


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule.

    Args:
        name: ``sgd`` (the paper: momentum 0.99, batch 1, large tiles), ``adam``, or ``adamw`` (Adam with
            decoupled weight decay, Loshchilov & Hutter 2019).
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        scheduler: ``step`` (multiply by ``gamma`` every ``step_size`` epochs), ``poly`` (``lr * (1 - t)^0.9``
            with ``t`` the spent fraction of the epoch or minute budget, as nnU-Net), ``cosine`` (half a
            cosine over the same ``t``) or ``none``.
        step_size: epochs between learning-rate drops.
        gamma: drop factor.
        warmup: with ``poly``/``cosine``, the share of the budget over which the rate rises linearly from 0.
        clip: largest gradient norm (over all weights) a step applies, larger ones scaled down to it (nnU-Net
            clips at 12); 0: no clipping.
    """

    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = 1e-4
    momentum: float = 0.99
    weight_decay: float = 0.0
    scheduler: Literal["step", "poly", "cosine", "none"] = "step"
    step_size: int = 10
    gamma: float = 0.1
    warmup: float = 0.0
    clip: float = 0.0


@dataclass(frozen=True)
class LossConfig:
    """The loss: ``ce`` (softmax cross-entropy weighted by the border weight map, the paper's energy),
    ``dice``, ``ce_dice`` or ``bce_dice`` (single sigmoid output); ``weights`` configures the map. A
    foreground/distance model (``labels.instance_target: distance``) learns its foreground by the named
    loss (cross-entropy is then the binary one) and its distance by binary cross-entropy beside it
    (:mod:`biounet.losses.distance`)."""

    name: Literal["ce", "dice", "ce_dice", "bce_dice"] = "ce"
    weights: WeightMapConfig = field(default_factory=WeightMapConfig)


@dataclass(frozen=True)
class RetainConfig:
    """What a fine-tuning run (``init`` set) keeps of the model it starts from, so that a few corrected
    images teach it without unteaching the rest (see :mod:`biounet.training.retention`).

    Args:
        images: the start model's own training images (rehearsal): their patches are mixed into the
            batches with their true labels.
        labels: their labels (same file stems).
        unlabelled: a folder of images without labels (e.g. the user's uncorrected ones): their patches are
            mixed in and trained, by ``distill``, to agree with the start model.
        share: the share of patches drawn from ``images`` and ``unlabelled`` together (in proportion to
            their pixels); the rest come from the training pairs.
        distill: weight of the distillation term: on every pixel without an annotation (unpainted pixels of
            corrected images, unlabelled images), the KL divergence of the model's class probabilities from
            the start model's, per patch pixel. 0: off.
        anchor: weight of a pull toward the start weights (L2-SP, Li et al. 2018): ``anchor`` times the sum
            of squared differences over all weights. 0: off.
    """

    images: str = ""
    labels: str = ""
    unlabelled: str = ""
    share: float = 0.5
    distill: float = 0.0
    anchor: float = 0.0

    @property
    def data(self) -> bool:
        """Whether patches are mixed in from elsewhere than the training pairs."""
        return bool(self.images or self.unlabelled)


Monitor = Literal["dice", "iou", "rand_error", "accuracy"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; saved as ``config.yaml`` in the run and its checkpoints.

    Args:
        model: the U-Net architecture.
        normalization: intensity normalisation, applied per image (and again at prediction time).
        labels: how label images are read; ``kind: auto`` is decided from the training labels, and a run's
            ``config.yaml`` and checkpoints keep the decided kind and foreground value. Its
            ``instance_target`` decides what instance labels are learnt as; ``distance`` makes the model
            one of foreground/distance (``model.output: distance``, ``model.out_channels: 2``, class names
            ``foreground, distance``) when the config is read from a dict (YAML, ``--set``): a
            background/interior/boundary model's three outputs and class names (what the planner writes for
            instance labels) become those two, so ``--set labels.instance_target=distance`` alone flips a
            plan; any other count or names must already fit.
        augment: data augmentation.
        loss: loss function and weight maps.
        optim: optimizer and schedule.
        data: training/validation files.
        class_names: one name per class (default background/foreground).
        tile: network input tile in pixels, one side for all axes or one per axis (rounded up to a valid
            size).
        batch_size: patches per step, per process in a distributed run (N processes with batch size B train
            as one with N * B).
        samples_per_epoch: patches per epoch (over all processes).
        epochs: epoch budget.
        minutes: wall-clock budget (whichever of epochs/minutes ends first).
        foreground_oversampling: probability of centring a patch on a foreground pixel.
        val_every: validate every this many epochs.
        monitor: validation metric that picks the best checkpoint (``dice`` and ``iou`` are maximised,
            ``rand_error``, which needs two classes, minimised; it is the ISBI challenge's: one threshold
            for all validation images, Rand counts pooled over them). ``accuracy``, for instance labels, is
            accuracy@0.5 of the objects, TP / (TP + FP + FN) with the matches pooled over all validation
            images (StarDist's ``matching_dataset``), maximised.
        patience: stop after this many validations without improvement (0 = never).
        keep: which validated model ``model.pt`` holds: ``best`` (the best by ``monitor``) or ``last`` (the
            latest validated, i.e. the final one once the run ends). ``last`` where the validation is too
            small to rank models trained to a schedule that ends at learning rate 0: picking the best of ten
            noisy scores favours an early, undertrained one (see :mod:`biounet.planning.planner`).
        ema: decay of an exponential moving average of the weights, updated after every step; when > 0 the
            average is what validation scores and ``model.pt`` keeps (it spans about ``1 / (1 - ema)``
            steps; see :mod:`biounet.training.ema`). 0: the trained weights themselves.
        checkpoint_seconds: save ``last.pt`` at least this often; a killed run loses at most this much.
        seed: seed for initialisation, sampling and augmentation.
        deterministic: use deterministic algorithms only (slower on GPU).
        data_workers: DataLoader worker processes that draw the patches; -1: 0 on the CPU (they would
            compete with the training threads), min(4, cores - 1) on CUDA.
        amp: mixed precision on CUDA (``--amp``): ``auto`` (bfloat16 where the GPU has it, else float16 with
            a gradient scaler), ``bf16``, ``fp16``, or ``off``; the CPU path stays float32.
        sync_batchnorm: in a distributed run on GPUs, batch norms use the statistics of all ranks' patches
            (SyncBatchNorm), as one process with the whole batch would.
        init: a checkpoint (or shipped model name) whose weights the run starts from (fine-tuning); its
            architecture must equal ``model``. Empty: He initialisation.
        retain: what a fine-tuning run keeps of the ``init`` model (rehearsal, distillation, anchor).
    """

    model: UNetConfig = field(default_factory=UNetConfig)
    normalization: Normalization = field(default_factory=Normalization)
    labels: LabelConfig = field(default_factory=LabelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    class_names: tuple[str, ...] = ()
    tile: int | tuple[int, ...] = 572
    batch_size: int = 1
    samples_per_epoch: int = 100
    epochs: int = 50
    minutes: float = 0.0
    foreground_oversampling: float = 0.0
    val_every: int = 1
    monitor: Monitor = "dice"
    patience: int = 0
    keep: Literal["best", "last"] = "best"
    ema: float = 0.0
    checkpoint_seconds: float = 120.0
    seed: int = 0
    deterministic: bool = False
    data_workers: int = -1
    amp: Literal["off", "auto", "bf16", "fp16"] = "off"
    sync_batchnorm: bool = False
    init: str = ""
    retain: RetainConfig = field(default_factory=RetainConfig)

    def __post_init__(self) -> None:
        positive = {"tile": min(self.tile_shape), "batch_size": self.batch_size,
                    "samples_per_epoch": self.samples_per_epoch,
                    "epochs": self.epochs, "val_every": self.val_every}
        for name, value in positive.items():
            if value < 1:
                raise BiounetError(f"invalid training config: {name} must be >= 1, got {value}")
        amp: object = self.amp
        if isinstance(amp, bool):  # YAML reads a bare off/on as a boolean
            object.__setattr__(self, "amp", "auto" if amp else "off")
        if self.amp not in ("off", "auto", "bf16", "fp16"):
            raise BiounetError(f"invalid training config: amp {self.amp!r} (use off, auto, bf16 or fp16)")
        if self.optim.clip < 0:
            raise BiounetError(f"invalid training config: optim.clip must be >= 0, got {self.optim.clip}")
        if not 0.0 <= self.ema < 1.0:
            raise BiounetError(f"invalid training config: ema must be in [0, 1), got {self.ema}")
        if self.keep not in ("best", "last"):
            raise BiounetError(f"invalid training config: keep {self.keep!r} (use best or last)")
        retain = self.retain
        if not 0.0 <= retain.share < 1.0 or retain.distill < 0 or retain.anchor < 0:
            raise BiounetError("invalid training config: retain.share must be in [0, 1), retain.distill and "
                               "retain.anchor >= 0")
        if bool(retain.images) != bool(retain.labels):
            raise BiounetError("give both retain.images and retain.labels, or neither")
        if (retain.distill or retain.anchor) and not self.init:
            raise BiounetError("retain.distill and retain.anchor keep what the init model knew: set init")
        if retain.unlabelled and not retain.distill:
            raise BiounetError("retain.unlabelled images are trained by distillation alone: set retain.distill > 0")
        if self.data_workers < -1:
            raise BiounetError(f"invalid training config: data_workers must be >= -1, got {self.data_workers}")
        if self.monitor not in ("dice", "iou", "rand_error", "accuracy"):
            raise BiounetError(f"invalid training config: monitor {self.monitor!r} (use dice, iou, rand_error or "
                               "accuracy)")
        if self.monitor == "accuracy" and self.labels.kind not in ("auto", "instances"):
            raise BiounetError("monitor accuracy needs instance labels (labels.kind instances)")
        if self.monitor == "rand_error" and self.num_classes != 2:
            raise BiounetError("monitor rand_error needs a two-class (membrane/cell) task")
        if self.loss.name == "bce_dice" and self.model.out_channels != 1 and self.model.output != "distance":
            raise BiounetError("loss bce_dice needs model.out_channels = 1 (a single sigmoid output)")
        distance = self.labels.instance_target == "distance"
        if distance != (self.model.output == "distance"):
            raise BiounetError("invalid training config: labels.instance_target distance and model.output distance "
                               "go together (set labels.instance_target, which sets the model)")
        if distance and self.labels.kind not in ("auto", "instances"):
            raise BiounetError(f"labels.instance_target distance needs instance labels, these are read as "
                               f"{self.labels.describe()}")

    @property
    def tile_shape(self) -> tuple[int, ...]:
        """The wanted network input tile per spatial axis."""
        dims = self.model.spatial_dims
        if isinstance(self.tile, int):
            return (self.tile,) * dims
        if len(self.tile) != dims:
            raise BiounetError(f"invalid training config: tile needs 1 or {dims} sizes, got {list(self.tile)}")
        return tuple(int(t) for t in self.tile)

    @property
    def num_classes(self) -> int:
        return 2 if self.model.out_channels == 1 else self.model.out_channels

    @property
    def instance_task(self) -> bool:
        """Whether the model learns objects to split by seeds: as background/interior/boundary (instance
        labels, three classes) or as foreground/distance (the distance instance target)."""
        return self.labels.kind == "instances" and (self.num_classes == 3 or self.model.output == "distance")

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts (the sections as dicts too)."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML, as ``config.yaml`` of a run and a checkpoint hold it."""
        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """A config from nested dicts (as ``to_dict`` or a YAML file gives), each section checked.

        Raises:
            BiounetError: naming the section and key, for an unknown key or an invalid value.
        """
        sections: dict[str, Any] = {
            "model": UNetConfig, "normalization": Normalization, "labels": LabelConfig,
            "augment": AugmentConfig, "optim": OptimConfig, "data": DataConfig, "retain": RetainConfig,
        }
        values = _distance_model(dict(data))
        for name, section in sections.items():
            if name in values:
                values[name] = section.from_dict(values[name]) if hasattr(section, "from_dict") else \
                    from_dict(section, values[name], f"{name} config")
        if "loss" in values:
            loss = dict(values["loss"])
            if "weights" in loss:
                loss["weights"] = from_dict(WeightMapConfig, loss["weights"], "loss.weights config")
            values["loss"] = from_dict(LossConfig, loss, "loss config")
        return from_dict(cls, values, "training config")


def _distance_model(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a plain config dict) with the model that ``labels.instance_target: distance`` trains.

    The target decides the output layer, so one switch flips a planned boundary run: ``model.output``
    becomes ``distance``, three outputs (the boundary classes') two, and the boundary class names the
    distance model's. Other counts and names are left for the checks to refuse.
    """
    labels = values.get("labels")
    if not isinstance(labels, dict) or labels.get("instance_target") != "distance":
        return values
    model = dict(values.get("model") or {})
    model["output"] = "distance"
    if model.get("out_channels", 2) == 3:
        model["out_channels"] = 2
    values["model"] = model
    if list(values.get("class_names") or ()) == list(CLASS_NAMES):
        values["class_names"] = list(DISTANCE_NAMES)
    return values


def load_config(path: Path | None, overrides: list[str]) -> TrainConfig:
    """A config from a YAML file (or the defaults) with ``key.sub=value`` overrides (values parsed as YAML).

    Raises:
        BiounetError: for an unreadable file, a malformed override or an invalid value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = load_yaml(path.read_text(), path)
        except (OSError, yaml.YAMLError) as exc:
            raise BiounetError(f"cannot read config ({type(exc).__name__})", path) from exc
        if not isinstance(loaded, dict):
            raise BiounetError("config must be a YAML mapping", path)
        data = loaded
    return apply_overrides(data, overrides)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """Applies ``key.sub=value`` overrides to a plain config dict and builds the config."""
    data = _plain(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise BiounetError(f"--set expects key=value, got {override!r}")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as exc:
            raise BiounetError(f"--set {override!r}: value is not valid YAML") from exc
        except BiounetError as exc:
            raise BiounetError(f"--set {override!r}: {exc}") from exc
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BiounetError(f"--set {override!r}: {part} is not a section")
        node[leaf] = value
    return TrainConfig.from_dict(data)


def _plain(value: Any) -> Any:
    """Dicts/lists of YAML-safe scalars (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
