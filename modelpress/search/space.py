"""The recipe's ``search`` block (strictly validated) and the search space over recipes it describes.

Search values appear only under ``search.space``; everywhere else a list is a plain setting. In the
space every searched setting is an explicit list of values to try (``[0.5]`` fixes one value)::

    search:
      trials: 40
      objectives: [latency, size]           # minimised; the first one decides, the next break ties
      space:
        techniques: [prune, quantize]       # default: every registered technique, canonical order
        max_steps: 2                        # at most this many techniques in one pipeline
        order: fixed                        # 'search' also searches the order of the chosen techniques
        prune: {ratio: [0.3, 0.5]}          # a technique's Config field -> values (default: its SEARCH_SPACE)
        runtime: {backend: [onnxruntime]}   # a RuntimeConfig field -> values; listing backend pins the runtimes
                                            # (default: the recipe's runtime, then every other installed CPU
                                            # runtime, OpenVINO in each precision this CPU has: search/runtimes.py)

Importing this module imports neither optuna nor ray; technique modules are imported only when a
space is validated or resolved.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from ..config import to_dict
from ..errors import ConfigError
from ..searchconfig import SPACE_KEYS, SearchConfig, settings_of, technique_module
from .runtimes import settings as runtime_settings

# Techniques that only train the model they are given (recovery): a pipeline never starts with one,
# except distillation into a smaller student when the space offers one (student: smaller).
RECOVERY = ("distill", "finetune")


@dataclass(frozen=True)
class Candidate:
    """One point of the space: the techniques in order with their settings, the export and the runtime."""

    steps: tuple[tuple[str, dict[str, Any]], ...]
    export: dict[str, Any]
    runtime: dict[str, Any]

    def label(self) -> str:
        precision = self.runtime.get("precision", "fp32")
        where = f" on {self.runtime['backend']}" + ("" if precision == "fp32" else f" ({precision})")
        if not self.steps:
            return "fp32" + where
        parts = [f"{n}({', '.join(f'{k}={v}' for k, v in s.items())})" for n, s in self.steps]
        return " → ".join(parts) + where

    def to_json(self) -> str:
        return json.dumps({"steps": [[n, s] for n, s in self.steps], "export": self.export, "runtime": self.runtime},
                          sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Candidate:
        data = json.loads(text)
        return Candidate(tuple((n, dict(s)) for n, s in data["steps"]), data["export"], data["runtime"])

    def recipe_data(self, recipe: Any) -> dict[str, Any]:
        """The full recipe (no search block) that ``modelpress run`` reproduces this candidate with."""
        return {"task": recipe.task, "steps": [{n: dict(s)} for n, s in self.steps], "export": self.export,
                "runtime": self.runtime, "constraints": to_dict(recipe.constraints), "bench": to_dict(recipe.bench)}


def param(base: str, choices: list[Any]) -> str:
    """An Optuna parameter name that changes with its choices ('prune.ratio|1a2b3c'): a study continued
    with an edited space gives changed settings new names, so the sampler never meets a stored value
    that its new list lacks."""
    import hashlib

    return f"{base}|{hashlib.sha256(json.dumps(choices).encode()).hexdigest()[:6]}"


def _encode(value: Any) -> Any:
    """Optuna's categorical choices must be None, bool, int, float or str: lists become JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else "json:" + json.dumps(value)


def _decode(value: Any) -> Any:
    return json.loads(value[5:]) if isinstance(value, str) and value.startswith("json:") else value


