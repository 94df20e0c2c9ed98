"""Reading a biounet-made BioImage Model Zoo package (https://bioimage.io) back as its checkpoint.

A package (see :mod:`biounet.export.bioimageio`) names :func:`build_unet` of this module as the architecture
of its ``pytorch_state_dict`` weights, and holds the checkpoint's own config (normalisation, class names,
instance parameters) in its description's ``config.biounet``, so that
:func:`biounet.models.checkpoint.load_checkpoint` gives back exactly the checkpoint it was made from.

Writing one is :mod:`biounet.export.bioimageio`. Reading back needs nothing beyond biounet: the description
is YAML read with ``yaml.safe_load`` and the weights load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

import yaml

from biounet.configs import load_yaml
from biounet.errors import BiounetError
from biounet.models.config import UNetConfig
from biounet.models.tensors import load_tensors
from biounet.models.unet import UNet

# The names a package's description may have (``rdf.yaml`` before spec 0.5).
DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")
# The most a package's entries may hold once decompressed, checked against their headers before reading: a
# description is a page of YAML, the weights of the largest U-Net a few hundred MiB. A zip bomb says more.
MAX_DESCRIPTION_BYTES = 16 * 1024**2
MAX_WEIGHTS_BYTES = 2 * 1024**3


def build_unet(**kwargs: Any) -> UNet:
    """The architecture callable of a package's ``pytorch_state_dict`` weights.

    Args:
        **kwargs: a :class:`~biounet.models.config.UNetConfig` as a plain dict (``UNetConfig.to_dict()``).

    Returns:
        A U-Net with that config, untrained (the consumer loads the state dict into it).
    """
    return UNet(UNetConfig.from_dict(kwargs))


def package_description_name(path: str | Path) -> str | None:
    """The name of the description inside ``path`` if it is a zip holding one at its top level, else ``None``.

    A PyTorch checkpoint is a zip too, but its members live in a folder (``archive/data.pkl``).
    """
    try:
        if not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return None
    return next((n for n in DESCRIPTION_NAMES if n in names), None)


def package_payload(path: str | Path) -> dict[str, Any]:
    """The checkpoint payload (as ``torch.save`` wrote it) that a biounet-made package was written from;
    :func:`biounet.models.checkpoint.load_checkpoint` turns it into the checkpoint.

    Only YAML (``safe_load``, alias bombs refused) and tensors (``torch.load(weights_only=True)``) are read: no
    code in the package runs, nothing is extracted to disk, and ``bioimageio`` need not be installed.

    Args:
        path: the package (``.zip``).

    Raises:
        BiounetError: naming the file, if it is not a package, was not made by biounet, is damaged, has an
            entry named outside its folder, or one whose header says it decompresses to more than it may hold
            (:data:`MAX_DESCRIPTION_BYTES`, :data:`MAX_WEIGHTS_BYTES`).
    """
    path = Path(path)
    name = package_description_name(path)
    if name is None:
        raise BiounetError("not a BioImage Model Zoo package (a zip without bioimageio.yaml)", path)
    try:
        with zipfile.ZipFile(path) as archive:
            _check_entry_names(archive, path)
            rdf = load_yaml(_read_entry(archive, name, MAX_DESCRIPTION_BYTES, path), path)
            stored = _biounet_config(rdf, path)
            weights = rdf["weights"]["pytorch_state_dict"]
            data = _read_entry(archive, str(weights["source"]), MAX_WEIGHTS_BYTES, path)
            expected = weights.get("sha256")
    except (KeyError, TypeError, AttributeError) as exc:
        raise BiounetError(f"a BioImage Model Zoo package without the biounet weights it names ({exc})",
                           path) from exc
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, yaml.YAMLError) as exc:
        raise BiounetError(f"damaged BioImage Model Zoo package ({type(exc).__name__}: {exc})", path) from exc
    except (NotImplementedError, RuntimeError) as exc:  # zipfile's unknown compression and encrypted entries
        raise BiounetError(f"unreadable BioImage Model Zoo package ({exc})", path) from exc
    if expected is not None and hashlib.sha256(data).hexdigest() != str(expected):
        raise BiounetError("damaged package: the weights do not match their sha256 in bioimageio.yaml", path)
    try:
        state = load_tensors(io.BytesIO(data))
    except Exception as exc:  # a damaged or foreign weights file can fail in many ways; all mean the same
        raise BiounetError(f"damaged package: cannot read its weights ({type(exc).__name__})", path) from exc
    extra = stored.get("extra") or {}
    if not isinstance(extra, dict):
        raise BiounetError("bad config.biounet.extra in bioimageio.yaml", path)
    version = stored.get("format_version", 0)
    if not isinstance(version, int):
        raise BiounetError(f"bad config.biounet.format_version {version!r} in bioimageio.yaml", path)
    return {
        "format": stored.get("format"), "format_version": version,
        "biounet_version": stored.get("biounet_version", "?"),
        "config": yaml.safe_dump(stored.get("checkpoint"), sort_keys=False),
        "state_dict": state, **{k: v for k, v in extra.items() if k not in ("format", "config", "state_dict")},
    }


def _check_entry_names(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuses a package with an entry named outside its folder (absolute, a drive, or ``..``).

    Nothing here extracts a package, but the bioimageio tools that unpack one would write such an entry
    outside the folder they unpack to: no package made by biounet (or valid for the spec) has one.
    """
    for entry in archive.namelist():
        parts = entry.replace("\\", "/").split("/")
        if entry.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
            raise BiounetError(f"refusing a package with an entry outside its folder ({entry!r})", path)


def _read_entry(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    """The entry ``name``, refused before it is decompressed if its header says it is over ``limit`` bytes."""
    size = archive.getinfo(name).file_size
    if size > limit:
        raise BiounetError(f"refusing the package entry {name!r}: it decompresses to {size / 1024**2:,.0f} MiB, "
                           f"more than the {limit / 1024**2:,.0f} MiB it may hold (a zip bomb?)", path)
    # zipfile stops at the size the header gives, so the entry cannot decompress to more than was checked.
    return archive.read(name)


def _biounet_config(rdf: Any, path: Path) -> dict[str, Any]:
    config = rdf.get("config") if isinstance(rdf, dict) else None
    stored = config.get("biounet") if isinstance(config, dict) else None
    if not isinstance(stored, dict) or "checkpoint" not in stored:
        raise BiounetError("a BioImage Model Zoo package not made by biounet (no config.biounet in its "
                           "bioimageio.yaml)", path)
    return stored
