"""The one exception type that the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class BiounetError(Exception):
    """A problem with the user's input (a file, a config value, a checkpoint), not a bug.

    Args:
        message: what is wrong, as one line.
        path: the file concerned, if any; it is put in front of the message.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(message if path is None else f"{path}: {message}")


def reason(exc: BaseException) -> str:
    """The first line of an exception from a library, with its type, for a one-line message.

    Args:
        exc: the exception a library raised.
    """
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
