"""Recipes: task, ordered compression steps, export, runtime, constraints (YAML, strictly validated).

>>> r = parse_recipe({"task": "digits", "export": {"format": "onnx"}})
>>> r.runtime.backend
'onnxruntime'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import registry
from .bench import BenchConfig
from .config import coerce, parse, to_dict
from .constraints import Constraints
from .errors import ConfigError, unknown
from .runtime import RuntimeConfig
from .searchconfig import SearchConfig


@dataclass(frozen=True)
class ExportConfig:
    format: str = "onnx"
    options: dict[str, Any] = field(default_factory=dict)  # the exporter's own Config keys

    def __post_init__(self) -> None:
        if self.format not in registry.EXPORTERS:
            raise unknown("export format", self.format, registry.EXPORTERS)
        object.__setattr__(self, "options", to_dict(self.exporter_config()))

    def exporter_config(self) -> Any:
        return parse(registry.module("export format", self.format).Config, self.options, "export.options")


@dataclass(frozen=True)
class Step:
    name: str
    config: Any

    def to_yaml(self) -> dict[str, Any]:
        return {self.name: to_dict(self.config)}


@dataclass(frozen=True)
class Recipe:
    task: str
    steps: tuple[Step, ...] = ()
    export: ExportConfig = field(default_factory=ExportConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    constraints: Constraints = field(default_factory=Constraints)
    bench: BenchConfig = field(default_factory=BenchConfig)
    search: SearchConfig | None = None  # `modelpress auto` only; `modelpress run` ignores it

    def to_yaml(self) -> str:
        data = {"task": self.task, "steps": [s.to_yaml() for s in self.steps], "export": to_dict(self.export),
                "runtime": to_dict(self.runtime), "constraints": to_dict(self.constraints), "bench": to_dict(self.bench)}
        if self.search is not None:
            data["search"] = to_dict(self.search)
        return yaml.safe_dump(data, sort_keys=False)


KEYS = ("task", "steps", "export", "runtime", "constraints", "bench", "search")


def parse_step(item: Any, index: int) -> Step:
    where = f"steps[{index}]"
    if isinstance(item, str):
        item = {item: {}}
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"'{where}' must be one technique name with its settings, e.g. '- prune: {{ratio: 0.5}}'.")
    (name, settings), = item.items()
    if name not in registry.TECHNIQUES:
        raise unknown("technique", str(name), registry.TECHNIQUES)
    config_cls = registry.module("technique", name).Config
    return Step(name, parse(config_cls, settings, f"{where}.{name}"))


def parse_recipe(data: Any) -> Recipe:
    """A Recipe from parsed YAML data; every error names the key and the valid choices."""
    if not isinstance(data, dict):
        raise ConfigError(f"A recipe must be a mapping with the keys {', '.join(KEYS)}; got {type(data).__name__}.")
    plain = {k: v for k, v in data.items() if k != "steps"}
    steps = data.get("steps") or []
    if not isinstance(steps, list):
        raise ConfigError("'steps' must be a list of techniques, e.g. '- quantize: {mode: static}'.")
    recipe = parse(Recipe, plain, "recipe")
    if not isinstance(recipe.task, str) or not recipe.task:
        raise ConfigError("'task' must name a task (see 'modelpress tasks') or 'module:function'.")
    parsed = tuple(parse_step(item, i) for i, item in enumerate(steps))
    return Recipe(**{**{k: getattr(recipe, k) for k in KEYS if k != "steps"}, "steps": parsed})


def load_recipe(path: str | Path) -> Recipe:
    """A Recipe from a YAML file, read within the limits of ``safeyaml`` (size, nesting, aliases, UTF-8)."""
    from .safeyaml import load_file

    return parse_recipe(load_file(path))


__all__ = ["Recipe", "Step", "ExportConfig", "Constraints", "parse_recipe", "load_recipe", "coerce"]