@dataclass(frozen=True)
class Space:
    """The resolved space: techniques in pipeline order, settings to try, runtime settings to try (complete
    RuntimeConfig dicts; the first is the deploy setting, see ``runtimes.settings``)."""

    techniques: tuple[str, ...]
    max_steps: int
    order: str
    settings: dict[str, dict[str, list[Any]]]
    runtimes: tuple[dict[str, Any], ...]
    export: dict[str, dict[str, Any]]  # backend -> export block
    notes: tuple[str, ...] = ()

    def backends(self) -> list[str]:
        """The runtimes of the space, deploy runtime first."""
        return list(dict.fromkeys(r["backend"] for r in self.runtimes))

    def runtime_key(self, runtime: dict[str, Any]) -> str:
        """A runtime setting's name: its backend, then each field the space varies on that backend
        ('openvino precision=bf16'). The study keeps one fp32 reference latency per name."""
        same = [r for r in self.runtimes if r["backend"] == runtime["backend"]]
        fields = list(self.runtimes[0]) if self.runtimes else list(runtime)
        varied = [k for k in fields if k != "backend" and any(r.get(k) != runtime.get(k) for r in same)]
        return " ".join([runtime["backend"], *(f"{k}={runtime[k]}" for k in varied)])

    def _runtime_choices(self) -> list[str]:
        return [self.runtime_key(r) for r in self.runtimes]

    def can_start(self, name: str) -> bool:
        """Whether ``name`` may be a pipeline's first step (recovery steps follow a compressing one)."""
        if name not in RECOVERY:
            return True
        return any(v != "model" for v in self.settings.get(name, {}).get("student", ["model"]))

    def pipelines(self) -> list[str]:
        """Every subset of the techniques of size 1..max_steps in pipeline order, as 'a+b' labels, except
        those that start with a recovery step."""
        out = []
        for k in range(1, min(self.max_steps, len(self.techniques)) + 1):
            out += ["+".join(c) for c in itertools.combinations(self.techniques, k)
                    if self.order == "search" and any(self.can_start(n) for n in c) or self.can_start(c[0])]
        return out

    def orders(self, combo: str) -> list[str]:
        """The orders of a pipeline's techniques the search may try (recovery never first)."""
        names = combo.split("+")
        if self.order != "search":
            return [combo]
        return ["+".join(p) for p in itertools.permutations(names) if self.can_start(p[0])]

    def size(self) -> int:
        """How many distinct candidates the space holds (the fp32 model on each runtime included)."""
        total = 1  # the empty pipeline
        for combo in self.pipelines():
            names = combo.split("+")
            n = len(self.orders(combo))
            for name in names:
                for values in self.settings[name].values():
                    n *= len(values)
            total += n
        return total * len(self.runtimes)

    def sample(self, trial: Any) -> Candidate:
        """Draw a candidate with ``trial.suggest_categorical`` (an Optuna trial or anything alike)."""
        def pick(base: str, values: list[Any]) -> Any:
            choices = [_encode(v) for v in values]
            return _decode(trial.suggest_categorical(param(base, choices), choices)) if len(choices) > 1 else values[0]

        runtime = self.runtimes[self._runtime_choices().index(pick("runtime", self._runtime_choices()))]
        pipelines = self.pipelines()
        if not pipelines:
            return self.candidate([], runtime)
        combo = pick("pipeline", pipelines)
        names = pick(f"order[{combo}]", self.orders(combo)).split("+")
        steps = [(name, {k: pick(f"{name}.{k}", vals) for k, vals in self.settings[name].items()}) for name in names]
        return self.candidate(steps, runtime)

    def candidate(self, steps: list[tuple[str, dict[str, Any]]], runtime: dict[str, Any]) -> Candidate:
        return Candidate(tuple(steps), self.export[runtime["backend"]], runtime)

    def defaults(self) -> list[tuple[dict[str, Any], Candidate]]:
        """Seeds: each technique alone with its default settings (the first value of every list), as
        (Optuna params, candidate) pairs, so the search always measures the single-technique defaults."""
        def first(base: str, values: list[Any], value: Any = None) -> dict[str, Any]:
            choices = [_encode(v) for v in values]
            return {param(base, choices): choices[0] if value is None else value} if len(choices) > 1 else {}

        runtime = self.runtimes[0]
        rparams = first("runtime", self._runtime_choices())
        out = []
        for name in (n for n in self.techniques if self.can_start(n)):
            params = {**rparams, **first("pipeline", self.pipelines(), name)}
            for key, vals in self.settings[name].items():
                params.update(first(f"{name}.{key}", vals))
            out.append((params, self.candidate([(name, {k: v[0] for k, v in self.settings[name].items()})], runtime)))
        return out

    def baseline(self, runtime_key: str | None = None) -> Candidate:
        """The fp32 model on the deploy setting, or on the setting ``runtime_key`` names (``Space.runtime_key``)."""
        keys = self._runtime_choices()
        if runtime_key is not None and runtime_key not in keys:
            raise KeyError(f"the space has no runtime setting '{runtime_key}' (it has {', '.join(keys)})")
        return self.candidate([], self.runtimes[keys.index(runtime_key) if runtime_key else 0])

    def params_of(self, cand: Candidate) -> dict[str, Any] | None:
        """The Optuna params with which ``sample`` draws ``cand``; None when the space cannot draw it."""
        params: dict[str, Any] = {}

        def put(base: str, values: list[Any], value: Any) -> None:
            choices = [_encode(v) for v in values]
            if _encode(value) not in choices:
                raise KeyError(base)
            if len(choices) > 1:
                params[param(base, choices)] = _encode(value)

        names = [n for n, _ in cand.steps]
        try:
            if cand.runtime not in self.runtimes:
                raise KeyError("runtime")
            put("runtime", self._runtime_choices(), self.runtime_key(cand.runtime))
            combo = "+".join(sorted(names, key=self.techniques.index))
            put("pipeline", self.pipelines(), combo)
            put(f"order[{combo}]", self.orders(combo), "+".join(names))
            for name, settings in cand.steps:
                for key, vals in self.settings[name].items():
                    put(f"{name}.{key}", vals, settings[key])
        except (KeyError, ValueError):
            return None
        return params

    def extensions(self, cand: Candidate) -> list[tuple[dict[str, Any], Candidate]]:
        """``cand`` with one more technique at its default settings (the first value of each list), where
        the space allows it, as (Optuna params, candidate) pairs: next to a good pipeline, a longer one
        that keeps it (say, pruning that made the model fast, then clustering that makes it small) is
        worth measuring before the sampler happens upon it."""
        names = [n for n, _ in cand.steps]
        if not names or len(names) >= self.max_steps:
            return []
        out = []
        for name in (t for t in self.techniques if t not in names):
            steps = [*cand.steps, (name, {k: v[0] for k, v in self.settings[name].items()})]
            if self.order != "search":
                steps.sort(key=lambda step: self.techniques.index(step[0]))
            ext = self.candidate(steps, cand.runtime)
            params = self.params_of(ext)
            if params is not None:
                out.append((params, ext))
        return out


