"""Install check ("install anywhere"): does the built wheel install and work on every Python we support?

Run from the repository root, with nox installed into the project's virtualenv (``.venv/bin/pip install nox``)::

    .venv/bin/nox                      # build, install(3.10) ... install(3.13), report
    .venv/bin/nox -s build             # only the wheel and sdist, with their content checks
    .venv/bin/nox -s "install(3.12)"   # one Python (runs build first)
    .venv/bin/nox --list               # the sessions, and the Pythons found on this machine

Sessions:

* ``build``: the sdist and, built from that sdist, the wheel (``python -m build``) into dist/, from a copy of
  the files git would ship (.nox/snapshot/, whose tests/ the install sessions run); asserts that both contain
  every file of src/biounet (the shipped models, their model cards, the rehearsal set and the sample images).
* ``install(X.Y)``, one per Python 3.10-3.13 found (missing ones are listed, not failed): a fresh virtualenv,
  the wheel installed into it (not editable, not from src/), then ``biounet --version``, the README's quick
  start (``biounet predict --model isbi2012-membranes <bundled sample> --out <tmp>``), the fast tests
  (:data:`FAST_TESTS`) of the build's copy of tests/ against the installed package, and a
  ``pip install --dry-run`` of each extra in :data:`EXTRAS` to show that it resolves.
* ``report``: the matrix, dist/install-matrix.md (every install session also rewrites it).

Every pip call takes ``-c constraints.txt``, so torch is always 2.13.0: the CPU build that lies in
/opt/wheels where there is one (Python 3.11 here), else the CUDA build from PyPI (several GB, shared
through pip's cache). The tests need no display: napari's canvas tests skip themselves without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import deque
from dataclasses import asdict, dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import nox

REPO = Path(__file__).resolve().parent
DIST = REPO / "dist"
ROWS = DIST / "install-matrix"  # build.json and one <X.Y>.json per install session: the table's input
TABLE = DIST / "install-matrix.md"
CONSTRAINTS = REPO / "constraints.txt"
# The files git would ship, copied by the build session: the wheel is built from it and the install sessions
# run its tests/, so tests and wheel come from the same moment even while the working tree keeps changing.
SNAPSHOT = REPO / ".nox" / "snapshot"

CANDIDATE_PYTHONS = ("3.10", "3.11", "3.12", "3.13")  # requires-python is >=3.10
EXTRAS = ("napari", "bioimageio", "volumes")
QUICK_START_MODEL = "isbi2012-membranes"

# The fast tests: what a user's machine must get right, in about two to three minutes on 2 CPU cores with the
# CPU torch (timed one file at a time with --durations). Model shapes (test_unet), overlap-tile prediction
# (test_tiling, test_predict), metrics (test_metrics), image io (test_io), checkpoints (test_checkpoint), the
# shipped models by name (test_pretrained) and the CLI's predict, --version and info (test_cli). Deselected:
# test_cli's six bad-input cases (one `biounet` process each, ~30 s; the error contract is packaging-neutral).
# The slow rest (training, napari, bioimageio, Dask, the docs) stays with `make test`.
FAST_TESTS = (
    "tests/test_unet.py",
    "tests/test_tiling.py",
    "tests/test_predict.py",
    "tests/test_metrics.py",
    "tests/test_io.py",
    "tests/test_checkpoint.py",
    "tests/test_pretrained.py",
    "tests/test_cli.py",
)
FAST_TESTS_DESELECTED = ("tests/test_cli.py::test_bad_input_one_line_exit_2_and_no_outputs",)

# Files of src/biounet that are not Python, grouped as the issue names them: each group must be non-empty in
# the wheel (on top of "every file of src/biounet is in the wheel").
SHIPPED_DATA = {
    "models (*.pt)": re.compile(r"biounet/pretrained/[^/]+\.pt"),
    "model cards (*.md)": re.compile(r"biounet/pretrained/[^/]+\.md"),
    "rehearsal set": re.compile(r"biounet/pretrained/nuclei\.rehearsal/.+"),
    "samples": re.compile(r"biounet/pretrained/samples/.+"),
}


def _find_python(version: str) -> str | None:
    """The interpreter of Python ``version`` ("3.12"): the newest pyenv build of it, else ``pythonX.Y`` on PATH.

    pyenv's shims are on PATH here but answer only for the globally selected version, so each candidate is
    run once to make sure it is that Python.
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    builds = [p for p in pyenv.glob(f"{version}.*") if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)]
    builds.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
    candidates = [str(p / "bin" / f"python{version}") for p in builds]
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        try:
            answer = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                    capture_output=True, text=True, timeout=60, check=False)
        except OSError:
            continue
        if answer.returncode == 0 and answer.stdout.strip() == version:
            return candidate
    return None


