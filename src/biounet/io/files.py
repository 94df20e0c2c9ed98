"""Image files by name: stems that outputs and pairings use, folder listings, and expanding input arguments
(files, directories, globs, HDF5/zarr specs) into image files, for predict and evaluate."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from biounet.errors import BiounetError
from biounet.io.containers import ZARR_SUFFIX, check_container, is_zarr, split_spec
from biounet.io.formats import SUPPORTED_SUFFIXES, is_image_file
from biounet.io.nifti import NIFTI_SUFFIXES

# How an error names a symbolic link whose target is missing or never resolves (see is_dead_link).
DEAD_LINK = "a link that leads nowhere (broken, or a loop)"


def file_stem(path: str | Path) -> str:
    """The name outputs and pairings use: ``case_001.nii.gz`` -> ``case_001``, ``a.h5:raw`` -> ``a``.

    Args:
        path: a file, or an HDF5/zarr spec with ``:array`` after the file name.
    """
    spec = split_spec(path)
    name = spec[0].name if spec is not None else Path(path).name
    for compound in NIFTI_SUFFIXES[1:]:
        if name.lower().endswith(compound):
            return name[: -len(compound)]
    return Path(name).stem


def is_hidden(path: str | Path) -> bool:
    """Whether a file's name starts with ``.``: hidden, like the temporary files of an interrupted write."""
    return Path(path).name.startswith(".")


def list_image_files(folder: Path) -> list[Path]:
    """A folder's image files, sorted; ``.zarr`` stores (directories) count as files.

    Hidden files are left out: ``.00_prob.1234.tmp.tif`` is what a killed ``predict`` leaves behind.
    HDF5 files are listed too: each must then hold exactly one dataset, since a listing names none.

    Args:
        folder: the directory to list.

    Raises:
        BiounetError: for a link with an image's name that leads nowhere (broken, or a loop).
    """
    return sorted(p for p in folder.iterdir() if is_image_file(p) and not is_hidden(p) and _is_image_entry(p))


def _is_image_entry(path: Path) -> bool:
    """Whether a listed path is a file or a zarr store; a link that leads nowhere is an error, not skipped:
    the image it was meant to be would be missing from the results without a word."""
    if path.is_file() or (path.is_dir() and path.suffix.lower() == ZARR_SUFFIX):
        return True
    if is_dead_link(path):
        raise BiounetError(f"{DEAD_LINK} where an image was expected", path)
    return False


def is_dead_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link whose target does not exist or never resolves (a loop)."""
    return path.is_symlink() and not path.exists()


def expand_inputs(arguments: Sequence[str], unique_stems: bool = True) -> list[Path]:
    """Files as given, directories as their image files (sorted), globs as their matches (sorted).

    ``file.h5:dataset`` and ``store.zarr:array`` name one array inside a file; both the file and the array
    must exist, and the file part may be a glob (``stacks/*.h5:raw``). A ``.zarr`` directory is one input,
    never a folder to list. Folders and globs list HDF5 files and zarr stores without an array name: each
    must then hold exactly one array (reading names the arrays it holds otherwise). Folders and globs leave
    out hidden files (names starting with ``.``), such as the temporary files of an interrupted run.

    Args:
        arguments: the command line's paths.
        unique_stems: for outputs named after inputs: two inputs may not share a :func:`file_stem`.

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
            found = [m for m in matches if is_image_file(m) and not is_hidden(m) and _is_image_entry(m)]
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
            raise BiounetError(DEAD_LINK if path.is_symlink() else "file not found", path)
    seen: dict[str, Path] = {}
    for f in files if unique_stems else []:
        stem = file_stem(f)
        if stem in seen and seen[stem] != f:
            raise BiounetError(f"two inputs share the name {stem!r} ({seen[stem]} and {f}); "
                               "their outputs would collide", f)
        seen[stem] = f
    return list(dict.fromkeys(files))
