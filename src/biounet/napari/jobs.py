"""The widgets' background jobs: one at a time in a worker thread (the viewer stays responsive), with a
start and a stop button, a progress bar, a status line, and signals from the thread."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]
from qtpy.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget


class JobCancelledError(Exception):
    """Raised inside a job when its Cancel button was pressed."""


def failure_text(exc: BaseException) -> str:
    """The one line a widget shows for a failed job. An unexpected error (a bug) also prints its traceback
    to the console, for a bug report."""
    from biounet.errors import BiounetError

    if isinstance(exc, JobCancelledError):
        return "cancelled"
    if isinstance(exc, BiounetError | OSError | MemoryError):
        return f"error: {exc}"
    traceback.print_exception(exc)
    return f"error: {type(exc).__name__}: {exc} (a bug; its traceback is on the console)"


class ProgressRelay(QObject):
    """Signals emitted in a worker thread and received in the GUI thread (Qt queues them across)."""

    fraction = Signal(float)
    loss = Signal(int, float)
    epoch = Signal(dict, str)


class JobWidget(QWidget):
    """A widget that runs one job at a time in a worker thread.

    A job sees :attr:`stop_requested` (set by the stop button's handler) and reports through :attr:`relay`;
    its progress fraction drives the progress bar.

    Args:
        start: the start button's text.
        stop: the stop button's text.
    """

    def __init__(self, start: str, stop: str) -> None:
        super().__init__()
        self.start_button = QPushButton(start)
        self.stop_button = QPushButton(stop)
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.stop_requested = threading.Event()
        self.relay = ProgressRelay()
        self.relay.fraction.connect(lambda f: self.progress.setValue(round(1000 * min(f, 1.0))))
        self.worker: Any = None

    def add_job_controls(self, layout: QVBoxLayout) -> None:
        """Adds the buttons, the progress bar and the status line to ``layout``."""
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    @property
    def busy(self) -> bool:
        """Whether a job is running (until its results are in the viewer)."""
        return not self.start_button.isEnabled()

    def start_job(self, job: Callable[[], Any], on_result: Callable[[Any], None], message: str) -> Any:
        """Runs ``job()`` in a worker thread; ``on_result`` receives its result in the GUI thread, and a
        failure is one line in the status. Returns the worker."""
        self.stop_requested.clear()
        self.worker = create_worker(job, _ignore_errors=True)
        self.worker.returned.connect(on_result)
        self.worker.errored.connect(lambda exc: self.status.setText(failure_text(exc)))
        self.worker.finished.connect(self._finished)
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(message)
        self.worker.start()
        return self.worker

    def _finished(self) -> None:
        self.start_button.setEnabled(True)
        self.stop_button.setEnabled(False)
