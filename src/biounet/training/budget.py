"""A run's wall-clock budget, kept honestly: ``--minutes M`` ends the whole run inside M minutes.

The whole run means reading the data and computing weight maps, every step and validation, the final
validation, the checkpoints and the overlays of the best model. So the trainer does not stop stepping when
the budget is spent but when what must still follow (one validation, one more for the overlays, the
checkpoint writes) would no longer fit. Those are measured as the run goes, never guessed from FLOPs; the
first validation's cost is measured before training starts when the budget is in minutes.
"""

from __future__ import annotations

import math
import time

# A little room for what is not timed (plots, log files, closing TensorBoard): a share of the budget.
MARGIN = 0.01
# How fast a measured time forgets a slow outlier: the slowest recent time, shrunk by this per new one.
DECAY = 0.9


class Budget:
    """How much of a run's time is spent and what the end of the run still needs.

    Args:
        seconds: the whole run's budget in seconds (``math.inf`` for none).
        spent: seconds already spent (set-up, or the earlier sessions of a resumed run).
    """

    def __init__(self, seconds: float, spent: float = 0.0) -> None:
        self.seconds = seconds
        self.started = time.monotonic() - spent
        self.step_seconds = 0.0
        self.validation_seconds = 0.0
        self.objects_seconds = 0.0
        self.save_seconds = 0.0
        self.epoch_end_seconds = 0.0
        # The final validation and the best model's prediction of the validation images (the trainer adds
        # one per test-time transform).
        self.ending_validations = 2
        # An instance model's post-processing search: this many times the objects of a validation.
        self.tuning_points = 0

    @property
    def limited(self) -> bool:
        return math.isfinite(self.seconds)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def training_share(self) -> float:
        """The spent share of the time there is for training (the budget less the end of the run)."""
        return self.elapsed() / max(self.seconds - self.ending_seconds(), 1e-9)

    def note_step(self, seconds: float) -> None:
        # The slowest of the recent steps, decaying: a step time that varies must still fit.
        self.step_seconds = max(seconds, DECAY * self.step_seconds)

    def note_validation(self, seconds: float, objects_seconds: float = 0.0) -> None:
        """A validation's time, and the part of it that made and matched objects (instance models).

        The slowest of the recent ones, decaying as for steps: the first validation, timed cold before any
        step, can take ten times the later ones on a loaded machine, and keeping it would end a short run
        early for an ending that never needs it.
        """
        self.validation_seconds = max(seconds, DECAY * self.validation_seconds)
        self.objects_seconds = max(objects_seconds, DECAY * self.objects_seconds)

    def note_save(self, seconds: float) -> None:
        self.save_seconds = max(seconds, self.save_seconds)

    def note_epoch_end(self, seconds: float) -> None:
        """An epoch's end after validation: checkpoints, log, plots (the overlays cost about as much)."""
        self.epoch_end_seconds = max(seconds, self.epoch_end_seconds)

    def ending_seconds(self) -> float:
        """What the end of the run takes: the final validation and epoch end, the best model's predictions of
        the validation images (to choose test-time augmentation), an instance model's post-processing search,
        then its save and overlays (a plot each: about as much again as an epoch's end)."""
        return self.ending_validations * self.validation_seconds + self.tuning_points * self.objects_seconds + \
            2 * max(self.epoch_end_seconds, self.save_seconds) + MARGIN * self.seconds

    def room_for_step(self) -> bool:
        """Whether one more step still leaves time for the end of the run."""
        return self.remaining() >= self.step_seconds + self.ending_seconds()

    def room_for_validation_and_step(self) -> bool:
        """Whether a validation now, then a step, still leave time for the end of the run."""
        return self.remaining() >= self.validation_seconds + self.step_seconds + self.ending_seconds()
