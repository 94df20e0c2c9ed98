"""Ctrl-C that waits for the end of a training step, so that an interrupted run can be saved and resumed.

A ``KeyboardInterrupt`` raised half-way through ``optimizer.step()`` would leave some weights updated and
others not, with the step counter and the random generators out of step with them: nothing worth saving.
Inside :func:`deferred_interrupt` a first Ctrl-C is only noted and raised when the block ends; a second
one raises at once, for a user who does not want to wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Delays a first SIGINT inside the block to its end (then raises ``KeyboardInterrupt``).

    Only in the main thread and while Python's default SIGINT handler is installed; elsewhere (another
    thread, an application with its own handler) the block runs with interrupts as they are.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt
