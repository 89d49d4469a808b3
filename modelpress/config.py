"""Strict construction of frozen dataclass configs from YAML mappings.

Every recipe block and every technique ``Config`` goes through :func:`parse`: unknown keys fail with
the valid keys and the closest match, values are checked against the annotated types, and the
dataclass's own ``__post_init__`` checks ranges.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from .errors import ConfigError, closest


def parse(cls: type, data: Any, where: str) -> Any:
    """Build ``cls`` (a dataclass) from ``data`` (a mapping or None), strictly.

    >>> from modelpress.recipe import RuntimeConfig
    >>> parse(RuntimeConfig, {"threads": 1}, "runtime").threads
    1
    """
    if isinstance(data, cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"'{where}' must be a mapping of settings (key: value), got {_kind(data)}. "
            f"Valid keys: {', '.join(f.name for f in dataclasses.fields(cls))}."
        )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(
                f"Unknown key '{key}' in '{where}'.{closest(str(key), fields)} "
                f"Valid keys: {', '.join(fields)}."
            )
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"'{where}' is missing required key(s): {', '.join(missing)}.")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"In '{where}': {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Invalid settings in '{where}': {e}") from None


def to_dict(obj: Any) -> Any:
    """A config back to plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"'{where}' has an invalid value {_kind(value)}.")
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"'{where}' must be one of {choices}, got {value!r}.{closest(str(value), map(str, args))}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {_kind(value)}.")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping, got {_kind(value)}.")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, where): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{where}' must be true or false, got {_kind(value)}.")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{where}' must be a whole number, got {_kind(value)}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"'{where}' must be a number, got {_kind(value)}.")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{where}' must be text, got {_kind(value)}.")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"'{where}' has an unsupported value {_kind(value)}.")


def check(condition: bool, message: str) -> None:
    """Raise a ConfigError with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigError(message)
