"""Arrays inside HDF5 files and zarr stores, named as ``file.h5:path/to/dataset`` or ``store.zarr:array``.

Neither format records which axis is which by itself. Where other tools wrote it down, the axes come from
there: ilastik's ``axistags`` attribute, or an OME-Zarr image's ``multiscales[0].axes``. Otherwise the axes
follow from the number of dimensions: for a 3D model ``(Z, Y, X)`` or ``(C, Z, Y, X)``, for a 2D model
``(Y, X)`` or ``(C, Y, X)``. Without a name after the colon,
the file must hold exactly one array (a zarr store may itself be that array; an OME-Zarr image is read at its
full resolution).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError, reason
from biounet.io.axes import StoredAxes, check_axes, check_spatial_dims
from biounet.optional import optional_import

HDF5_SUFFIXES = (".h5", ".hdf5")
ZARR_SUFFIX = ".zarr"
# Attributes other tools use for the voxel size, in the array's axis order: Fiji/ilastik's element_size_um,
# and the generic names.
SPACING_ATTRIBUTES = ("element_size_um", "spacing", "resolution")

_SPEC = re.compile(r"^(?P<file>.*?\.(?:h5|hdf5|zarr))(?::(?P<key>.*))?$", re.IGNORECASE | re.DOTALL)


def split_spec(path: str | Path) -> tuple[Path, str | None] | None:
    """``(file, array name or None)`` for an HDF5/zarr path or ``file:name`` spec; ``None`` for other paths."""
    match = _SPEC.match(str(path))
    if match is None:
        return None
    key = match["key"]
    return Path(match["file"]), (key.strip("/") or None) if key is not None else None


def is_zarr(path: str | Path) -> bool:
    spec = split_spec(path)
    return spec is not None and spec[0].suffix.lower() == ZARR_SUFFIX


def check_container(path: str | Path) -> None:
    """Checks that the file exists and the named array (or the only one) is in it, without reading data.

    Raises:
        BiounetError: naming the spec, for a missing file, a missing array or an ambiguous one.
    """
    with open_container(path):
        pass


class ContainerFormat:
    """An HDF5 dataset or zarr array, read where it lies (see the module docstring)."""

    def probe(self, path: Path, spatial_dims: int | None, axes: str | None) -> StoredAxes:
        """The array as :class:`StoredAxes`, from its metadata.

        Args:
            path: the spec.
            spatial_dims: the model's, for an array whose axes no metadata names: ``(C, *spatial)``; ``None``
                names them from the number of dimensions alone (``YX``, ``ZYX``, ``CZYX``).
            axes: the axes to use instead (``--axes``), one letter per axis of the array.

        Raises:
            BiounetError: naming the spec, for metadata or ``axes`` that do not fit the array, or an array
                without metadata whose number of dimensions fits no layout.
        """
        with open_container(path) as array:
            shape = tuple(int(s) for s in array.shape)
            if axes is not None:
                letters = check_axes(axes, shape, path)
            else:
                found = _metadata_axes(array, path)
                letters = check_axes(found, shape, path) if found is not None else _own_axes(shape, spatial_dims,
                                                                                               path)
            spatial = tuple(i for i, a in enumerate(letters) if a in "ZYX")
            spacing = [1.0] * len(shape)
            for i, size in zip(spatial, _spacing(array, shape, spatial, path), strict=True):
                spacing[i] = size
            return StoredAxes(shape, np.dtype(array.dtype), letters, tuple(spacing))

    def open(self, path: Path) -> AbstractContextManager[Any]:
        """The array, open and nothing read (see :func:`open_container`)."""
        return open_container(path)

    def read(self, path: Path) -> np.ndarray:
        """The array, read whole."""
        with open_container(path) as array:
            try:
                return np.asarray(array[...])
            except Exception as exc:
                raise BiounetError(f"cannot read array data ({reason(exc)})", path) from exc


def _own_axes(shape: tuple[int, ...], spatial_dims: int | None, path: str | Path) -> str:
    """The axes of an array that no metadata names: ``(C, *spatial)`` for the model's ``spatial_dims``."""
    if spatial_dims is None:
        named = {2: "YX", 3: "ZYX", 4: "CZYX"}.get(len(shape))
        if named is None:
            raise BiounetError(f"cannot tell which axis is which in an array of shape {shape}", path)
        return named
    check_spatial_dims(spatial_dims, path)
    if len(shape) == spatial_dims - 1:
        raise BiounetError(f"a {len(shape)}D array (shape {shape}) cannot be used with a {spatial_dims}D model",
                           path)
    spatial = "ZYX"[-spatial_dims:]
    if len(shape) not in (spatial_dims, spatial_dims + 1):
        raise BiounetError(f"cannot use an array of shape {shape} as a {spatial_dims}D image (expected {spatial} "
                           f"or C{spatial}); give its axes with --axes", path)
    return ("C" + spatial)[-len(shape):]


@contextmanager
def open_container(path: str | Path) -> Iterator[Any]:
    """The HDF5 dataset or zarr array that ``path`` names, open (and nothing read) while the context lasts.

    Raises:
        BiounetError: naming the spec, for a missing file, a missing array or an ambiguous one.
    """
    spec = split_spec(path)
    if spec is None:
        raise BiounetError("not an HDF5 or zarr path", path)
    file, key = spec
    if not file.exists():
        raise BiounetError("file not found", file)
    if file.suffix.lower() == ZARR_SUFFIX:
        yield _complete(_zarr_array(file, key, path), path)
        return
    h5py = optional_import("h5py", f"reading {file.suffix.lower()}", path)
    try:
        handle = h5py.File(file, "r")
    except Exception as exc:
        raise BiounetError(f"cannot read HDF5 file ({reason(exc)})", path) from exc
    with handle:
        if key is None:
            names: list[str] = []
            handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            yield handle[_only(names, file, "dataset")]
            return
        found = handle.get(key)
        if not isinstance(found, h5py.Dataset):
            what = f"{key!r} is a group, not a dataset" if found is not None else f"no dataset {key!r} in the file"
            raise BiounetError(what, path)
        yield found


