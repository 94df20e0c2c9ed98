"""Reporting from a worker thread to the widgets, and stopping it."""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal  # type: ignore[attr-defined]


class JobCancelledError(Exception):
    """Raised inside a job when its Cancel button was pressed."""


class ProgressRelay(QObject):
    """Signals emitted in a worker thread and received in the GUI thread (Qt queues them across)."""

    fraction = Signal(float)
    loss = Signal(int, float)
    epoch = Signal(dict)
