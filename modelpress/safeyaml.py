"""Bounded YAML reading for recipes and run folders.

A YAML file is read only if it is a regular file of at most :data:`MAX_BYTES`, decodes as UTF-8, nests at
most :data:`MAX_DEPTH` levels and holds at most :data:`MAX_NODES` values once its aliases (``*name``,
``<<: *name``) are expanded, so a small file cannot expand into gigabytes (the "billion laughs"). Only
plain data comes back: tags that build Python objects are refused by PyYAML's safe loader. Every failure
is a :class:`ConfigError` naming the limit.

>>> loads("task: digits\\nbench: {batch_sizes: [1, 32]}", "recipe")
{'task': 'digits', 'bench': {'batch_sizes': [1, 32]}}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, ModelFileError, shown

MAX_BYTES = 256 << 10  # the example recipes are under 3 KB
MAX_DEPTH = 32  # nesting levels, aliases followed
MAX_NODES = 20_000  # values (scalars, lists, mappings), aliases expanded


class _Limit(Exception):
    """A limit was hit while composing; carries the message."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, counting nesting depth and composed nodes while it builds the node graph."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Limit(f"it holds more than {MAX_NODES:,} values")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limit(f"it nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded(node: Any, depth: int, memo: dict[int, tuple[int, int]], open_: set[int]) -> tuple[int, int]:
    """(values, height) of ``node`` with every alias expanded; refuses cycles, depth and size over the limits."""
    key = id(node)
    if key in open_:
        raise _Limit("an alias refers to the value that contains it")
    if key not in memo:
        open_.add(key)
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        size, height = 1, 0
        for child in children:
            s, h = _expanded(child, depth + 1, memo, open_)
            size, height = size + s, max(height, h + 1)
            if size > MAX_NODES:
                raise _Limit(f"its aliases expand to more than {MAX_NODES:,} values")
        open_.discard(key)
        memo[key] = (size, height)
    size, height = memo[key]
    if depth + height > MAX_DEPTH:
        raise _Limit(f"its aliases expand deeper than {MAX_DEPTH} levels")
    return size, height


def loads(text: str | bytes, where: str) -> Any:
    """Parse one YAML document within the limits; ``where`` names it in errors."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{where} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}). "
                              f"Save it as UTF-8.") from None
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where} is longer than {MAX_BYTES // 1024} KiB; a recipe is a few lines of settings.")
    loader = None
    try:
        loader = _BoundedLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded(node, 0, {}, set())
        return loader.construct_document(node)
    except _Limit as e:
        raise ConfigError(f"{where} is refused: {e}. Write the settings out plainly (a recipe needs few values "
                          f"and little nesting).") from None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{where} is not valid YAML: {shown(first, 200)}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. an integer of 5,000 digits
        raise ConfigError(f"{where} holds a value YAML cannot read ({shown(e, 200)}).") from None
    finally:
        if loader is not None:
            loader.dispose()


def load_file(path: str | Path) -> Any:
    """The YAML document in ``path`` (a regular file, read at most :data:`MAX_BYTES` + 1 bytes)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"Recipe file {shown(path)} does not exist.")
    if not path.is_file():
        raise ModelFileError(f"{shown(path)} is not a regular file; give a recipe .yaml file.")
    with open(path, "rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{shown(path)} is larger than {MAX_BYTES // 1024} KiB; a recipe is a few lines of "
                          f"settings. Check that this is the recipe you meant.")
    return loads(data, shown(path))
