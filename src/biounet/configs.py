"""Building typed dataclass configs from plain (YAML) dicts, with errors that name unknown keys, and reading
YAML that cannot explode when it is walked."""

from __future__ import annotations

import typing
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

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


MAX_YAML_VALUES = 1_000_000
"""Values a YAML document may hold once its aliases are expanded: far more than any config or package
description, far fewer than an alias bomb's ("billion laughs")."""


def load_yaml(text: str | bytes, path: str | Path | None = None) -> Any:
    """``yaml.safe_load(text)``, refusing a document that aliases make huge or circular.

    An alias is a reference, so loading a "billion laughs" document is quick; it is every later walk over
    the values (building a config from them, writing them back) that would take forever, or recurse without
    end through an alias to itself. The values are counted here with each shared one counted once, in the
    time the text takes to read.

    Args:
        text: the YAML document.
        path: the file it came from, named in errors.

    Raises:
        yaml.YAMLError: if the text is not YAML.
        BiounetError: naming ``path``, for a document nested too deeply, one that contains itself through an
            alias, or one of more than :data:`MAX_YAML_VALUES` values once its aliases are expanded.
    """
    try:
        data = yaml.safe_load(text)
        _count_values(data, {}, set(), path)
    except RecursionError:
        raise BiounetError("YAML nested too deeply", path) from None
    return data


def _count_values(value: Any, counted: dict[int, int], open_: set[int], path: str | Path | None) -> int:
    """Values in ``value`` with its aliases expanded; ``counted`` holds the shared containers seen so far,
    ``open_`` those being counted (one met again inside itself is a cycle)."""
    if not isinstance(value, dict | list):
        return 1
    key = id(value)
    if key in counted:
        return counted[key]
    if key in open_:
        raise BiounetError("YAML contains itself through an alias", path)
    open_.add(key)
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    total = 1 + sum(_count_values(v, counted, open_, path) for v in items)
    open_.discard(key)
    if total > MAX_YAML_VALUES:
        raise BiounetError(f"YAML of more than {MAX_YAML_VALUES:,} values once its aliases are expanded (an "
                           "alias bomb?)", path)
    counted[key] = total
    return total
