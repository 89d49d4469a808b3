"""User-facing errors: one paragraph that says what is wrong and how to fix it."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class ModelpressError(Exception):
    """An error caused by the user's input or environment; the CLI prints it without a traceback."""


class ConfigError(ModelpressError, ValueError):
    """A recipe or technique setting is missing, unknown, of the wrong type or out of range."""


class ModelFileError(ModelpressError):
    """A model or artifact file is missing, truncated, corrupted or unsafe to load."""


class RuntimeUnavailable(ModelpressError):
    """An optional runtime is not installed or has no usable device here."""


def closest(name: str, choices: Iterable[str]) -> str:
    """' Did you mean X?' when a close match exists, else ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def unknown(what: str, name: str, choices: Iterable[str]) -> ConfigError:
    choices = sorted(str(c) for c in choices)
    name = shown(name, 80)
    return ConfigError(
        f"Unknown {what} '{name}'.{closest(name, choices)} Valid {what}s: {', '.join(choices)}."
    )


def shown(value: object, limit: int = 120) -> str:
    """A user-given value for a message: one line of printable characters, cut to ``limit``.

    >>> shown("a\\nb" + "x" * 200, 10)
    'a\\\\nbxxxxx…'
    """
    text = str(value)
    head = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return head[:limit - 1] + "…" if len(text) > limit or len(head) > limit else head
