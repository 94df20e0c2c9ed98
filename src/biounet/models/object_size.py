"""The size of the objects a model was trained on, stored in its checkpoint, and how object sizes are measured.

A U-Net learns objects at the sizes its training images showed them (its receptive field, the border weight
map and the post-processing's minimum size are all in pixels). A user's nuclei may be twice or half as large
in pixels: ``biounet predict --object-size D`` rescales the image so that objects of ``D`` pixels become
the model's :attr:`ObjectSize.diameter` (:mod:`biounet.infer.rescale`), as Cellpose's diameter does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from biounet.configs import from_dict
from biounet.errors import BiounetError

TOLERANCE = 1.25
"""Objects within this factor of a model's median diameter count as known even when its range is narrower."""


@dataclass(frozen=True)
class ObjectSize:
    """The objects a model was trained on: their median equivalent diameter, and the range of sizes it knows.

    Args:
        diameter: median equivalent diameter (:func:`equivalent_diameters`) of all the training objects, in
            pixels (voxels): the size ``--object-size`` rescales an image's objects to.
        pixel_size: median pixel (voxel) size of the training images, in the unit their files give (TIFF's
            ImageJ calibration, NIfTI's zooms, an HDF5/zarr attribute); ``None`` where the files did not say.
        low, high: the diameters of the 10th and 90th percentiles (:data:`RANGE_PERCENTILES`) of the
            training images' median object sizes: images whose objects lie in this range were common in
            training; ``--object-size auto`` leaves those of them up to a little above the median as they are
            (:func:`biounet.infer.rescale.keeps`). ``None``: the median alone is known (the range is then the
            median within :data:`TOLERANCE`).
        estimate: whether a prediction that names no object size estimates it (``--object-size auto``)
            rather than taking the image as it is: a generalist model's default (the shipped ``nuclei``), for
            images whose objects are of any size.
    """

    diameter: float
    pixel_size: float | None = None
    low: float | None = None
    high: float | None = None
    estimate: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.estimate, bool):
            raise BiounetError(f"object size estimate must be true or false, got {self.estimate!r}")
        for name in ("diameter", "pixel_size", "low", "high"):
            value = getattr(self, name)
            if (value is not None or name == "diameter") and not (value is not None and 0 < value < np.inf):
                raise BiounetError(f"object size {name} must be a positive number, got {value}")
        if self.low is not None and self.high is not None and not self.low <= self.diameter <= self.high:
            raise BiounetError(f"object size range {self.low}..{self.high} must hold its median {self.diameter}")

    @property
    def known(self) -> tuple[float, float]:
        """The diameters the model knows: ``low..high``, at least the median within :data:`TOLERANCE`."""
        return (min(self.low or self.diameter, self.diameter / TOLERANCE),
                max(self.high or self.diameter, self.diameter * TOLERANCE))

    @property
    def physical(self) -> float | None:
        """The diameter in the files' physical unit, where the pixel size is known."""
        return None if self.pixel_size is None else self.diameter * self.pixel_size

    def describe(self) -> str:
        """``18.7 px (10.2..47.5 px)``, with the physical size where the pixel size is known and whether
        predictions estimate it by default."""
        low, high = self.known
        unit = f", {self.physical:.3g} in the files' unit" if self.physical is not None else ""
        estimated = "; estimated from each image by default" if self.estimate else ""
        return f"{self.diameter:.1f} px ({low:.1f}..{high:.1f} px{unit}){estimated}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectSize:
        """The size as :meth:`to_dict` wrote it (a checkpoint's ``object_size`` entry).

        Raises:
            BiounetError: for unknown keys or values that are not a size.
        """
        return from_dict(cls, data, "object size")

    def to_dict(self) -> dict[str, Any]:
        """The size as plain data, for a checkpoint's YAML config."""
        return asdict(self)


def equivalent_diameters(ids: np.ndarray) -> np.ndarray:
    """The equivalent diameter of every object of an id image: the disc of the same area (2D,
    ``2 sqrt(A / pi)``) or the ball of the same volume (3D, ``cbrt(6 V / pi)``), in pixels.

    Args:
        ids: ``int`` object ids, 0 = background, of any spatial dimension.

    Returns:
        float64 diameters, one per object, in increasing id order.
    """
    return diameters_of(object_sizes(ids), ids.ndim)


def object_sizes(ids: np.ndarray) -> np.ndarray:
    """The size in pixels (voxels) of every object of an id image (0 = background), in increasing id order."""
    ids = np.asarray(ids)
    return np.unique(ids[ids > 0], return_counts=True)[1].astype(np.float64)


def diameters_of(sizes: np.ndarray, spatial_dims: int) -> np.ndarray:
    """Equivalent diameters of objects of ``sizes`` pixels (2D areas) or voxels (3D volumes).

    Args:
        sizes: object areas or volumes, in pixels or in physical units.
        spatial_dims: 2 or 3.
    """
    sizes = np.asarray(sizes, np.float64)
    return 2.0 * np.sqrt(sizes / np.pi) if spatial_dims == 2 else np.cbrt(6.0 * sizes / np.pi)


RANGE_PERCENTILES = (10.0, 90.0)
"""The percentiles over a training set's images of their own median object sizes that bound the sizes a model
knows (:attr:`ObjectSize.low`, :attr:`ObjectSize.high`); the lower one also sets the minimum object sizes that
post-processing tuning tries (:func:`biounet.training.tuning.small_object_size`)."""


def size_of(id_images: list[np.ndarray], pixel_size: float | None = None) -> ObjectSize | None:
    """The :class:`ObjectSize` of some training images' objects; ``None`` if they have none.

    Args:
        id_images: object id images (0 = background), one per training image.
        pixel_size: their pixel size, where known.
    """
    medians = image_median_sizes(id_images)
    if not medians.size:
        return None
    low, high = (float(d) for d in diameters_of(np.percentile(medians, RANGE_PERCENTILES), id_images[0].ndim))
    median = median_diameter(id_images)
    assert median is not None  # some image has objects
    return ObjectSize(round(median, 2), pixel_size, round(min(low, median), 2), round(max(high, median), 2))


def image_median_sizes(id_images: Sequence[np.ndarray]) -> np.ndarray:
    """Each image's median object size, in pixels (voxels), for the images that have objects.

    Args:
        id_images: object id images (0 = background).
    """
    found = [object_sizes(ids) for ids in id_images]
    return np.asarray([np.median(sizes) for sizes in found if sizes.size], np.float64)


def median_diameter(id_images: list[np.ndarray]) -> float | None:
    """The median equivalent diameter over all objects of some id images; ``None`` if they have none.

    Args:
        id_images: object id images (0 = background).
    """
    found = [equivalent_diameters(ids) for ids in id_images]
    pooled = np.concatenate(found) if found else np.empty(0)
    return float(np.median(pooled)) if pooled.size else None
