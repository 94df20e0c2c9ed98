"""The test set-up itself: on a headless machine without Xvfb, the napari viewer tests are skipped at
collection, with one reason, and nothing errors (napari's ``make_napari_viewer`` fixture fails at teardown
when a test skips itself from inside it; ``tests/conftest.py`` skips them before)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_napari_tests_skip_without_a_display_or_xvfb() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    # --no-xvfb hides Xvfb from pytest-xvfb as a machine without it would.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-xvfb", "-rs",
                           "-W", "ignore", "tests/test_napari.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "error" not in summary, summary
    skipped = int(re.search(r"(\d+) skipped", summary).group(1))  # type: ignore[union-attr]
    viewer_tests = len(re.findall(r"^def test_\w+\(viewer", (REPO / "tests" / "test_napari.py").read_text(), re.M))
    assert viewer_tests >= 8
    reasons = {line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("SKIPPED")}
    assert reasons == {"napari's canvas needs an X server: install Xvfb (apt install xvfb), which pytest-xvfb starts"}
    assert skipped >= viewer_tests
