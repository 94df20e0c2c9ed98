"""Building typed dataclass configs from plain (YAML) dicts, with errors that name unknown keys."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from biounet.errors import BiounetError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)``, refusing keys that ``cls`` does not have.

    Args:
        cls: a dataclass type.
        data: field values by name.
        what: the config's name for error messages, e.g. ``"model config"``.
    """
    if not isinstance(data, dict):
        raise BiounetError(f"{what} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise BiounetError(f"unknown {what} keys: {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise BiounetError(f"bad {what}: {exc}") from exc
