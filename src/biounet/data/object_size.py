"""The size of a training set's objects, measured as training reads them, for the checkpoint to record."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biounet.data.examples import Example, LazyExample
from biounet.data.targets import instances_from_classes
from biounet.models.object_size import ObjectSize, size_of


def measure_object_size(examples: Sequence[Example | LazyExample]) -> ObjectSize | None:
    """The median equivalent diameter of the objects of some training examples, and their pixel size.

    The objects are an instance label's ids, or for a class map the connected components of each
    annotated foreground class (as :func:`biounet.planning.fingerprint.fingerprint` counts them). Examples
    read patch by patch (:class:`~biounet.data.examples.LazyExample`) are too large to label whole and are
    left out.

    Args:
        examples: training examples, as :func:`biounet.training.run.load_examples` reads them.

    Returns:
        The size (:func:`~biounet.models.object_size.size_of`), or ``None`` when no example holds an
        object. The pixel size is the median over the
        examples of each file's mean pixel size, ``None`` when every file gave 1.0 (which is what a file
        without calibration reads as).
    """
    loaded = [e for e in examples if isinstance(e, Example)]
    spacings = [float(np.mean(e.spacing)) for e in loaded if e.spacing]
    calibrated = any(s != 1.0 for s in spacings)
    return size_of([_object_ids(e) for e in loaded], float(np.median(spacings)) if calibrated else None)


def _object_ids(example: Example) -> np.ndarray:
    if example.objects is not None:
        return example.objects
    return instances_from_classes(np.where(example.target > 0, example.target, 0))
