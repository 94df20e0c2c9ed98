"""Setting up and running a training run from a :class:`TrainConfig`: data, model, trainer, outputs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from biounet.atomic import atomic_path
from biounet.data.examples import (
    Example,
    LazyExample,
    is_large,
    large_label_values,
    load_example,
    pair_files,
    split_validation,
    unlabelled_example,
)
from biounet.data.labels import format_values, label_values, read_label
from biounet.data.object_size import measure_object_size
from biounet.errors import BiounetError
from biounet.infer.devices import resolve_device
from biounet.io.files import list_image_files
from biounet.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.outputs import probabilities_to_mask
from biounet.models.symmetry import TTA, TTA_GAIN
from biounet.models.unet import UNet
from biounet.training.callbacks import CSVLogger, ProgressBar, TensorBoardLogger
from biounet.training.config import TrainConfig
from biounet.training.distributed import Ranks
from biounet.training.plots import plot_curves, plot_overlay
from biounet.training.trainer import Callback, Trainer
from biounet.training.validation import make_validator, predict_example, score_predictions


def load_examples(config: TrainConfig, progress: bool = True,
                  report: bool = True) -> tuple[TrainConfig, list[Example | LazyExample], list[Example]]:
    """Training and validation examples as the config's ``data`` section describes.

    Args:
        config: the run's config.
        progress: show progress bars.
        report: print the label convention found (rank 0 of a distributed run does, the others don't).

    Returns:
        The config with its label convention resolved from all training labels (see
        :meth:`~biounet.data.labels.LabelConfig.resolve`), the training examples (a
        :class:`~biounet.data.examples.LazyExample` for a pair too large for memory) and the validation
        ones.

    Raises:
        BiounetError: naming the file, for missing or unreadable data and labels that do not fit.
    """
    data = config.data
    if not data.images or not data.labels:
        raise BiounetError("no training data: give --images and --labels (or data.images/data.labels)")
    pairs = pair_files(Path(data.images), Path(data.labels))
    if data.val_images or data.val_labels:
        if not (data.val_images and data.val_labels):
            raise BiounetError("give both --val-images and --val-labels, or neither")
        train_pairs, val_pairs = pairs, pair_files(Path(data.val_images), Path(data.val_labels))
    else:
        train_pairs, val_pairs = split_validation(pairs, data.val_fraction, config.seed)
    config = resolve_labels(config, [lbl for _, lbl in train_pairs], [lbl for _, lbl in val_pairs], progress,
                            report)
    # Training pairs too large for memory are read patch by patch; validation images are predicted whole.
    loaded = _load_pairs(config, train_pairs + val_pairs, len(train_pairs), progress)
    return config, loaded[:len(train_pairs)], [e for e in loaded[len(train_pairs):] if isinstance(e, Example)]


def _load_pairs(config: TrainConfig, pairs: list[tuple[Path, Path]], lazy_up_to: int,
                progress: bool) -> list[Example | LazyExample]:
    """The pairs as examples; one of the first ``lazy_up_to`` that is too large for memory is read patch by
    patch."""
    kwargs = dict(spatial_dims=config.model.spatial_dims, in_channels=config.model.in_channels,
                  num_classes=config.num_classes,
                  normalization=config.normalization, labels=config.labels, weights=config.loss.weights)
    dims = config.model.spatial_dims
    return [
        LazyExample(i, lbl, seed=config.seed, **kwargs)  # type: ignore[arg-type]
        if k < lazy_up_to and is_large(i, dims) else load_example(i, lbl, **kwargs)  # type: ignore[arg-type]
        for k, (i, lbl) in enumerate(tqdm(pairs, desc="loading", unit="img", disable=not progress, leave=False))]


def rehearsal_examples(config: TrainConfig, limit: int | None = None,
                       progress: bool = False) -> list[Example | LazyExample]:
    """A fine-tuning run's rehearsal pairs (``retain.images``/``labels``; none if unset), read by the run's
    resolved label convention; with ``limit``, that many spread evenly over them (in file order).

    Raises:
        BiounetError: naming the file, for missing or unreadable data and labels that do not fit.
    """
    if not config.retain.images:
        return []
    pairs = pair_files(Path(config.retain.images), Path(config.retain.labels))
    if limit is not None and len(pairs) > limit:
        pairs = [pairs[k * len(pairs) // limit] for k in range(limit)]
    resolve_labels(config, [lbl for _, lbl in pairs], [], progress, report=False)  # checked, not decided
    return _load_pairs(config, pairs, len(pairs), progress)


def load_retained(config: TrainConfig, progress: bool = True) -> list[Example | LazyExample]:
    """A fine-tuning run's examples beside its training pairs (``retain``): the start model's training pairs
    (rehearsal) and unlabelled images (distillation only), read by the run's resolved label convention; none
    when ``retain.share`` is 0.

    Raises:
        BiounetError: naming the file, for missing or unreadable data and labels that do not fit.
    """
    retain = config.retain
    if retain.share == 0:
        # No patch is drawn from them: not read, and not counted in the object size the checkpoint records.
        return []
    retained: list[Example | LazyExample] = [*rehearsal_examples(config, progress=progress)]
    if retain.unlabelled:
        folder = Path(retain.unlabelled)
        if not folder.is_dir():
            raise BiounetError("folder not found", folder)
        files = list_image_files(folder)
        if not files:
            raise BiounetError("folder holds no image files", folder)
        retained += [unlabelled_example(path, spatial_dims=config.model.spatial_dims,
                                        in_channels=config.model.in_channels, normalization=config.normalization,
                                        distance=config.model.output == "distance")
                     for path in tqdm(files, desc="unlabelled", unit="img", disable=not progress, leave=False)]
    return retained


def draw_weights(train: Sequence[Example | LazyExample], retained: Sequence[Example | LazyExample],
                 share: float) -> list[float]:
    """Per-example draw weights that give ``retained`` ``share`` of the patches and ``train`` the rest, each
    group's images in proportion to their pixels (see :class:`~biounet.data.sampling.PatchSampler`)."""
    if not retained:
        return [1.0] * len(train)
    train_pixels, retained_pixels = sum(e.size for e in train), sum(e.size for e in retained)
    return [(1 - share) / train_pixels] * len(train) + [share / retained_pixels] * len(retained)


def resolve_labels(config: TrainConfig, train_labels: list[Path], val_labels: list[Path],
                   progress: bool = True, report: bool = True) -> TrainConfig:
    """``config`` with ``labels.kind`` and ``labels.foreground`` decided from all training labels together,
    checked on every training and validation label; prints the decision as one line.

    Args:
        config: the run's config.
        train_labels: the training label files.
        val_labels: the validation label files (checked, not used to decide).
        progress: show a progress bar.
        report: print the decision.

    Raises:
        BiounetError: naming the file and its values, for a label that does not fit the convention or a
            training set without foreground.
    """
    dims, classes = config.model.spatial_dims, config.num_classes
    found = [large_label_values(path, dims) if is_large(path, dims) else label_values(read_label(path, dims), path)
             for path in tqdm(train_labels + val_labels, desc="labels", unit="img", disable=not progress,
                              leave=False)]
    labels = config.labels.resolve(found[:len(train_labels)], classes)
    for summary in found[len(train_labels):]:
        labels.check(summary, classes)
    seen = sorted({v for s in found[:len(train_labels)] for v in s.values if v != labels.ignore})
    how = "detected from" if not config.labels.resolved else "as configured; checked on"
    if report:
        print(f"labels: {labels.describe()}, {how} {len(train_labels)} training labels with values "
              f"{format_values(seen)}")
    return dataclasses.replace(config, labels=labels)


def train(config: TrainConfig, out_dir: Path, resume: bool = False, device: str | torch.device | None = None,
          progress: bool = True, spent_seconds: float = 0.0, ranks: Ranks | None = None,
          callbacks: Mapping[str, Sequence[Callback]] | None = None) -> Trainer:
    """Runs (or resumes) training; writes ``model.pt`` (best), ``last.pt``, ``config.yaml``, ``log.csv``,
    ``curves.png`` and ``overlays/`` into ``out_dir``. A ``minutes`` budget holds for all of it, from reading
    the data to the overlays (see :mod:`biounet.training.budget`), plus ``spent_seconds`` (e.g. planning).

    In a distributed run (``ranks`` from :func:`biounet.training.distributed.start`), every rank calls this
    with the same config; rank 0 alone validates, tunes and writes.

    Args:
        config: the run's configuration.
        out_dir: the run directory.
        resume: continue the run in ``out_dir`` from ``last.pt``.
        device: the training device.
        progress: show progress bars.
        spent_seconds: time already spent on this run (planning), counted against a minute budget.
        ranks: this process's place in a distributed run.
        callbacks: more callbacks per trainer event (see :class:`~biounet.training.trainer.Trainer`), e.g. a
            GUI's live plot; a callback may call ``trainer.request_stop()``.

    Raises:
        BiounetError: for bad data or config, an existing run without ``resume``, or a missing one with it.
    """
    if resume and not (out_dir / "last.pt").exists():
        raise BiounetError("nothing to resume: no last.pt in the run directory", out_dir)
    if not resume and (out_dir / "last.pt").exists():
        raise BiounetError("a run already exists here; use --resume to continue it or choose another --out",
                           out_dir)
    started = time.monotonic() - spent_seconds  # a minute budget counts reading the data too
    ranks = ranks or Ranks()
    torch_device = resolve_device(device)
    torch.manual_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    # The resolved config is the one the trainer, config.yaml and the checkpoints keep.
    config, train_examples, val_examples = load_examples(config, progress, report=ranks.main)
    model = initial_model(config)
    input_shape = config.model.valid_input_shape(config.tile_shape, min_output=config.model.alignment)
    from biounet.data.sampling import PatchSampler

    retained = load_retained(config, progress and ranks.main)
    sampler = PatchSampler(train_examples + retained, input_shape, config.model.output_shape(input_shape),
                           config.foreground_oversampling, draw_weights(train_examples, retained, config.retain.share))
    trainer = Trainer(config, model, sampler, make_validator(val_examples, config.num_classes, config.model.output),
                      out_dir, torch_device, ranks, object_size=measure_object_size(train_examples + retained))
    if resume:
        trainer.resume()
    if ranks.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "config.yaml") as tmp:
            tmp.write_text(config.to_yaml())
        ProgressBar(trainer.steps_per_epoch, progress).attach(trainer)
        CSVLogger(out_dir / "log.csv").attach(trainer)
        TensorBoardLogger(out_dir / "tensorboard").attach(trainer)
        trainer.add_callback("on_epoch_end", lambda t: plot_curves(t.state.history, out_dir / "curves.png"))
    for event, functions in (callbacks or {}).items():
        for function in functions:
            trainer.add_callback(event, function)
    trainer.run(setup_seconds=time.monotonic() - started)
    if ranks.main:
        if trainer.best is None and resume and trainer.best_path.exists():
            # The resumed run found no better model than the earlier one.
            trainer.best = load_checkpoint(trainer.best_path)
        if trainer.best is not None:  # none if stopped before any validation
            trainer.best, probabilities = finish_model(trainer.best, trainer.best_path, val_examples, config)
            write_overlays(out_dir, trainer.best, val_examples, probabilities)
    ranks.barrier()  # the others wait for the run's files, so that every process returns a finished run
    if ranks.main and trainer.best is None and not trainer.best_path.exists():
        # A budget spent on reading and planning leaves no model: saying "done" would send the user to a
        # model.pt that is not there.
        raise BiounetError(f"the budget ({config.minutes:g} min) ran out after {trainer.state.step} steps, before "
                           f"the first validation: no model was kept; give more --minutes", out_dir)
    return trainer


