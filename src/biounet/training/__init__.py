"""Training a U-Net from examples: the loop and what runs around it.

- ``config``: :class:`TrainConfig`, the typed run config (data, model, loss, optimiser, augmentation), YAML
  and ``key=value`` overrides.
- ``trainer``: :class:`Trainer`, the step and epoch loop, validation, checkpoints, callbacks, resuming.
- ``budget``: the wall-clock or epoch budget and when to stop.
- ``callbacks``: progress bar, CSV log and TensorBoard.
- ``validation``: the scores a run validates with (Dice, IoU, pooled Rand error, object accuracy).
- ``tuning``: the instance post-processing tuned on the validation images.
- ``plots``: loss curves and validation overlays.
- ``distributed``: ranks under ``torchrun`` (DDP, one process per GPU or CPU share).
- ``interrupts``: Ctrl-C deferred until a step is whole, so ``last.pt`` is always resumable.
- ``finetune``: the config for fine-tuning a model on new pairs (a tenth of its learning rate).
- ``run``: one run from a config: examples, model, trainer, then tuning and overlays of the best model.
"""
