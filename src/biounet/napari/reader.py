"""Opening what ``biounet predict`` writes: ``<stem>_prob.tif``, ``<stem>_mask.png|tif``,
``<stem>_instances.tif`` and ``<stem>.zarr`` stores (read lazily, chunk by chunk as napari shows them).

:func:`get_reader` offers :func:`read_outputs` for paths named and shaped like those outputs (a file, or a
``.zarr`` folder with ``prob`` and ``mask``), and nothing (``None``) for anything else, so that napari asks
another reader. :func:`read_outputs` checks what it opens, and raises a one-line
:class:`~biounet.errors.BiounetError` naming the file for an output it cannot show: damaged, unfinished, or
not what biounet writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from biounet.errors import BiounetError, reason

LayerData = tuple[Any, dict[str, Any], str]
_SUFFIXES = ("_prob.tif", "_prob.tiff", "_mask.png", "_mask.tif", "_mask.tiff", "_instances.tif",
             "_instances.tiff")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: a function reading ``path`` if it is a biounet output, else ``None``."""
    paths = [path] if isinstance(path, str) else list(path)
    if paths and all(_is_output(Path(p)) for p in paths):
        return read_outputs
    return None


def _is_output(path: Path) -> bool:
    # is_dir and is_file are False for a broken link or a link loop: those are nobody's outputs.
    if path.suffix.lower() == ".zarr":
        return (path / "prob").is_dir() and (path / "mask").is_dir()
    return path.name.lower().endswith(_SUFFIXES) and path.is_file()


def read_outputs(path: str | list[str]) -> list[LayerData]:
    """Layers for biounet outputs: probabilities as an image layer per class, masks and objects as labels.

    Args:
        path: one output or a list of them.

    Raises:
        BiounetError: naming the file, for an output that cannot be read or is not one biounet writes (an
            unfinished store included).
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for item in map(Path, paths):
        try:
            layers += _read_store(item) if item.suffix.lower() == ".zarr" else [_read_file(item)]
        except BiounetError:
            raise
        except Exception as exc:  # a damaged file or store fails in its library in many ways; all mean the same
            raise BiounetError(f"cannot read this biounet output ({reason(exc)})", item) from exc
    return layers


def _read_file(path: Path) -> LayerData:
    import imageio.v3 as iio

    from biounet.io.tiff import read_tiff

    name = path.name
    stem, kind = name[:name.rfind("_")], name[name.rfind("_") + 1:].split(".")[0]
    data = np.asarray(iio.imread(path)) if path.suffix.lower() == ".png" else read_tiff(path)
    if kind == "prob":  # classes first (CYX, CZYX, CTZYX)
        if data.ndim < 3 or data.dtype.kind != "f" or 0 in data.shape:
            raise BiounetError(f"not a probability map (classes, then 2 or more axes, as floats): {data.dtype} "
                               f"{data.shape}", path)
        return data, {"name": f"{stem} probability", "channel_axis": 0, "contrast_limits": (0.0, 1.0),
                      "colormap": "magma", "blending": "additive"}, "image"
    _check_labels(data.dtype, data.shape, path)
    return data, {"name": f"{stem} {'objects' if kind == 'instances' else 'classes'}"}, "labels"


def _check_labels(dtype: np.dtype, shape: tuple[int, ...], path: Path) -> None:
    if dtype.kind not in "biu" or len(shape) < 2 or 0 in shape:
        raise BiounetError(f"not a label image (2 or more axes of whole numbers): {dtype} {shape}", path)


def _read_store(path: Path) -> list[LayerData]:
    import zarr

    root: Any = zarr.open_group(str(path), mode="r")
    if "blocks" in root:
        done = np.asarray(root["blocks"][...])
        if not done.all():
            raise BiounetError(f"an unfinished prediction ({int(done.sum())} of {done.size} blocks written); run "
                               "the same biounet predict again to finish it", path)
    layers: list[LayerData] = []
    for name, kind in (("prob", "image"), ("mask", "labels"), ("instances", "labels")):
        if name not in root:
            continue
        where = path / name
        if "0" not in root[name]:
            raise BiounetError("no array 0 (the full resolution) in this image", where)
        array = root[name]["0"]
        axes, scale = _ome_axes(root[name].attrs, array.ndim, where)
        if kind == "image":
            if "c" not in axes or array.dtype.kind not in "fu":
                raise BiounetError(f"not a probability map (a channel axis and floats or uint8): {array.dtype} "
                                   f"with axes {''.join(axes)}", where)
            limits = (0.0, 255.0) if array.dtype == np.uint8 else (0.0, 1.0)  # uint8: 255 means 1.0
            channel = axes.index("c")
            layers.append((array, {"name": f"{path.stem} probability", "channel_axis": channel,
                                   "scale": [s for i, s in enumerate(scale) if i != channel],
                                   "contrast_limits": limits, "colormap": "magma", "blending": "additive"},
                           "image"))
            continue
        _check_labels(array.dtype, array.shape, where)
        # The mask's channel axis (one long) is not a dimension to browse.
        keep = [i for i, a in enumerate(axes) if a != "c"]
        if "c" in axes and array.shape[axes.index("c")] != 1:
            raise BiounetError(f"a label image has one value per pixel, this one a channel axis of shape "
                               f"{tuple(array.shape)}", where)
        data = array if len(keep) == len(axes) else _Squeezed(array, axes.index("c"))
        layers.append((data, {"name": f"{path.stem} {'classes' if name == 'mask' else 'objects'}",
                              "scale": [scale[i] for i in keep]}, "labels"))
    return layers


def _ome_axes(attrs: Any, ndim: int, path: Path) -> tuple[list[str], list[float]]:
    """The axis names and scale of an OME-Zarr image, checked against its array's dimensions."""
    try:
        scales = attrs["multiscales"][0]
        axes = [str(a["name"]).lower() if isinstance(a, dict) else str(a).lower() for a in scales["axes"]]
        transforms = scales["datasets"][0].get("coordinateTransformations", [])
        scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), [1.0] * len(axes))
        scale = [float(s) for s in scale]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise BiounetError(f"no valid OME-Zarr multiscales metadata ({reason(exc)})", path) from exc
    if len(axes) != ndim or len(scale) != ndim or len(set(axes)) != ndim:
        raise BiounetError(f"OME-Zarr metadata (axes {''.join(axes)}, scale {scale}) does not fit its "
                           f"{ndim}-dimensional array", path)
    if not all(math.isfinite(s) and s > 0 for s in scale):
        raise BiounetError(f"OME-Zarr scale {scale} is not positive", path)
    return axes, scale


class _Squeezed:
    """A stored array seen without one of its axes (of length 1), read lazily."""

    def __init__(self, array: Any, axis: int) -> None:
        self.array, self.axis = array, axis
        self.shape = tuple(n for i, n in enumerate(array.shape) if i != axis)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        if Ellipsis in key:
            at = key.index(Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1:]
        key = key + (slice(None),) * (self.ndim - len(key))
        return self.array[key[:self.axis] + (0,) + key[self.axis:]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self[...], dtype=dtype)
