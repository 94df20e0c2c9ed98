"""Ctrl-C and SIGTERM as interrupts that the code can clean up after, and that wait for the end of a
training step.

SIGTERM's default action (``kill``, a batch system stopping a job) ends the process at once, without running
``finally`` blocks: an atomic write would leave its temporary file behind, and training would not save
``last.pt``. Inside :func:`terminate_as_interrupt` (what ``biounet`` runs each command in) it raises
``KeyboardInterrupt``, as Ctrl-C does.

A ``KeyboardInterrupt`` raised half-way through ``optimizer.step()`` would leave some weights updated and
others not, with the step counter and the random generators out of step with them: nothing worth saving.
Inside :func:`deferred_interrupt` a first Ctrl-C or SIGTERM is only noted and raised when the block ends; a
second one raises at once, for a user who does not want to wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

Handler = Callable[[int, FrameType | None], object]

# The handlers that raise KeyboardInterrupt, which deferred_interrupt may delay: Python's own for SIGINT, and
# those terminate_as_interrupt installs. An application's own handlers are left as they are.
_INTERRUPTING: set[object] = {signal.default_int_handler}


@contextlib.contextmanager
def terminate_as_interrupt(received: list[int]) -> Iterator[None]:
    """Inside the block, SIGTERM raises ``KeyboardInterrupt`` (and is noted in ``received``), as Ctrl-C does.

    Only in the main thread (the only one that may set handlers) and while SIGTERM has its default action
    (an application calling ``biounet.cli.main`` may handle it itself); the default is put back after the
    block.

    Args:
        received: gets the signal's number when SIGTERM arrives.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    _INTERRUPTING.add(interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _INTERRUPTING.discard(interrupt)



@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Delays a first SIGINT or SIGTERM inside the block to its end, where the handler it met runs (and
    raises ``KeyboardInterrupt``); a second one runs it at once.

    Only in the main thread and for a signal whose handler is one that raises ``KeyboardInterrupt`` (Python's
    default for SIGINT, :func:`terminate_as_interrupt`'s for SIGTERM); elsewhere (another thread, an
    application with its own handler) the block runs with signals as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers: dict[int, Handler] = {}
    for which in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(which)
        if handler in _INTERRUPTING and callable(handler):
            handlers[int(which)] = handler
    received: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        if received:
            handlers[signum](signum, frame)
        received.append(signum)

    for number in handlers:
        signal.signal(number, note)
    try:
        yield
    finally:
        for number, kept in handlers.items():
            signal.signal(number, kept)
    if received:
        handlers[received[0]](received[0], None)
