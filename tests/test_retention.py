"""Keeping what a fine-tuned model knew: the distillation loss against hand-computed cases, the anchor, the
rehearsal/unlabelled share of the patches, the fine-tuning config's defaults, and a run in which
distillation measurably keeps the start model's answers on an unlabelled image."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from biounet.data.examples import Example, unlabelled_example
from biounet.data.labels import IGNORE_INDEX
from biounet.data.sampling import PatchSampler
from biounet.errors import BiounetError
from biounet.losses import distillation_loss
from biounet.models import UNet
from biounet.models.checkpoint import load_checkpoint, save_checkpoint
from biounet.models.instance_params import InstanceParams
from biounet.models.normalization import Normalization
from biounet.models.symmetry import TTA
from biounet.training.config import apply_overrides
from biounet.training.finetune import finetune_config
from biounet.training.retention import Retention
from biounet.training.run import draw_weights, load_examples, load_retained, train
from conftest import write_nuclei_dataset

TINY = ["model.base_channels=4", "model.depth=2"]


def test_distillation_is_the_kl_divergence_per_pixel_over_all_pixels() -> None:
    # Pixel 0: teacher (0.8, 0.2), model (0.5, 0.5); pixel 1 agrees; pixel 2 is masked out.
    teacher = torch.tensor([math.log(0.8), math.log(0.2)])
    logits = torch.zeros(1, 2, 1, 3)
    teacher_logits = torch.stack([teacher, torch.zeros(2), torch.tensor([5.0, -5.0])], dim=1)[None, :, None, :]
    logits[0, :, 0, 2] = torch.tensor([-5.0, 5.0])
    mask = torch.tensor([[[True, True, False]]])
    expected = (0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)) / 3
    assert distillation_loss(logits, teacher_logits, mask).item() == pytest.approx(expected, rel=1e-5)
    assert distillation_loss(logits, logits, torch.ones(1, 1, 3, dtype=torch.bool)).item() == pytest.approx(0, abs=1e-7)


def test_distillation_of_sigmoid_outputs_sums_a_bernoulli_kl_per_channel() -> None:
    # A distance model's two sigmoids: teacher 0.9 and 0.5, model 0.5 and 0.5.
    teacher = torch.tensor([math.log(9.0), 0.0]).view(1, 2, 1, 1)
    expected = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    loss = distillation_loss(torch.zeros(1, 2, 1, 1), teacher, torch.ones(1, 1, 1), "distance")
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_the_anchor_is_the_squared_distance_to_the_start_weights() -> None:
    start = UNet(apply_overrides({}, TINY).model)
    retention = Retention(start, distill=0.0, anchor=0.5)
    model = UNet(start.config)
    model.load_state_dict(start.state_dict())
    zero = torch.zeros(1, 2, 4, 4)
    assert retention.loss(model, torch.zeros(1, 1, 4, 4), zero, torch.ones(1, 4, 4)).item() == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    count = next(model.parameters()).numel()
    got = retention.loss(model, torch.zeros(1, 1, 4, 4), zero, torch.ones(1, 4, 4)).item()
    assert got == pytest.approx(0.5 * count * 0.01, rel=1e-4)


def test_an_unlabelled_image_is_unannotated_everywhere(tmp_path: Path) -> None:
    iio.imwrite(tmp_path / "a.png", np.full((20, 30), 7, np.uint8))
    example = unlabelled_example(tmp_path / "a.png", in_channels=1, normalization=Normalization(),
                                 distance=True)
    assert example.image.shape == (1, 20, 30) and (example.target == IGNORE_INDEX).all()
    assert (example.weight == 0).all() and example.distance is not None and example.objects is None


def test_retained_examples_get_their_share_of_the_patches(tmp_path: Path) -> None:
    for name, size in (("a", 20), ("b", 40), ("c", 10)):
        iio.imwrite(tmp_path / f"{name}.png", np.zeros((size, size), np.uint8))
    examples = [unlabelled_example(tmp_path / f"{n}.png", in_channels=1, normalization=Normalization())
                for n in "abc"]
    weights = draw_weights(examples[:2], examples[2:], 0.3)
    sampler = PatchSampler(examples, (8, 8), (8, 8), draw_weights=weights)
    assert sampler.probabilities[2].item() == pytest.approx(0.3)
    # Within the training pairs, in proportion to their pixels (400 : 1600).
    assert sampler.probabilities[0].item() == pytest.approx(0.7 * 0.2)
    assert draw_weights(examples, [], 0.5) == [1.0, 1.0, 1.0]


def test_retention_settings_are_checked() -> None:
    with pytest.raises(BiounetError, match="set init"):
        apply_overrides({}, ["retain.distill=1"])
    with pytest.raises(BiounetError, match="distillation alone"):
        apply_overrides({}, ["init=x.pt", "retain.unlabelled=somewhere"])
    with pytest.raises(BiounetError, match=r"both retain\.images and retain\.labels"):
        apply_overrides({}, ["retain.images=somewhere"])
    with pytest.raises(BiounetError, match=r"retain.share must be in \[0, 1\)"):
        apply_overrides({}, ["retain.share=1"])


def test_finetuning_rehearses_the_recorded_training_data_and_does_not_lower_the_rate_twice(tmp_path: Path) -> None:
    images, labels = write_nuclei_dataset(tmp_path / "data", 3)
    model = UNet(apply_overrides({}, TINY).model)
    trained = apply_overrides({}, [*TINY, f"data.images={images}", f"data.labels={labels}", "optim.lr=1e-3"])
    save_checkpoint(tmp_path / "start.pt", model, extra={"train_config": trained.to_yaml()})
    config = finetune_config(tmp_path / "start.pt", images, labels, minutes=1.0)
    assert (config.retain.images, config.retain.labels) == (str(images), str(labels))
    assert config.retain.distill > 0 and config.keep == "last" and config.optim.lr == pytest.approx(1e-4)
    # A model fine-tuned on corrections rehearses what its own start model knew, not the corrections.
    corrections, corrected = write_nuclei_dataset(tmp_path / "corrections", 2)
    tuned = finetune_config(tmp_path / "start.pt", corrections, corrected, minutes=1.0)
    save_checkpoint(tmp_path / "tuned.pt", model, extra={"train_config": tuned.to_yaml()})
    again = finetune_config(tmp_path / "tuned.pt", corrections, corrected, minutes=1.0)
    assert again.optim.lr == pytest.approx(1e-4)
    assert (again.retain.images, again.retain.labels) == (str(images), str(labels))
    # Pairs in <stem>.rehearsal/ beside the checkpoint come first (how a shipped model carries its data).
    beside_images, _ = write_nuclei_dataset(tmp_path / "start.rehearsal", 2)
    assert finetune_config(tmp_path / "start.pt", corrections, corrected, minutes=1.0).retain.images == str(
        beside_images)
    # Folders that are gone are not rehearsed.
    save_checkpoint(tmp_path / "moved.pt", model, extra={"train_config": apply_overrides(
        {}, [*TINY, f"data.images={tmp_path / 'gone'}", f"data.labels={labels}"]).to_yaml()})
    assert finetune_config(tmp_path / "moved.pt", images, labels, minutes=1.0).retain.images == ""


def test_the_shipped_nuclei_model_carries_its_training_pairs_for_rehearsal(tmp_path: Path) -> None:
    images, labels = write_nuclei_dataset(tmp_path / "corrections", 2)
    config = finetune_config("nuclei", images, labels, minutes=1.0)
    bundled = Path(config.retain.images)
    assert bundled.name == "images" and bundled.parent.name == "nuclei.rehearsal"
    retained = load_retained(config, progress=False)
    assert len(retained) == 80
    # Grey (one channel on disk) and colour images alike reach the model's three channels, with objects.
    assert all(isinstance(e, Example) and e.image.shape[0] == 3 for e in retained)
    assert all(e.objects is not None and e.objects.max() >= 1 for e in retained if isinstance(e, Example))
    # With no share of the patches they are never drawn: neither read nor measured for the recorded object size.
    assert load_retained(dataclasses.replace(config, retain=dataclasses.replace(config.retain, share=0.0)),
                         progress=False) == []


def _disagreement(run: Path, start: UNet, image: torch.Tensor) -> float:
    tuned = load_checkpoint(run / "last.pt").model.eval()
    with torch.no_grad():
        teacher = start.eval()(image)
        return distillation_loss(tuned(image), teacher, torch.ones(1, *teacher.shape[2:], dtype=torch.bool)).item()


def test_distillation_keeps_the_start_models_answers_on_unlabelled_images(tmp_path: Path) -> None:
    # Corrections that say "almost no nuclei anywhere" (one 3x3 object, as the foreground check wants one) at a
    # high rate would unteach a model everything; with the unlabelled images distilled from the start model,
    # its answers there move far less.
    images, labels = write_nuclei_dataset(tmp_path / "data", 2, size=64)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for path in images.iterdir():
        (unlabelled / path.name).write_bytes(path.read_bytes())
        nearly_empty = np.zeros((64, 64), np.uint16)
        nearly_empty[:3, :3] = 1
        iio.imwrite(labels / path.name, nearly_empty)
    start = UNet(apply_overrides({}, TINY).model)
    save_checkpoint(tmp_path / "start.pt", start)
    common = [*TINY, "labels.kind=binary", "tile=64", "samples_per_epoch=16", "epochs=3", "optim.lr=3e-3",
              "checkpoint_seconds=0", "data_workers=0", "augment.elastic_sigma=0", f"init={tmp_path / 'start.pt'}",
              f"data.images={images}", f"data.labels={labels}", f"data.val_images={images}",
              f"data.val_labels={labels}"]
    train(apply_overrides({}, common), tmp_path / "plain", progress=False)
    train(apply_overrides({}, [*common, "retain.distill=10", f"retain.unlabelled={unlabelled}", "retain.share=0.5"]),
          tmp_path / "distilled", progress=False)
    _, examples, _ = load_examples(apply_overrides({}, common), progress=False)
    image = torch.from_numpy(examples[0].image)[None]
    plain = _disagreement(tmp_path / "plain", start, image)
    distilled = _disagreement(tmp_path / "distilled", start, image)
    assert distilled < 0.5 * plain, (plain, distilled)


def test_the_check_before_keeping_says_plainly_when_the_new_model_is_worse() -> None:
    from biounet.training.compare import Comparison

    worse = Comparison("accuracy", 3, 0.60, 0.55, 5, 0.62)
    assert worse.worse and "WORSE than the start model on the 3 held-back corrected images" in worse.report()
    assert "look at them before keeping it" in worse.report()
    better = Comparison("rand_error", 2, 0.10, 0.08, 0, None)
    assert not better.worse and "better than" in better.report() and "uncorrected" not in better.report()
    assert Comparison("rand_error", 2, 0.08, 0.10, 0, None).worse
    unknown = Comparison("dice", 0, None, None, 4, 0.95)
    assert not unknown.worse and "no corrected image was held back" in unknown.report()
    assert "agrees with the start model at 0.950 (Dice of the foreground)" in unknown.report()
    # Better on the corrections, worse on what it knew (the start model's own training pairs): said plainly.
    forgot = Comparison("accuracy", 3, 0.50, 0.60, 0, None, 20, 0.62, 0.40)
    assert not forgot.worse and forgot.forgot and not unknown.forgot
    assert ("on 20 of the start model's own training images (what it knew) it scores WORSE: accuracy 0.4000 "
            "against 0.6200; it has unlearnt") in forgot.report()
    kept = Comparison("accuracy", 3, 0.50, 0.60, 0, None, 20, 0.62, 0.63)
    assert not kept.forgot and "does not score worse" in kept.report()


def test_the_check_scores_both_models_on_what_the_start_model_knew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    from biounet.training import compare

    known_images, known_labels = write_nuclei_dataset(tmp_path / "known", 3, size=64)
    corrections, corrected = write_nuclei_dataset(tmp_path / "corrections", 1, size=64, seed=1)
    trained = apply_overrides({}, [*TINY, "model.out_channels=3", "labels.kind=instances",
                                   f"data.images={known_images}", f"data.labels={known_labels}"])
    save_checkpoint(tmp_path / "start.pt", UNet(trained.model), extra={"train_config": trained.to_yaml()},
                    instances=InstanceParams())
    config = finetune_config(tmp_path / "start.pt", corrections, corrected, minutes=1.0)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes((tmp_path / "start.pt").read_bytes())  # unchanged by the run
    monkeypatch.setattr(compare, "KNOWN_PAIRS", 2)
    result = compare.compare_to_start(tmp_path / "run", config)
    assert result.known == 2 and result.start_known is not None and result.new_known == result.start_known
    assert not result.forgot and "on 2 of the start model's own training images (what it knew)" in result.report()


def test_finetuning_on_few_objects_keeps_the_start_models_post_processing_and_tta(tmp_path: Path) -> None:
    # A search over a few validation objects over-fits: the start model's settings, chosen on far more, stay.
    images, labels = write_nuclei_dataset(tmp_path / "data", 2, size=64)
    start = apply_overrides({}, [*TINY, "model.out_channels=3", "labels.kind=instances"])
    params = InstanceParams(seed=0.4, foreground=0.6, min_size=7)
    save_checkpoint(tmp_path / "start.pt", UNet(start.model), extra={"train_config": start.to_yaml()},
                    instances=params, tta=TTA("dihedral", True))
    config = finetune_config(tmp_path / "start.pt", images, labels, minutes=1.0, overrides=[
        "tile=64", "samples_per_epoch=4", "epochs=1", "minutes=0", "data_workers=0", "checkpoint_seconds=0"])
    train(config, tmp_path / "run", progress=False)
    tuned = load_checkpoint(tmp_path / "run" / "model.pt")
    assert tuned.instances == params and tuned.tta == TTA("dihedral", True)