PYTHONS = {version: path for version in CANDIDATE_PYTHONS if (path := _find_python(version))}
MISSING_PYTHONS = [version for version in CANDIDATE_PYTHONS if version not in PYTHONS]

nox.options.sessions = ["build", "install", "report"]
nox.options.reuse_venv = "no"  # "clean virtual environment": recreated on every run


@dataclass
class Step:
    """One checked step of an install session: its table cell, its wall time, and why it failed."""

    cell: str = "not run"
    ok: bool | None = None  # None: not run (an earlier step failed)
    seconds: float = 0.0
    error: str = ""


@dataclass
class Row:
    """One Python's line of the matrix, written as dist/install-matrix/<X.Y>.json."""

    python: str
    interpreter: str
    wheel_sha256: str = ""
    torch: str = "-"
    seconds: float = 0.0
    steps: dict[str, Step] = field(default_factory=dict)


def _tail(text: str, lines: int = 1) -> str:
    """The last non-blank line(s) of a command's output: the error line of a failure."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])


def _run(session: nox.Session, args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Runs a command of the session's virtualenv, echoing its output into the log as it comes.

    Not ``session.run``: the matrix needs the exit code and the error line of a failed step, and the session
    has to go on to the next step instead of stopping at the first failure.
    """
    session.log(" ".join(args))
    seen: deque[str] = deque(maxlen=400)
    with subprocess.Popen(args, cwd=cwd, env=env or _venv_env(session), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            seen.append(line)
        code = process.wait()
    sys.stdout.flush()
    return code, "".join(seen)


def _venv_env(session: nox.Session, **extra: str) -> dict[str, str]:
    """The environment of a command in the session's virtualenv: its bin/ first, nothing that could make
    ``import biounet`` find the source tree (PYTHONPATH), and no display (the check runs headless)."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "DISPLAY", "WAYLAND_DISPLAY"}}
    env["VIRTUAL_ENV"] = str(session.virtualenv.location)
    env["PATH"] = os.pathsep.join([session.bin, env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _git_files() -> list[Path]:
    """The files git would ship (tracked or untracked, not ignored, still present), relative to the repo."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    return sorted({Path(name) for name in listing.split("\0") if name and (REPO / name).is_file()})


def _sha256(path: Path) -> str:
    digest = sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@nox.session(download_python="never")
def build(session: nox.Session) -> None:
    """The wheel and sdist in dist/, and proof that both hold the package with its shipped data."""
    found = ", ".join(f"{v} ({p})" for v, p in PYTHONS.items()) or "none"
    session.log(f"Pythons found: {found}; not found, so skipped: {', '.join(MISSING_PYTHONS) or 'none'}")
    session.install("-c", str(CONSTRAINTS), "build")
    # Built from a copy of what git would ship (SNAPSHOT): building in place would write biounet.egg-info
    # into src/ and could pick up ignored leftovers (build/, stray files) that a clean checkout lacks.
    shutil.rmtree(SNAPSHOT, ignore_errors=True)
    files = _git_files()
    for name in files:
        (SNAPSHOT / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, SNAPSHOT / name)
    DIST.mkdir(exist_ok=True)
    for old in [*DIST.glob("biounet-*.whl"), *DIST.glob("biounet-*.tar.gz")]:
        old.unlink()
    shutil.rmtree(ROWS, ignore_errors=True)  # rows of an earlier build describe another wheel
    ROWS.mkdir(parents=True)
    # No --sdist/--wheel: build makes the sdist, then the wheel *from the sdist*, so a file missing from the
    # sdist is missing from the wheel too and fails the checks below.
    session.run("python", "-m", "build", "--outdir", str(DIST), str(SNAPSHOT))
    wheel, = DIST.glob("biounet-*.whl")
    sdist, = DIST.glob("biounet-*.tar.gz")

    package = [name for name in files if name.parts[:2] == ("src", "biounet")]
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        entry_points = next((archive.read(n).decode() for n in in_wheel if n.endswith(".dist-info/entry_points.txt")),
                            "")
    with tarfile.open(sdist) as archive:
        root = sdist.name.removesuffix(".tar.gz")
        in_sdist = {name.removeprefix(f"{root}/") for name in archive.getnames()}

    missing_wheel = sorted(str(n.relative_to("src")) for n in package if str(n.relative_to("src")) not in in_wheel)
    missing_sdist = sorted(str(n) for n in [*package, Path("pyproject.toml"), Path("README.md"), Path("LICENSE")]
                           if str(n) not in in_sdist)
    groups = {label: sorted(n for n in in_wheel if pattern.fullmatch(n)) for label, pattern in SHIPPED_DATA.items()}
    session.log(f"{wheel.name}: {len(in_wheel)} files; {sdist.name}: {len(in_sdist)} entries")
    for label, names in groups.items():
        session.log(f"wheel, {label}: {len(names)} files: {', '.join(n.rsplit('/', 1)[1] for n in names[:6])}"
                    + (", ..." if len(names) > 6 else ""))
    problems = [f"not in the wheel: {', '.join(missing_wheel)}"] if missing_wheel else []
    problems += [f"not in the sdist: {', '.join(missing_sdist)}"] if missing_sdist else []
    problems += [f"the wheel has no {label}" for label, names in groups.items() if not names]
    problems += [] if "biounet = biounet.cli.main:main" in entry_points else ["the wheel has no biounet command"]
    (ROWS / "build.json").write_text(json.dumps({
        "wheel": wheel.name, "wheel_sha256": _sha256(wheel), "sdist": sdist.name,
        "wheel_files": len(in_wheel), "sdist_files": len(in_sdist), "package_files": len(package),
        "shipped": {label: len(names) for label, names in groups.items()}, "problems": problems}, indent=1))
    if problems:
        session.error("; ".join(problems))
    session.log(f"wheel and sdist hold all {len(package)} files of src/biounet")


def _python_params() -> list[Any]:
    return [nox.param(path, id=version) for version, path in PYTHONS.items()]


@nox.session(requires=["build"], download_python="never")
@nox.parametrize("python", _python_params())
def install(session: nox.Session) -> None:
    """The wheel in a fresh virtualenv of one Python: --version, quick start, fast tests, extras."""
    version = next(v for v, path in PYTHONS.items() if path == session.python)
    built = json.loads((ROWS / "build.json").read_text())
    wheel = DIST / built["wheel"]
    row = Row(python=version, interpreter=str(session.python), wheel_sha256=built["wheel_sha256"])
    row.steps = {name: Step() for name in ("install", "version", "quick start", "tests", *EXTRAS)}
    tmp = Path(session.create_tmp()).resolve()
    started = time.monotonic()
    constrain = ["-c", str(CONSTRAINTS)]

    def step(name: str, args: list[str], *, cwd: Path = tmp, env: dict[str, str] | None = None) -> str | None:
        """Runs one step's command; its output if it succeeded, else None with the step marked failed."""
        t0 = time.monotonic()
        code, output = _run(session, args, cwd=cwd, env=env)
        row.steps[name].seconds += time.monotonic() - t0
        if code != 0:
            row.steps[name] = Step(cell=f"failed (exit {code})", ok=False, seconds=row.steps[name].seconds,
                                   error=_tail(output, 3))
            return None
        return output

    python, pip = str(Path(session.bin) / "python"), [str(Path(session.bin) / "python"), "-m", "pip"]
    report = tmp / "install-report.json"
    # The wheel file itself, not the source tree; its dependencies through the constraints (torch 2.13.0).
    if step("install", [*pip, "install", "--report", str(report), *constrain, str(wheel)]) is not None:
        installed = {item["metadata"]["name"].lower(): item for item in json.loads(report.read_text())["install"]}
        torch = installed.get("torch")
        url = torch["download_info"]["url"] if torch else ""
        probe = step("install", [python, "-c", "import torch; print(torch.__version__, torch.version.cuda)"])
        torch_version, cuda = (probe or "? ?").split()[-2:]
        build_kind = f"CUDA {cuda}" if cuda != "None" else "CPU"
        source = ("from disk" if url.startswith("file:") else "from PyPI" if "pythonhosted" in url
                  else f"from {url.split('/')[2]}" if url else "(already installed)")
        row.torch = f"{torch_version} {build_kind} {source}"
        if probe is not None:
            row.steps["install"] = Step(cell=f"ok ({len(installed)} pkgs)", ok=True,
                                        seconds=row.steps["install"].seconds)

    if row.steps["install"].ok:
        # Where `import biounet` comes from, run outside the repository: it must be the venv's site-packages.
        where = step("version", [python, "-c", "import biounet; print(biounet.__file__)"])
        expected = built["wheel"].split("-")[1]
        answer = step("version", [str(Path(session.bin) / "biounet"), "--version"])
        if where is not None and answer is not None:
            location = Path(_tail(where))
            inside = Path(session.virtualenv.location) in location.parents
            right = _tail(answer) == f"biounet {expected}"
            row.steps["version"] = Step(cell=_tail(answer) if right else f"wrong: {_tail(answer)}",
                                        ok=inside and right, seconds=row.steps["version"].seconds,
                                        error="" if inside else f"biounet imported from {location}")
            session.log(f"biounet.__file__ = {location}")

        # The README's quick start, on the sample image the wheel ships.
        sample = step("quick start", [python, "-c", "from biounet.pretrained import sample_image; "
                                      f"print(sample_image({QUICK_START_MODEL!r}))"])
        if sample is not None:
            image, out = Path(_tail(sample)), tmp / "quick-start"
            shutil.rmtree(out, ignore_errors=True)
            if step("quick start", [str(Path(session.bin) / "biounet"), "predict", "--model", QUICK_START_MODEL,
                                    str(image), "--out", str(out)]) is not None:
                # A mask of the image's size with membrane and cell pixels both present, not just any file.
                check = ("import sys, imageio.v3 as iio, numpy as np, tifffile; "
                         f"m = iio.imread({str(out / (image.stem + '_mask.png'))!r}); "
                         f"p = tifffile.imread({str(out / (image.stem + '_prob.tif'))!r}); "
                         f"i = iio.imread({str(image)!r}); "
                         "ok = m.shape == i.shape[:2] == p.shape[1:] and len(np.unique(m)) == 2; "
                         "print(m.shape, p.shape, np.unique(m)); sys.exit(0 if ok else 1)")
                if step("quick start", [python, "-c", check]) is not None:
                    row.steps["quick start"] = Step(cell="ok", ok=True, seconds=row.steps["quick start"].seconds)

        # The fast tests of the snapshot's tests/ (the wheel's twins; their data lies beside them), against
        # the installed package: importlib mode puts neither tests/ nor the root on sys.path, the pytest
        # command (not `python -m pytest`) keeps the working directory off it too, and the plugin in tools/
        # (the only thing on PYTHONPATH) names the biounet under test and stops the run if it is not the
        # venv's site-packages copy.
        if step("tests", [*pip, "install", "--quiet", *constrain, "pytest"]) is not None:
            junit = tmp / "fast-tests.xml"
            deselect = [f"--deselect={node}" for node in FAST_TESTS_DESELECTED]
            step("tests", [str(Path(session.bin) / "pytest"), "--import-mode=importlib", "-p", "no:cacheprovider",
                           "-p", "pytest_installed_biounet", "--rootdir", str(SNAPSHOT), f"--junitxml={junit}", "-q",
                           *deselect, *FAST_TESTS], cwd=SNAPSHOT,
                 env=_venv_env(session, PYTHONPATH=str(SNAPSHOT / "tools")))
            if junit.exists():
                counts = ElementTree.parse(junit).getroot().find("testsuite")
                assert counts is not None
                total, skipped = int(counts.get("tests", 0)), int(counts.get("skipped", 0))
                failed = int(counts.get("failures", 0)) + int(counts.get("errors", 0))
                error = row.steps["tests"].error
                row.steps["tests"] = Step(cell=f"{total - failed - skipped} passed, {failed} failed, {skipped} skipped",
                                          ok=failed == 0 and row.steps["tests"].ok is not False,
                                          seconds=row.steps["tests"].seconds, error=error)

        # Does `pip install biounet[extra]` resolve here? A dry run with the built wheel and the extra
        # resolves the whole tree (torch held by the constraints) without installing napari's Qt or ONNX.
        for extra in EXTRAS:
            dry = tmp / f"extra-{extra}.json"
            if step(extra, [*pip, "install", "--dry-run", "--quiet", "--report", str(dry), *constrain,
                            f"{wheel}[{extra}]"]) is not None:
                would = json.loads(dry.read_text())["install"]
                names = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in would}
                lead = {"napari": "napari", "bioimageio": "bioimageio.core", "volumes": "zarr"}[extra]
                shown = f"{lead} {names[lead]}" if lead in names else "already installed"
                row.steps[extra] = Step(cell=f"ok: {shown}, {len(names)} pkgs", ok=True,
                                        seconds=row.steps[extra].seconds)

    row.seconds = time.monotonic() - started
    (ROWS / f"{version}.json").write_text(json.dumps(asdict(row), indent=1))
    _write_table(session)
    unfinished = [name for name, s in row.steps.items() if s.ok is not True]
    if unfinished:
        session.error(f"Python {version}: {', '.join(unfinished)} failed or did not run (see {TABLE})")