# A run that starts from an instance model keeps that model's post-processing, and its TTA choice, unless
# its validation images hold at least this many objects, all annotated: the start model's were chosen on far
# more, and a search on a few objects over-fits (fine-tuning on 10 fully labelled colour images tuned a min
# size of 437 px on its one validation image; unseen images of that kind fell from 0.42 to 0.19).
MIN_TUNING_OBJECTS = 100


def finish_model(best: Checkpoint, path: Path, examples: list[Example],
                 config: TrainConfig) -> tuple[Checkpoint, list[np.ndarray]]:
    """The best model with its test-time augmentation chosen and, for an instance model, its post-processing
    tuned on the validation images; saved to ``path``. Prints one line per choice.

    TTA averages over the transforms the augmentation covered (:meth:`AugmentConfig.symmetry`); it is
    switched on where it lowers the validation error by :data:`TTA_GAIN` or more. An instance model's
    post-processing is tuned once, on the plain predictions (the search costs dozens of validations), and
    both predictions are scored with it. A run that keeps its start model's post-processing (too few
    validation objects, see :data:`MIN_TUNING_OBJECTS`) keeps its TTA choice too.

    Args:
        best: the run's best model.
        path: where it is saved (``model.pt``).
        examples: the validation examples.
        config: the run's config.

    Returns:
        The model and its validation probabilities as the chosen TTA predicts them.
    """
    from biounet.infer.tta import transforms

    if not examples:
        return best, []
    symmetry = config.augment.symmetry(config.model.spatial_dims)
    group = len(transforms(config.model.spatial_dims, symmetry))
    candidates = {False: [predict_example(best, e) for e in examples]}
    tuned = None
    if config.instance_task and all(e.objects is not None for e in examples):
        tuned = _instance_params(best, candidates[False], examples, config.init)
        print(tuned[1])
    params = tuned[0] if tuned is not None else best.instances
    if tuned is not None and tuned[2] is not None:  # the start model's settings kept: its TTA choice too
        tta = tuned[2]
        print(f"tta: {'on' if tta.enabled else 'off'}: as {config.init} chose it")
        if tta.enabled:
            candidates[True] = [predict_example(dataclasses.replace(best, tta=tta), e, tta=True) for e in examples]
    else:
        if group > 1:
            averaged = dataclasses.replace(best, tta=TTA(symmetry))
            candidates[True] = [predict_example(averaged, e, tta=True) for e in examples]
        errors = {use: _error(probabilities, examples, config, params) for use, probabilities in candidates.items()}
        (plain_error, what), (tta_error, _) = errors[False], errors.get(True, errors[False])
        use = True in errors and tta_error < plain_error and tta_error <= (1 - TTA_GAIN) * plain_error
        if True in errors:
            change = (tta_error - plain_error) / plain_error if plain_error > 0 else 0.0
            print(f"tta: {'on' if use else 'off'}: averaging over {group} {symmetry} transforms changes the "
                  f"validation {what} from {plain_error:.4g} to {tta_error:.4g} ({change:+.0%}; "
                  f"{'kept' if use else f'not kept: it must gain {TTA_GAIN:.0%} to pay'} for {group}x the "
                  "prediction time)")
        else:
            print("tta: off: the augmentation covered no flips or turns to average over")
        tta = TTA(symmetry, use)
    finished_best = dataclasses.replace(best, instances=params, tta=tta)
    save_checkpoint(path, finished_best.model, finished_best.normalization, finished_best.class_names,
                    extra=finished_best.extra, instances=finished_best.instances, tta=finished_best.tta,
                    object_size=finished_best.object_size)
    return finished_best, candidates[tta.enabled]


