"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash or a bad input half-way never leaves a truncated output under the final name.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path with the same suffix as ``path``; renames it to ``path`` on success.

    Args:
        path: the final file name. Its directory must exist.
    """
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
