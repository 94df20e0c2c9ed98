"""Expanding the CLI's input arguments (files, directories, globs) into image files."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from biounet.data.readers import is_image_file
from biounet.errors import BiounetError


def expand_inputs(arguments: Sequence[str], unique_stems: bool = True) -> list[Path]:
    """Files as given, directories as their image files (sorted), globs as their matches (sorted).

    With ``unique_stems`` (for outputs named after inputs), two inputs may not share a stem.

    Raises:
        BiounetError: for a missing path, a glob or directory without images, or two inputs with the same
            stem (their outputs would overwrite each other).
    """
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if any(c in argument for c in "*?[") and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(argument, recursive=True))
            found = [m for m in matches if m.is_file() and is_image_file(m)]
            if not found:
                raise BiounetError("no image files match this pattern", argument)
            files += found
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and is_image_file(p))
            if not found:
                raise BiounetError("directory holds no image files (.png, .tif, .tiff, .jpg, .jpeg)", path)
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise BiounetError("file not found", path)
    seen: dict[str, Path] = {}
    for f in files if unique_stems else []:
        if f.stem in seen and seen[f.stem] != f:
            raise BiounetError(f"two inputs share the name {f.stem!r} ({seen[f.stem]} and {f}); "
                               "their outputs would collide", f)
        seen[f.stem] = f
    return list(dict.fromkeys(files))
