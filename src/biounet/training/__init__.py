"""Training: typed config, the trainer with callbacks, validation and run set-up."""
