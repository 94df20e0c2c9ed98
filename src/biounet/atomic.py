"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash or a bad input half-way never leaves a truncated output under the final name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from biounet.errors import BiounetError

# A compression suffix alone does not say what is compressed: libraries that pick the format from the name
# (nibabel for ``.nii.gz``) need the suffix before it too.
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path with the same suffix as ``path``; renames it to ``path`` on success.

    The temporary name starts with ``.`` (so folder listings of inputs skip it) and holds the process id
    and a random token (so two writers of one target, in one process or several, never share it). It is
    removed if the block fails. A compressed name keeps both suffixes: the temporary file for
    ``case.nii.gz`` ends in ``.tmp.nii.gz``.

    Args:
        path: the final file name.

    Raises:
        BiounetError: naming ``path``, if its directory does not exist.
        OSError: from the block; one about the temporary file (an unwritable folder) names ``path`` instead.
    """
    final = Path(path)
    if not final.parent.is_dir():
        raise BiounetError(f"cannot write: the directory {final.parent} does not exist", final)
    suffixes = final.suffixes
    keep = 2 if len(suffixes) >= 2 and suffixes[-1].lower() in _COMPRESSION_SUFFIXES else 1
    suffix = "".join(suffixes[-keep:]) if suffixes else ""
    base = final.name[: len(final.name) - len(suffix)]
    # Not tempfile.mkstemp: it creates the file with mode 0600, which the final file would keep, and some
    # writers refuse a path that already exists.
    tmp = final.with_name(f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        if exc.filename is None or Path(os.fsdecode(exc.filename)) != tmp:
            raise
        # The user named the output, never its temporary file (nor the rename to it: a folder in the way).
        raise type(exc)(exc.errno, exc.strerror, str(final)) from exc
    finally:
        if tmp.exists():
            tmp.unlink()
