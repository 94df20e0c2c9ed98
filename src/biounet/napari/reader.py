"""Opening what ``biounet predict`` writes: ``<stem>_prob.tif``, ``<stem>_mask.png|tif``,
``<stem>_instances.tif`` and ``<stem>.zarr`` stores (read lazily, chunk by chunk as napari shows them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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
    if path.suffix.lower() == ".zarr":
        return (path / "prob").is_dir() and (path / "mask").is_dir()
    return path.name.lower().endswith(_SUFFIXES)


def read_outputs(path: str | list[str]) -> list[LayerData]:
    """Layers for biounet outputs: probabilities as an image layer per class, masks and objects as labels.

    Args:
        path: one output or a list of them.
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers: list[LayerData] = []
    for item in map(Path, paths):
        layers += _read_store(item) if item.suffix.lower() == ".zarr" else [_read_file(item)]
    return layers


def _read_file(path: Path) -> LayerData:
    import imageio.v3 as iio
    import tifffile

    name = path.name
    stem, kind = name[:name.rfind("_")], name[name.rfind("_") + 1:].split(".")[0]
    data = np.asarray(iio.imread(path)) if path.suffix.lower() == ".png" else tifffile.imread(path)
    if kind == "prob":  # classes first (CYX, CZYX, CTZYX)
        return data, {"name": f"{stem} probability", "channel_axis": 0, "contrast_limits": (0.0, 1.0),
                      "colormap": "magma", "blending": "additive"}, "image"
    return data, {"name": f"{stem} {'objects' if kind == 'instances' else 'classes'}"}, "labels"


def _read_store(path: Path) -> list[LayerData]:
    import zarr

    root: Any = zarr.open_group(str(path), mode="r")
    layers: list[LayerData] = []
    for name, kind in (("prob", "image"), ("mask", "labels"), ("instances", "labels")):
        if name not in root:
            continue
        axes, scale = _ome_axes(root[name].attrs)
        array = root[name]["0"]
        if kind == "image":
            limits = (0.0, 255.0) if array.dtype == np.uint8 else (0.0, 1.0)  # uint8: 255 means 1.0
            channel = axes.index("c")
            layers.append((array, {"name": f"{path.stem} probability", "channel_axis": channel,
                                   "scale": [s for i, s in enumerate(scale) if i != channel],
                                   "contrast_limits": limits, "colormap": "magma", "blending": "additive"},
                           "image"))
            continue
        # The mask's channel axis (one long) is not a dimension to browse.
        keep = [i for i, a in enumerate(axes) if a != "c"]
        data = array if len(keep) == len(axes) else _Squeezed(array, axes.index("c"))
        layers.append((data, {"name": f"{path.stem} {'classes' if name == 'mask' else 'objects'}",
                              "scale": [scale[i] for i in keep]}, "labels"))
    return layers


def _ome_axes(attrs: Any) -> tuple[list[str], list[float]]:
    scales = attrs["multiscales"][0]
    axes = [a["name"] for a in scales["axes"]]
    transforms = scales["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), [1.0] * len(axes))
    return axes, [float(s) for s in scale]


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
