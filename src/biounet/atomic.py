"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash or a bad input half-way never leaves a truncated output under the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

# A compression suffix alone does not say what is compressed: libraries that pick the format from the name
# (nibabel for ``.nii.gz``) need the suffix before it too.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path with the same suffix as ``path``; renames it to ``path`` on success.

    A compressed name keeps both suffixes: the temporary file for ``case.nii.gz`` ends in ``.nii.gz``.

    Args:
        path: the final file name. Its directory must exist.
    """
    final = Path(path)
    suffixes = final.suffixes
    keep = 2 if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION_SUFFIXES else 1
    suffix = "".join(suffixes[-keep:]) if suffixes else ""
    tmp = final.with_name(f".{final.name[: len(final.name) - len(suffix)]}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
