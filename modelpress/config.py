"""Strict construction of frozen dataclass configs from YAML mappings.

Every recipe block and every technique ``Config`` goes through :func:`parse`: unknown keys fail with
the valid keys and the closest match, values are checked against the annotated types, every number must
be finite and every count sane (:data:`RANGES`, by setting name), and the dataclass's own
``__post_init__`` checks its particular ranges.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from .errors import ConfigError, closest, shown

MAX_ITEMS = 10_000  # entries of one list or mapping
MAX_TEXT = 4096  # characters of one text value
MAX_WHOLE = 2**53  # |whole numbers|: beyond it floats, numpy and torch lose exactness or overflow
# Sane ranges of counts, by setting name; a name ending in "_<key>" uses <key>'s range (qat_epochs: epochs).
# Every Config parse() builds is checked, after its own __post_init__.
RANGES: dict[str, tuple[int, int]] = {
    "threads": (1, 1024), "streams": (1, 1024), "workers": (1, 1024), "batch_size": (1, 65_536),
    "batch_sizes": (1, 65_536), "epochs": (0, 10_000), "warmup": (0, 100_000), "rounds": (1, 100_000),
    "runs_per_round": (1, 100_000), "trials": (1, 100_000), "iterations": (0, 100_000), "samples": (0, 10**9),
    "seed": (0, 2**32 - 1),
}
MAX_LIST: dict[str, int] = {"batch_sizes": 64}  # entries, by setting name


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
                f"Unknown key '{shown(key, 80)}' in '{where}'.{closest(shown(key, 80), fields)} "
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
        built = cls(**kwargs)  # its own __post_init__ first: its messages are the most specific
    except ConfigError as e:
        raise ConfigError(f"In '{where}': {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"Invalid settings in '{where}': {shown(e, 300)}") from None
    for key, value in kwargs.items():
        in_range(key, value, f"{where}.{key}")
    return built


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
    return shown(f"{type(value).__name__} {value!r}", 80)


def in_range(name: str, value: Any, where: str) -> Any:
    """``value`` if it is within the sane range of the setting ``name`` (:data:`RANGES`, :data:`MAX_LIST`)."""
    key = next((k for k in RANGES if name == k or name.endswith("_" + k)), None)
    if key is None or value is None:
        return value
    items = value if isinstance(value, tuple) else (value,)
    if len(items) > MAX_LIST.get(key, MAX_ITEMS):
        raise ConfigError(f"'{where}' lists {len(items):,} values; at most {MAX_LIST.get(key, MAX_ITEMS)}.")
    low, high = RANGES[key]
    for v in items:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not low <= v <= high:
            raise ConfigError(f"'{where}' must be between {low:,} and {high:,}, got {v:,}.")
    return value


def _number(value: Any, where: str) -> Any:
    """Refuse NaN, infinities and whole numbers too large to be exact anywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"'{where}' must be a finite number, got {value}.")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WHOLE:
        raise ConfigError(f"'{where}' must be between {-MAX_WHOLE:,} and {MAX_WHOLE:,}, got a number of "
                          f"{len(str(abs(value)))} digits.")
    return value


def plain(value: Any, where: str, depth: int = 0) -> Any:
    """Check free-form data (``Any`` settings): finite numbers, bounded text, lists and nesting."""
    if depth > 32:
        raise ConfigError(f"'{where}' nests deeper than 32 levels.")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ConfigError(f"'{where}' is {len(value):,} characters long; at most {MAX_TEXT:,}.")
    if isinstance(value, (list, tuple, Mapping)) and len(value) > MAX_ITEMS:
        raise ConfigError(f"'{where}' holds {len(value):,} entries; at most {MAX_ITEMS:,}.")
    if isinstance(value, Mapping):
        for k, v in value.items():
            plain(k, where, depth + 1)
            plain(v, f"{where}.{shown(k, 40)}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            plain(v, f"{where}[{i}]", depth + 1)
    return _number(value, where)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint``; convert lists to tuples and ints to floats."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return plain(value, where)
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
        raise ConfigError(f"'{where}' must be one of {choices}, got {shown(repr(value), 80)}."
                          f"{closest(shown(value, 80), map(str, args))}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{where}' must be a list, got {_kind(value)}.")
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"'{where}' lists {len(value):,} values; at most {MAX_ITEMS:,}.")
        item = args[0] if args else Any
        return tuple(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping, got {_kind(value)}.")
        if len(value) > MAX_ITEMS:
            raise ConfigError(f"'{where}' holds {len(value):,} entries; at most {MAX_ITEMS:,}.")
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
            return _number(value, where)
        raise ConfigError(f"'{where}' must be a whole number, got {_kind(value)}.")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(_number(value, where))
        raise ConfigError(f"'{where}' must be a number, got {_kind(value)}.")
    if hint is str:
        if isinstance(value, str):
            return plain(value, where)
        raise ConfigError(f"'{where}' must be text, got {_kind(value)}.")
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise ConfigError(f"'{where}' has an unsupported value {_kind(value)}.")


def check(condition: bool, message: str) -> None:
    """Raise a ConfigError with ``message`` unless ``condition`` holds (for ``__post_init__``)."""
    if not condition:
        raise ConfigError(message)
