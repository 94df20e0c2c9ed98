"""The documentation's tutorials run end to end, and its build's checks can fail.

Each tutorial page (and *Getting started*) is run as a reader would: its ``bash`` and ``python`` code blocks
in order, in one fresh folder where ``data/`` is the repository's bundled data, with ``biounet``,
``python`` and ``torchrun`` from this environment. Blocks marked ``text`` are shown, not run (a GPU
cluster, an interactive viewer). The one change made to a block: training budgets (``--minutes N``,
``minutes=N``) shrink to :data:`MINUTES`, so that the suite stays fast; every other argument stands as
printed. ``mkdocs build --strict`` itself runs in ``make test`` (the ``docs`` target).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = ["getting-started.md", *sorted(f"tutorials/{p.name}" for p in (DOCS / "tutorials").glob("*.md"))]
MINUTES = "0.4"
# Pages whose runs need more than MINUTES before a first step fits (an instance model's run keeps room for
# tuning its post-processing at the end; a fine-tuning run reads the start model's 80 pairs) get this.
LONGER = {"tutorials/nuclei-instances.md": "2", "tutorials/napari.md": "1.2"}
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)

sys.path.insert(0, str(DOCS))
import hooks  # noqa: E402


def blocks(page: str) -> list[tuple[str, str]]:
    """The page's runnable blocks, ``(language, code)``, in order, budgets shortened."""
    text = (DOCS / page).read_text()
    minutes = LONGER.get(page, MINUTES)
    found = []
    for language, code in BLOCK.findall(text):
        code = re.sub(r"--minutes \d+(\.\d+)?", f"--minutes {minutes}", code)
        code = re.sub(r"\bminutes=\d+(\.\d+)?", f"minutes={minutes}", code)
        found.append((language, code))
    return found


def test_every_tutorial_has_runnable_blocks() -> None:
    assert len(PAGES) == 8
    for page in PAGES:
        assert blocks(page), page


@pytest.mark.parametrize("page", PAGES)
def test_tutorial_runs_end_to_end(page: str, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(REPO / "data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    for number, (language, code) in enumerate(blocks(page), 1):
        argv = (["bash", "-euo", "pipefail", "-c", code] if language == "bash"
                else [sys.executable, "-c", textwrap.dedent(code)])
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (f"{page}, block {number} ({language}) exited {done.returncode}:\n{code}\n"
                                      f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


def test_cli_reference_lists_every_command_and_option() -> None:
    from biounet.cli.main import build_parser

    reference = hooks.cli_reference()
    parser = build_parser()
    for name in ("plan", "train", "predict", "evaluate", "info", "export"):
        assert f"## `biounet {name}`" in reference
    predict = next(a for a in parser._actions if a.dest == "command").choices["predict"]  # type: ignore[attr-defined]
    for action in predict._actions:
        for option in action.option_strings if action.dest != "help" else ():
            assert f"`{option}`" in reference, option


def test_api_reference_has_every_public_docstring() -> None:
    assert hooks.api_modules()[:2] == ["biounet.workflows", "biounet.models.config"]
    assert hooks.undocumented(hooks.api_modules()) == []


def test_a_missing_docstring_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "biounet"
    package.mkdir()
    (package / "__init__.py").write_text('"""A package."""\n')
    (package / "thing.py").write_text(textwrap.dedent('''
        """A module."""
        import os
        from os.path import join

        def documented() -> None:
            """Does it."""

        def bare() -> None:
            pass

        def _private() -> None:
            pass

        class Tool:
            """A tool."""

            def run(self) -> None:
                pass

            def stop(self) -> None:
                """Stops."""
    '''))
    monkeypatch.setattr(hooks, "SRC", tmp_path)
    assert hooks.undocumented(["biounet.thing"]) == ["biounet.thing.bare", "biounet.thing.Tool.run"]