def _zarr_array(file: Path, key: str | None, path: str | Path) -> Any:
    zarr = optional_import("zarr", "reading .zarr", path)
    try:
        root = zarr.open(str(file), mode="r")
    except Exception as exc:
        raise BiounetError(f"cannot open zarr store ({reason(exc)})", path) from exc
    if key is None:
        if isinstance(root, zarr.Array):
            return root
        scales = _multiscales(root.attrs)
        if scales is not None and scales.get("datasets"):
            key = str(scales["datasets"][0].get("path", ""))  # the full resolution of an OME-Zarr image
        else:
            return root[_only(list(_zarr_arrays(root)), file, "array")]
    if not isinstance(root, zarr.Group):
        raise BiounetError(f"the store is a single array; name it without :{key}", path)
    # Named on the command line or in the store's own metadata, an array is one inside the store.
    if any(part in (".", "..") for part in key.split("/")):
        raise BiounetError(f"array path {key!r} leads out of the store", path)
    try:
        found = root[key]
    except (KeyError, ValueError):  # ValueError: a path zarr refuses
        found = None
    if not isinstance(found, zarr.Array):
        what = f"{key!r} is a group, not an array" if found is not None else f"no array {key!r} in the store"
        raise BiounetError(what, path)
    return found


def _complete(array: Any, path: str | Path) -> Any:
    """The zarr array, checked to have every chunk if it has no fill value.

    A missing chunk reads as the fill value, which is how zarr stores what was never written; an array
    without one (zarr 2's ``fill_value: null``) says that what is missing is undefined, so a store that lost
    chunks is not read as if they held zeros.
    """
    metadata = getattr(array, "metadata", None)
    if metadata is None or getattr(metadata, "fill_value", 0) is not None:
        return array
    missing = int(array.nchunks) - int(array.nchunks_initialized)
    if missing:
        raise BiounetError(f"{missing} of the array's {array.nchunks} chunks are missing, and it has no fill value "
                           "to read them as", path)
    return array


def _zarr_arrays(group: Any, prefix: str = "") -> Iterator[str]:
    # array_keys/group_keys exist in zarr 2 and 3 alike (zarr 3's members() does not in 2).
    for name in sorted(group.array_keys()):
        yield prefix + name
    for name in sorted(group.group_keys()):
        yield from _zarr_arrays(group[name], f"{prefix}{name}/")


def _metadata_axes(array: Any, path: str | Path) -> str | None:
    """Axes from ilastik's ``axistags`` or the OME-Zarr ``multiscales`` of the array's group, if any."""
    tags = array.attrs.get("axistags")
    if tags is not None:
        try:
            keys = [str(axis["key"]) for axis in json.loads(tags if isinstance(tags, str) else bytes(tags))["axes"]]
        except (TypeError, ValueError, KeyError) as exc:
            raise BiounetError("attribute 'axistags' is not ilastik's JSON axis list", path) from exc
        return "".join(keys).upper()
    group = _parent_attrs(array)
    scales = _multiscales(group) if group is not None else None
    if scales is None or "axes" not in scales:
        return None
    names = [axis["name"] if isinstance(axis, dict) else axis for axis in scales["axes"]]
    return "".join(str(n) for n in names).upper()


def _parent_attrs(array: Any) -> Any:
    """A zarr array's group's attributes (where OME-Zarr puts ``multiscales``); ``None`` for HDF5."""
    if not hasattr(array, "store") or not hasattr(array, "basename"):
        return None
    zarr = optional_import("zarr", "reading .zarr", "")
    parent = str(array.path).rpartition("/")[0]
    try:
        return zarr.open_group(store=array.store, path=parent, mode="r").attrs
    except Exception:
        return None  # a store that is itself one array has no group


def _multiscales(attrs: Any) -> dict[str, Any] | None:
    # NGFF 0.5 (zarr v3) nests the metadata under "ome".
    scales = attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales")
    return scales[0] if isinstance(scales, list) and scales and isinstance(scales[0], dict) else None


def _only(names: list[str], file: Path, kind: str) -> str:
    if len(names) == 1:
        return names[0]
    if not names:
        raise BiounetError(f"holds no {kind}", file)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise BiounetError(f"holds {len(names)} {kind}s ({shown}); name one as {file.name}:NAME", file)


def _spacing(array: Any, shape: tuple[int, ...], spatial: tuple[int, ...],
             path: str | Path) -> tuple[float, ...]:
    attrs = array.attrs
    for name in SPACING_ATTRIBUTES:
        if name not in attrs:
            continue
        try:
            values = [float(v) for v in np.atleast_1d(np.asarray(attrs[name])).ravel()]
        except (TypeError, ValueError) as exc:
            raise BiounetError(f"attribute {name!r} is not a list of numbers", path) from exc
        if len(values) == len(shape) and len(shape) > len(spatial):
            values = [values[i] for i in spatial]  # given for every axis, the channel axis included
        if len(values) != len(spatial) or not all(np.isfinite(v) and v > 0 for v in values):
            raise BiounetError(f"attribute {name!r} = {values} is not one positive size per spatial axis "
                               f"(shape {shape})", path)
        return tuple(values)
    return (1.0,) * len(spatial)