@nox.session(python=False)
def report(session: nox.Session) -> None:
    """The matrix of the install sessions, printed and written to dist/install-matrix.md."""
    _write_table(session)


def _write_table(session: nox.Session) -> None:
    """dist/install-matrix.md from the rows in dist/install-matrix/; printed too."""
    if not (ROWS / "build.json").exists():
        session.error("no build in dist/: run the build session first")
    built = json.loads((ROWS / "build.json").read_text())
    header = ["Python", "wheel install", "torch", "biounet --version", "quick start", "fast tests",
              *(f"[{e}] resolves" for e in EXTRAS), "wall time"]
    lines = [
        "# Install matrix", "",
        f"Wheel `{built['wheel']}` (sha256 {built['wheel_sha256'][:12]}), sdist `{built['sdist']}`, both holding "
        f"all {built['package_files']} files of src/biounet; shipped data in the wheel: "
        + ", ".join(f"{label} {count}" for label, count in built["shipped"].items())
        + (f". PROBLEMS: {'; '.join(built['problems'])}" if built["problems"] else "") + ".", "",
        f"Fast tests: `{' '.join(FAST_TESTS)}`, less `{' '.join(FAST_TESTS_DESELECTED)}`. Torch pinned by "
        "constraints.txt. Extras: `pip install --dry-run -c constraints.txt <wheel>[extra]` in the installed "
        "environment.", "",
        "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    details: list[str] = []
    for version in CANDIDATE_PYTHONS:
        path = ROWS / f"{version}.json"
        if version in MISSING_PYTHONS:
            lines.append(f"| {version} | interpreter not found on this machine |" + " |" * (len(header) - 2))
            continue
        if not path.exists():
            lines.append(f"| {version} | not run |" + " |" * (len(header) - 2))
            continue
        data = json.loads(path.read_text())
        steps = {name: Step(**s) for name, s in data["steps"].items()}
        stale = " (stale: other wheel)" if data["wheel_sha256"] != built["wheel_sha256"] else ""
        cells = [steps[name].cell for name in ("install",)] + [data["torch"]] + [
            steps[name].cell for name in ("version", "quick start", "tests", *EXTRAS)]
        minutes, seconds = divmod(round(data["seconds"]), 60)
        lines.append(f"| {version}{stale} | " + " | ".join(cells) + f" | {minutes}m{seconds:02d}s |")
        details += [f"- {version} {name}: `{s.error}`" for name, s in steps.items() if s.error]
        timing = ", ".join(f"{name} {s.seconds:.0f}s" for name, s in steps.items())
        details.append(f"- {version} step times: {timing}")
    if details:
        lines += ["", "Details:", "", *details]
    text = "\n".join(lines) + "\n"
    TABLE.write_text(text)
    print(text)
    session.log(f"written to {TABLE.relative_to(REPO)}")
