"""Importing the libraries behind optional file formats, with a one-line hint at the extra to install."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from biounet.errors import BiounetError

# module -> (what pip installs, biounet extra that pulls it in)
_EXTRAS = {"nibabel": ("nibabel", "nifti"), "h5py": ("h5py", "hdf5"), "zarr": ("zarr", "zarr"),
          "distributed": ("dask[distributed]", "cluster"), "dask": ("dask[distributed]", "cluster")}


def optional_import(module: str, purpose: str, path: str | Path | None = None) -> ModuleType:
    """Imports ``module`` or says which extra provides it.

    Args:
        module: ``"nibabel"``, ``"h5py"``, ``"zarr"``, ``"dask"`` or ``"distributed"``.
        purpose: what needs it, for the message, e.g. ``"reading .nii.gz"``.
        path: the file concerned, put in front of the message.

    Raises:
        BiounetError: e.g. "reading .nii.gz needs nibabel: pip install 'biounet[nifti]'".
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package, extra = _EXTRAS[module]
        raise BiounetError(f"{purpose} needs {package}: pip install 'biounet[{extra}]'", path) from exc
