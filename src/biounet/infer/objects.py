"""A measurement table of the objects of an instance map: size, position, shape and intensity, one row each.

Columns, in this order (``px`` = pixels or voxels; physical units are those of the input's spacing):

- ``label``: the object's id in the instance map;
- ``t``, ``z``: for a stack measured plane by plane (a 2D model's ``T``/``Z`` axes, a 3D model's ``T``), the
  index of the plane (volume) that holds the object;
- ``area_px`` and ``area`` (3D: ``volume_px`` and ``volume``): the pixel count, and the count times the
  pixel's area (volume);
- ``centroid_y``, ``centroid_x`` (3D: ``centroid_z`` first): in pixels, from the first pixel's centre;
- ``bbox_y0``, ``bbox_x0``, ``bbox_y1``, ``bbox_x1`` (3D: with ``z``): the bounding box in pixels, half-open
  like Python slices (``bbox_y1`` is one past the last row);
- ``mean_intensity_<c>``, then ``max_intensity_<c>``, per channel ``c`` of the raw image (0-based; without
  the suffix for a one-channel image);
- ``equivalent_diameter``: the diameter of the disc (ball) of the same physical area (volume);
- 2D only: ``eccentricity`` (of the ellipse with the same second moments, in physical space, so 0 for a
  round object whatever the pixel aspect) and ``solidity`` (area over the area of the convex hull).

Rows come in label order. Measurements use the input's raw intensities, not the network's normalised ones.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from skimage.measure import regionprops_table

from biounet.atomic import atomic_path
from biounet.errors import BiounetError
from biounet.models.object_size import diameters_of

_SPATIAL_LETTERS = {2: "yx", 3: "zyx"}
_PLANE_LETTERS = "TZ"


def object_columns(spatial_dims: int, channels: int, plane_axes: str = "") -> list[str]:
    """The names of :func:`object_table`'s columns, in order (the header of an empty table too).

    Args:
        spatial_dims: 2 or 3.
        channels: the image's channels.
        plane_axes: the stack axes measured plane by plane, letters of ``TZ``.
    """
    letters = _SPATIAL_LETTERS[spatial_dims]
    size = "area" if spatial_dims == 2 else "volume"
    suffixes = [""] if channels == 1 else [f"_{c}" for c in range(channels)]
    return ["label", *(a.lower() for a in plane_axes), f"{size}_px", size,
            *(f"centroid_{a}" for a in letters), *(f"bbox_{a}0" for a in letters),
            *(f"bbox_{a}1" for a in letters), *(f"mean_intensity{s}" for s in suffixes),
            *(f"max_intensity{s}" for s in suffixes), "equivalent_diameter",
            *(["eccentricity", "solidity"] if spatial_dims == 2 else [])]


def object_table(instances: np.ndarray, image: np.ndarray, spacing: tuple[float, ...] | None = None,
                 plane_axes: str = "") -> dict[str, np.ndarray]:
    """Measures every object of an instance map (see the module docstring for the columns).

    Args:
        instances: ``(*P, *S)`` integer ids, 0 = background; ``S`` is 2D or 3D, ``P`` the stack axes named
            by ``plane_axes``. An id may appear in one plane only (ids of different planes must differ).
        image: ``(C, *P, *S)`` raw intensities of the same pixels.
        spacing: the pixel (voxel) size along each axis of ``S``; 1.0 each when ``None``.
        plane_axes: one letter of ``T``/``Z`` per leading axis of ``instances`` that is not spatial, in
            order; each plane (volume) along them is measured on its own.

    Returns:
        One array per column, in column order, each one entry per object.

    Raises:
        BiounetError: for shapes that do not match, ids that are not non-negative integers, or an id found
            in more than one plane.
    """
    instances, image = np.asarray(instances), np.asarray(image)
    planes = plane_axes.upper()
    spatial_dims = instances.ndim - len(planes)
    if spatial_dims not in _SPATIAL_LETTERS:
        raise BiounetError(f"objects need a 2D or 3D instance map (after the stack axes {planes or 'none'}), "
                           f"got shape {instances.shape}")
    if set(planes) - set(_PLANE_LETTERS) or len(set(planes)) != len(planes):
        raise BiounetError(f"stack axes must be distinct letters of {_PLANE_LETTERS}, got {plane_axes!r}")
    if image.ndim != instances.ndim + 1 or image.shape[1:] != instances.shape or image.shape[0] < 1:
        raise BiounetError(f"an image of shape {image.shape} does not fit (C, *{instances.shape}) for the "
                           f"instance map")
    if not np.issubdtype(instances.dtype, np.integer):
        raise BiounetError(f"instance map must be integer, got {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise BiounetError("instance map has negative ids")
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * spatial_dims
    if len(spacing) != spatial_dims or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise BiounetError(f"spacing {spacing} does not fit {spatial_dims} spatial axes (positive values)")
    names = object_columns(spatial_dims, image.shape[0], planes)
    parts: list[dict[str, np.ndarray]] = []
    plane_shape = instances.shape[: len(planes)]
    for index in np.ndindex(*plane_shape):
        region: tuple[slice | int, ...] = (slice(None), *index)
        part = _measure(instances[index], image[region], spacing)
        if part is not None:
            count = part["label"].size
            part.update({a.lower(): np.full(count, i, np.int64) for a, i in zip(planes, index, strict=True)})
            parts.append(part)
    table = {name: np.concatenate([p[name] for p in parts]) if parts else np.zeros(0, _dtype(name, image))
             for name in names}
    if np.unique(table["label"]).size != table["label"].size:
        raise BiounetError("an object id appears in more than one plane; ids must be unique over the stack")
    return table


def write_object_table(path: str | Path, table: dict[str, np.ndarray]) -> None:
    """Writes a table of columns as CSV (a header row, then one row per entry), atomically.

    Integers are written as such, floats in the shortest form that reads back to the same value. An
    empty table gives the header alone.

    Args:
        path: the ``.csv`` file.
        table: equal-length 1-D columns, e.g. :func:`object_table`'s.
    """
    columns = list(table.values())
    if len({c.shape for c in columns}) > 1 or any(c.ndim != 1 for c in columns):
        raise BiounetError("table columns must be 1-D and of equal length", path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(table)
        # tolist() turns NumPy scalars into Python int/float, whose str is exact and shortest.
        writer.writerows(zip(*(c.tolist() for c in columns), strict=True))


def _measure(instances: np.ndarray, image: np.ndarray, spacing: tuple[float, ...]) -> dict[str, np.ndarray] | None:
    """The columns of one plane's (volume's) objects without the plane indices; ``None`` if it has none."""
    if not instances.any():
        return None
    spatial_dims = instances.ndim
    channels = image.shape[0]
    properties = ["label", "num_pixels", "centroid", "bbox", "intensity_mean", "intensity_max"]
    if spatial_dims == 2:
        properties += ["eccentricity", "solidity"]
    # skimage wants channels last; with spacing, its areas, centroids and eccentricity are physical.
    channels_last = np.moveaxis(image, 0, -1)
    props = regionprops_table(  # type: ignore[no-untyped-call]
        instances, channels_last, properties=properties, spacing=spacing)
    letters = _SPATIAL_LETTERS[spatial_dims]
    pixels = props["num_pixels"].astype(np.int64)
    physical = pixels * float(np.prod(spacing))
    size = "area" if spatial_dims == 2 else "volume"
    diameter = diameters_of(physical, spatial_dims)
    columns: dict[str, np.ndarray] = {"label": props["label"].astype(np.int64), f"{size}_px": pixels,
                                      size: physical}
    for axis, letter in enumerate(letters):
        columns[f"centroid_{letter}"] = props[f"centroid-{axis}"] / spacing[axis]
    for end in range(2):
        for axis, letter in enumerate(letters):
            columns[f"bbox_{letter}{end}"] = props[f"bbox-{end * spatial_dims + axis}"].astype(np.int64)
    for stat, name in (("intensity_mean", "mean_intensity"), ("intensity_max", "max_intensity")):
        for c in range(channels):
            values = props[f"{stat}-{c}"]
            column = name if channels == 1 else f"{name}_{c}"
            # The maximum of an integer image is one of its values: keep it an integer.
            columns[column] = values.astype(np.int64) if stat == "intensity_max" and _integer(image) else values
    columns["equivalent_diameter"] = diameter
    if spatial_dims == 2:
        columns["eccentricity"] = props["eccentricity"]
        columns["solidity"] = props["solidity"]
    return columns


def _integer(image: np.ndarray) -> bool:
    return image.dtype.kind in "biu"


def _dtype(name: str, image: np.ndarray) -> type:
    """An empty column's dtype: as the same column of a non-empty table has it."""
    if name in ("label", "t", "z", "area_px", "volume_px") or name.startswith("bbox_"):
        return np.int64
    if name.startswith("max_intensity") and _integer(image):
        return np.int64
    return np.float64
