"""Recipes: task, ordered compression steps, export, runtime, constraints (YAML, strictly validated).

>>> r = parse_recipe({"task": "digits", "export": {"format": "onnx"}})
>>> r.runtime.backend
'onnxruntime'
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import registry
from .bench import BenchConfig
from .config import check, coerce, parse, to_dict
from .errors import ConfigError, unknown
from .runtime import RuntimeConfig
from .search.space import SearchConfig


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
class Constraints:
    max_score_drop: float | None = None
    max_latency_ms: float | None = None  # median latency at batch size 1
    max_size_bytes: int | None = None
    max_energy_j: float | None = None  # joules per inference

    def __post_init__(self) -> None:
        for name in ("max_score_drop", "max_latency_ms", "max_size_bytes", "max_energy_j"):
            value = getattr(self, name)
            check(value is None or math.isfinite(value), f"{name} must be a finite number, got {value}: a NaN or "
                  f"infinite limit can never be missed. Remove it to set no limit.")
        drop = self.max_score_drop
        check(drop is None or drop >= 0, f"max_score_drop must be >= 0 (the most score the model may lose), got {drop}: "
              f"a negative limit asks the compressed model to beat the fp32 model, which compression cannot promise.")
        for name in ("max_latency_ms", "max_size_bytes", "max_energy_j"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name} must be positive, got {value}.")

    def violations(self, result: dict[str, Any]) -> list[str]:
        """Each constraint the result misses, with by how much."""
        out = []
        checks = [("max_score_drop", result.get("score_drop")),
                  ("max_latency_ms", (result.get("latency_ms") or {}).get("1", {}).get("p50")),
                  ("max_size_bytes", result.get("size_bytes")), ("max_energy_j", result.get("energy_j_per_inference"))]
        for name, value in checks:
            limit = getattr(self, name)
            if limit is not None and value is not None and value > limit:
                out.append(f"{name[4:]} {value:.4g} exceeds {name} {limit:.4g} by {value - limit:.4g}")
        return out


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
