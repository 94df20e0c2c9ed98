"""Reporting from a worker thread to the widgets, and stopping it."""

from __future__ import annotations

import traceback

from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]


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
