"""Before keeping a fine-tuned model: the new model against the one it started from.

Two questions, answered on the user's own images, never on data they did not give:

- on the *held-back corrected images* (the run's validation pairs, when some corrected images were held
  out of training), does the new model score better than the start model by the run's metric?
- on the *uncorrected images* (``retain.unlabelled``), how much does it still agree with the start model?
  There is no truth there, so agreement is what can be measured: accuracy@0.5 of the new model's objects
  matched to the start model's (pooled), or the Dice of their foreground masks for a semantic model. A low
  agreement is where fine-tuning may have unlearnt something: the report says so, for the user to look.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biounet.infer.instances import instances_from_probabilities
from biounet.infer.predict import predict
from biounet.io.channels import match_channels
from biounet.io.files import list_image_files
from biounet.io.readers import read_image_meta
from biounet.metrics.instances import matching_dataset
from biounet.models.checkpoint import Checkpoint, load_checkpoint
from biounet.models.outputs import foreground_probability
from biounet.training.config import TrainConfig
from biounet.training.run import load_examples
from biounet.training.validation import predict_example, score_predictions

# Below this agreement with the start model on the uncorrected images, the report asks the user to look.
AGREEMENT_FLOOR = 0.8


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
    """

    metric: str
    held_back: int
    start_score: float | None
    new_score: float | None
    uncorrected: int
    agreement: float | None

    @property
    def worse(self) -> bool:
        """Whether the new model scores worse than the start model on the held-back corrected images."""
        if self.start_score is None or self.new_score is None:
            return False
        lower_is_better = self.metric == "rand_error"
        return self.new_score > self.start_score if lower_is_better else self.new_score < self.start_score

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
        scores = [score_predictions([predict_example(m, e, tta=m.tta.enabled) for e in examples], examples,
                                    config.num_classes, m.config.output, m.instances)[config.monitor]
                  for m in (start, new)]
        start_score, new_score = scores
    files = list_image_files(Path(config.retain.unlabelled)) if config.retain.unlabelled else []
    agreement = _agreement(start, new, files) if files else None
    return Comparison(config.monitor, count, start_score, new_score, len(files), agreement)


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

