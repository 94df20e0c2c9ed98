"""Building typed dataclass configs from plain (YAML) dicts, with errors that name unknown keys."""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any, TypeVar

from biounet.errors import BiounetError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], what: str) -> T:
    """``cls(**data)``, refusing keys that ``cls`` does not have.

    YAML lists become tuples, and numbers written as strings (YAML reads ``1e-4`` as a string) become
    the float or int their field asks for.

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
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints.get(k), f"{what} {k}") for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise BiounetError(f"bad {what}: {exc}") from exc


def _coerce(value: Any, hint: Any, name: str) -> Any:
    if isinstance(value, list):
        return tuple(_coerce(v, None, name) for v in value)
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise BiounetError(f"{name} must be a number, got {value!r}") from None
    if hint is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise BiounetError(f"{name} must be an integer, got {value!r}") from None
    return value
