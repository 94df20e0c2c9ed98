"""Training data: from labels on disk to the examples that training samples patches from.

- ``labels``: label conventions (binary, classes, instances, an ignore value): :class:`LabelConfig`,
  :func:`read_label`, ``IGNORE_INDEX``.
- ``targets``: what a label becomes for the loss: boundary classes or the distance to the boundary, cells
  as instance ids, the U-Net paper's border weight map.
- ``sparse``: sparse annotation of volumes (a few annotated slices, the rest ignored).
- ``examples``: image/label pairs, :func:`read_pair`, and the two kinds of training example: in memory
  (:class:`Example`) and read patch by patch (:class:`LazyExample`).
- ``sampling``: random training patches drawn from the examples, and their batches.
"""
