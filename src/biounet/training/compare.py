"""Before keeping a fine-tuned model: the new model against the one it started from.

Two questions, answered on the user's own images, never on data they did not give:

- on the *held-back corrected images* (the run's validation pairs, when some corrected images were held
  out of training), does the new model score better than the start model by the run's metric?
- on the *start model's own training pairs* (``retain.images``, at most :data:`KNOWN_PAIRS` of them: what
  it knew, with their true labels; a shipped model carries its own), does the new model score lower than
  the start model? That is forgetting, measured;
- on the *uncorrected images* (``retain.unlabelled``), how much does it still agree with the start model?
  There is no truth there, so agreement is what can be measured: accuracy@0.5 of the new model's objects
  matched to the start model's (pooled), or the Dice of their foreground masks for a semantic model. A low
  agreement is where fine-tuning may have unlearnt something: the report says so, for the user to look.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biounet.data.examples import Example
from biounet.infer.instances import instances_from_probabilities
from biounet.infer.predict import predict
from biounet.io.channels import match_channels
from biounet.io.files import list_image_files
from biounet.io.readers import read_image_meta
from biounet.metrics.instances import matching_dataset
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.models.outputs import foreground_probability
from biounet.training.config import TrainConfig
from biounet.training.run import load_examples, rehearsal_examples
from biounet.training.validation import predict_example, score_predictions

# Below this agreement with the start model on the uncorrected images, the report asks the user to look.
AGREEMENT_FLOOR = 0.8
# At most this many of the start model's training pairs are predicted by both models for the check.
KNOWN_PAIRS = 20


@dataclass(frozen=True)
class Comparison:
    """A fine-tuned model against its start model (see the module's text).

    Attributes:
        metric: the run's monitored metric (``accuracy``: accuracy@0.5 of the objects; ``dice`` ...).
        held_back: the number of corrected images held out of training.
        start_score: the start model's score on them (``None`` without any).
        new_score: the new model's.
        uncorrected: the number of uncorrected images.
        agreement: the new model's agreement with the start model on them (``None`` without any).
        known: the number of the start model's training pairs scored.
        start_known: the start model's score on them (``None`` without any).
        new_known: the new model's.
    """

    metric: str
    held_back: int
    start_score: float | None
    new_score: float | None
    uncorrected: int
    agreement: float | None
    known: int = 0
    start_known: float | None = None
    new_known: float | None = None

    @property
    def worse(self) -> bool:
        """Whether the new model scores worse than the start model on the held-back corrected images."""
        return self._worse(self.start_score, self.new_score)

    @property
    def forgot(self) -> bool:
        """Whether the new model scores worse than the start model on the start model's training pairs."""
        return self._worse(self.start_known, self.new_known)

    def _worse(self, start: float | None, new: float | None) -> bool:
        if start is None or new is None:
            return False
        return new > start if self.metric == "rand_error" else new < start

    def report(self) -> str:
        """What the comparison found, in plain sentences, the verdict first."""
        lines = []
        if self.start_score is not None and self.new_score is not None:
            verdict = "WORSE than" if self.worse else "better than" if self.new_score != self.start_score \
                else "level with"
            lines.append(f"the new model is {verdict} the start model on the {self.held_back} held-back corrected "
                         f"images: {self.metric} {self.new_score:.4f} against {self.start_score:.4f}"
                         + ("; keep the start model, or correct more images" if self.worse else ""))
        else:
            lines.append("no corrected image was held back (too few), so nothing says whether the new model is "
                         "better: correct more images, or compare on images of your own")
        if self.start_known is not None and self.new_known is not None:
            lines.append(f"on {self.known} of the start model's own training images (what it knew) it "
                         f"{'scores WORSE' if self.forgot else 'does not score worse'}: {self.metric} "
                         f"{self.new_known:.4f} against {self.start_known:.4f}"
                         + ("; it has unlearnt some of what it knew: keep the start model for images like "
                            "those" if self.forgot else ""))
        if self.agreement is not None:
            what = "objects" if self.metric == "accuracy" else "foreground"
            lines.append(f"on the {self.uncorrected} uncorrected images it agrees with the start model at "
                         f"{self.agreement:.3f} ({'accuracy@0.5 of the' if what == 'objects' else 'Dice of the'} "
                         f"{what})" + ("; it changed much there: look at them before keeping it"
                                      if self.agreement < AGREEMENT_FLOOR else ""))
        return "\n".join(lines)


def compare_to_start(run_dir: Path, config: TrainConfig) -> Comparison:
    """The fine-tuning run in ``run_dir`` (its ``model.pt``) against its ``init`` model.

    Args:
        run_dir: a finished fine-tuning run.
        config: its config (``init`` set).

    Raises:
        BiounetError: naming the file, for a model or image that cannot be read.
    """
    from biounet.pretrained import resolve_model

    start, new = load_checkpoint(resolve_model(config.init)), load_checkpoint(run_dir / "model.pt")
    data = config.data
    held_back = not (data.val_images == data.images and data.val_labels == data.labels)
    start_score = new_score = None
    count = 0
    if held_back:
        _, _, examples = load_examples(config, progress=False, report=False)
        count = len(examples)
        start_score, new_score = _scores(start, new, examples, config)
    known = [e for e in rehearsal_examples(config, KNOWN_PAIRS) if isinstance(e, Example)]
    start_known, new_known = _scores(start, new, known, config) if known else (None, None)
    files = list_image_files(Path(config.retain.unlabelled)) if config.retain.unlabelled else []
    agreement = _agreement(start, new, files) if files else None
    return Comparison(config.monitor, count, start_score, new_score, len(files), agreement, len(known),
                      start_known, new_known)


def _scores(start: Checkpoint, new: Checkpoint, examples: list[Example], config: TrainConfig) -> tuple[float, float]:
    """Both models' scores (the run's monitored metric) on ``examples``, each with its own TTA choice."""
    start_score, new_score = (
        score_predictions([predict_example(m, e, tta=m.tta.enabled) for e in examples], examples,
                          config.num_classes, m.config.output, m.instances)[config.monitor]
        for m in (start, new))
    return start_score, new_score


def _agreement(start: Checkpoint, new: Checkpoint, files: list[Path]) -> float:
    """accuracy@0.5 of ``new``'s objects against ``start``'s (pooled over ``files``), or for semantic models
    the Dice of their foreground masks over all pixels."""
    found: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for path in files:
        image, _ = read_image_meta(path, start.config.spatial_dims)
        image = match_channels(image, start.config.in_channels, path)
        for k, model in enumerate((start, new)):
            probs = predict(model, image, tta=model.tta.enabled, normalization=model.normalization)
            found[k].append(instances_from_probabilities(probs, model.instances, model.config.output)
                            if model.instances is not None
                            else foreground_probability(probs, model.config.output) > 0.5)
    if start.instances is not None:
        return matching_dataset(found[1], found[0], (0.5,))[0].accuracy
    both = sum(int((a & b).sum()) for a, b in zip(found[0], found[1], strict=True))
    total = sum(int(a.sum() + b.sum()) for a, b in zip(found[0], found[1], strict=True))
    return 1.0 if total == 0 else 2 * both / total

