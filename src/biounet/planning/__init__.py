"""Planning a run from the data, nnU-Net style: what ``biounet train`` does without a config.

- ``fingerprint``: the dataset's fingerprint (sizes, spacing, channels, intensities, classes, objects).
- ``planner``: the plan (network depth and width, tile, loss, augmentation, budget) made from it, with
  the reason for each choice; candidate widths are timed on the training device.
"""
