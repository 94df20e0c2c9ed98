"""Reading a PyTorch file as tensors only: ``torch.load(weights_only=True)``, quietly."""

from __future__ import annotations

import warnings
from typing import IO, Any

import torch


def load_tensors(source: str | IO[bytes]) -> Any:
    """``torch.load(source, map_location="cpu", weights_only=True)``: tensors and plain containers, no code.

    torch warns (a ``UserWarning`` on stderr) about a pickle protocol it did not write before refusing a
    foreign pickle; the caller turns the refusal into one line naming the file, and a warning would be a
    second line, so torch's warnings are kept back here.

    Args:
        source: a file name or a binary file object.

    Raises:
        Exception: whatever torch raises for a file that is not tensors (``pickle.UnpicklingError`` among
            others); callers name the file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(source, map_location="cpu", weights_only=True)