def resolve(config: SearchConfig, recipe: Any) -> Space:
    """The space for ``recipe``: the techniques' own SEARCH_SPACE, narrowed or widened by ``search.space``."""
    from .. import registry

    raw, notes = config.space, []
    if "techniques" in raw:
        names = list(raw["techniques"])
    else:
        names = []
        for name in registry.TECHNIQUES:
            try:
                technique_module(name)
            except Exception as e:  # a technique that cannot load is left out, and the report says so
                notes.append(f"technique '{name}' left out of the search: it cannot be imported ({e}).")
                continue
            names.append(name)
        names = registry.in_order(names)
    settings = {}
    for name in names:
        own = getattr(technique_module(name), "SEARCH_SPACE", None) or {}
        try:
            base = settings_of(name, {k: list(v) for k, v in own.items()}, f"{name}.SEARCH_SPACE")
        except ConfigError as e:
            raise ConfigError(f"The technique '{name}' declares an invalid SEARCH_SPACE: {e}") from None
        settings[name] = {**base, **raw.get(name, {})}
    for name in raw:
        if name not in (*SPACE_KEYS, *names):
            raise ConfigError(f"'search.space.{name}' sets values for '{name}', which is not in "
                              f"'search.space.techniques' ({', '.join(names) or 'empty'}). Add it there or remove the entry.")
    runtimes, runtime_notes = runtime_settings(raw.get("runtime", {}), recipe)
    export = {b: _export_for(b, recipe) for b in dict.fromkeys(r["backend"] for r in runtimes)}
    return Space(tuple(names), raw.get("max_steps", 2), raw.get("order", "fixed"), settings, tuple(runtimes), export,
                 tuple(notes + runtime_notes))


def _export_for(backend: str, recipe: Any) -> dict[str, Any]:
    """The recipe's export block when the runtime runs that format, else the runtime's first format, compiled
    for the benched batch sizes where the format fixes them (LiteRT, ExecuTorch: other sizes are split)."""
    import dataclasses

    from .. import registry

    formats = registry.module("runtime", backend).FORMATS
    if recipe.export.format in formats:
        return to_dict(recipe.export)
    fmt = next((f for f in formats if f in registry.EXPORTERS), None)
    if fmt is None:
        raise ConfigError(f"No exporter produces a format the {backend} runtime runs ({', '.join(formats)}).")
    fields = {f.name for f in dataclasses.fields(registry.module("export format", fmt).Config)}
    return {"format": fmt, "options": {"batch_sizes": list(recipe.bench.batch_sizes)} if "batch_sizes" in fields else {}}
