"""Expanding input arguments (files, directories, globs, HDF5/zarr specs) into image files, for predict and evaluate."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from biounet.errors import BiounetError
from biounet.io.containers import check_container, is_zarr, split_spec
from biounet.io.readers import SUPPORTED_SUFFIXES, file_stem, is_hidden, is_image_file, list_image_files


def expand_inputs(arguments: Sequence[str], unique_stems: bool = True) -> list[Path]:
    """Files as given, directories as their image files (sorted), globs as their matches (sorted).

    ``file.h5:dataset`` and ``store.zarr:array`` name one array inside a file; both the file and the array
    must exist, and the file part may be a glob (``stacks/*.h5:raw``). A ``.zarr`` directory is one input,
    never a folder to list. Folders and globs list HDF5 files and zarr stores without an array name: each
    must then hold exactly one array (reading names the arrays it holds otherwise). Folders and globs leave
    out hidden files (names starting with ``.``), such as the temporary files of an interrupted run.

    Args:
        arguments: the command line's paths.
        unique_stems: for outputs named after inputs: two inputs may not share a
            :func:`~biounet.io.readers.file_stem`.

    Raises:
        BiounetError: for a missing path or array, a glob or directory without images, or two inputs with
            the same stem (their outputs would overwrite each other).
    """
    files: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        spec = split_spec(argument)
        if spec is not None and spec[1] is not None:
            file, key = spec
            names = [str(file)]
            # A glob may name the files (``stacks/*.h5:raw``): each must hold the array.
            if any(c in str(file) for c in "*?[") and not file.exists():
                names = sorted(n for n in glob.glob(str(file), recursive=True) if not is_hidden(n))
                if not names:
                    raise BiounetError("no files match this pattern", argument)
            for name in names:
                check_container(f"{name}:{key}")
                files.append(Path(f"{name}:{key}"))
        elif any(c in argument for c in "*?[") and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(argument, recursive=True))
            found = [m for m in matches if is_image_file(m) and not is_hidden(m)
                     and (m.is_file() or (is_zarr(m) and m.is_dir()))]
            if not found:
                raise BiounetError("no image files match this pattern", argument)
            files += found
        elif path.is_dir() and not is_zarr(path):
            found = list_image_files(path)
            if not found:
                raise BiounetError(f"directory holds no image files ({', '.join(SUPPORTED_SUFFIXES)})", path)
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise BiounetError("file not found", path)
    seen: dict[str, Path] = {}
    for f in files if unique_stems else []:
        stem = file_stem(f)
        if stem in seen and seen[stem] != f:
            raise BiounetError(f"two inputs share the name {stem!r} ({seen[stem]} and {f}); "
                               "their outputs would collide", f)
        seen[stem] = f
    return list(dict.fromkeys(files))
