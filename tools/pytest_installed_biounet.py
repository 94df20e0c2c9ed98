"""pytest plugin of the install check (noxfile.py): the tests must exercise the *installed* wheel.

The install sessions run tests/ (the build's copy in .nox/snapshot/) with ``-p pytest_installed_biounet``
(this folder on ``PYTHONPATH``, which holds no package). The plugin names the ``biounet`` that pytest imported
at the start of the run and stops the run before any test if it is not a site-packages copy (a source tree's
``src/biounet``): a test run that silently used ``src/`` would prove nothing about the wheel.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

SOURCE_TREE = Path(__file__).resolve().parents[1] / "src"


def _biounet() -> ModuleType:
    # Imported by name: whichever biounet sys.path yields is the one under test.
    return importlib.import_module("biounet")


def _installed_biounet() -> Path:
    return Path(str(_biounet().__file__)).resolve()


def pytest_configure(config: pytest.Config) -> None:
    path = _installed_biounet()
    if SOURCE_TREE in path.parents or "site-packages" not in path.parts:
        raise pytest.UsageError(f"biounet is imported from {path}, not from an installed wheel")


def pytest_sessionstart(session: pytest.Session) -> None:
    # A line of its own, not a report header: the install check runs pytest with -q, which hides headers.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"biounet {_biounet().__version__} under test: {_installed_biounet()}")