def _error(probabilities: list[np.ndarray], examples: list[Example], config: TrainConfig,
           instances: InstanceParams | None) -> tuple[float, str]:
    """The validation error of ``probabilities`` by the run's monitor, and what it is."""
    scores = score_predictions(probabilities, examples, config.num_classes, config.model.output, instances)
    monitor = config.monitor if config.monitor in scores else "dice"
    if monitor == "rand_error":
        return scores["rand_error"], "Rand error"
    return 1.0 - scores[monitor], f"1 - {'accuracy@0.5' if monitor == 'accuracy' else monitor}"


def _instance_params(best: Checkpoint, probabilities: list[np.ndarray], examples: list[Example],
                     start: str = "") -> tuple[InstanceParams, str, TTA | None]:
    """An instance model's post-processing tuned on the validation images, a line that says so, and ``None``.

    With fewer than :data:`MIN_TUNING_OBJECTS` validation objects, or partly annotated ones, a run that
    started from an instance model keeps that model's post-processing instead; the third item is then the
    start model's TTA choice, kept too.
    """
    from biounet.data.labels import IGNORE_INDEX
    from biounet.training.tuning import tune_instance_params

    objects = sum(len(np.unique(e.objects[e.objects > 0])) for e in examples if e.objects is not None)
    partial = any(bool((e.target == IGNORE_INDEX).any()) for e in examples)
    if (objects < MIN_TUNING_OBJECTS or partial) and start:
        from biounet.pretrained import resolve_model

        source = load_checkpoint(resolve_model(start))
        if source.instances is not None:
            why = "are partly annotated" if partial else f"hold {objects} objects, too few"
            return (source.instances, f"instances: the validation images {why} to tune the post-processing on; "
                    f"kept that of {start}", source.tta)
    tuned = tune_instance_params(probabilities, [e.objects for e in examples],  # type: ignore[misc]
                                 [e.target == IGNORE_INDEX for e in examples], best.config.output)
    params = tuned.params
    line = (f"instances: seed {params.seed:g}, foreground {params.foreground:g}, min size {params.min_size} px "
            f"give accuracy@0.5 {tuned.accuracy:.4f} on the {len(examples)} validation images "
            f"(defaults: {tuned.default_accuracy:.4f})")
    return params, line, None


def initial_model(config: TrainConfig) -> UNet:
    """A new network for ``config.model``, with the weights of ``config.init`` when it names a checkpoint.

    Raises:
        BiounetError: naming the checkpoint, if it cannot be read or its architecture differs.
    """
    model = UNet(config.model)
    if not config.init:
        return model
    from biounet.pretrained import resolve_model

    path = resolve_model(config.init)
    source = load_checkpoint(path)
    if source.config != config.model:
        raise BiounetError("init checkpoint's model differs from the config's model (set model to "
                           f"{source.config.to_dict()})", path)
    model.load_state_dict(source.model.state_dict())
    return model


def write_overlays(out_dir: Path, best: Checkpoint, examples: list[Example],
                   probabilities: list[np.ndarray] | None = None) -> None:
    """Overlays of the best model's predictions on the validation images, in ``out_dir/overlays``.

    Args:
        out_dir: the run directory.
        best: the model.
        examples: the validation examples.
        probabilities: the model's predictions of them, if made already.
    """
    (out_dir / "overlays").mkdir(exist_ok=True)
    for k, example in enumerate(examples):
        probs = probabilities[k] if probabilities is not None else predict_example(best, example)
        prediction = probabilities_to_mask(probs, best.config.output)
        plot_overlay(example.image, example.target, prediction, out_dir / "overlays" / f"{example.name}.png",
                     title=example.name)
