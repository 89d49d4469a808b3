"""The runtime settings a search tries (``Space.runtimes``): complete RuntimeConfig dicts, the first one the
deploy setting (the recipe's ``runtime``: the fp32 seed, the defaults and every "× fp32" in the report are
on it).

Unless ``search.space.runtime`` lists ``backend`` (the runtimes are then pinned: the listed values crossed,
as written), the deploy runtime comes first and every other registered CPU runtime that is installed here
(its package found without importing it) and has a registered exporter follows, in the registry's order:
the runtime is a search dimension, and a faster runtime counts as a gain. A runtime whose compute
precision the config sets (OpenVINO: ``SEARCH_PRECISIONS``) is tried in its own precision (fp32, or the
recipe's on the deploy runtime) and in each other one this CPU has instructions for, once per precision
hint; ``search.space.runtime.precision`` replaces that list on those runtimes only. Other listed fields
(threads, streams, …) are crossed on every runtime that accepts them; an added runtime that accepts none
of their combinations is left out, the deploy runtime must accept one.

>>> from modelpress.recipe import parse_recipe
>>> r = parse_recipe({"task": "digits", "search": {"space": {"runtime": {"backend": ["onnxruntime"]}}}})
>>> [s["backend"] for s in settings(r.search.space.get("runtime", {}), r)[0]]
['onnxruntime']
"""
from __future__ import annotations

import importlib.util
import itertools
from typing import Any

from ..config import to_dict
from ..errors import ConfigError

# PyTorch eager is where the model comes from, not where it is deployed: a search that offers it would
# spend trials re-measuring the source framework (slower than the deploy runtimes on the CPU at small batches).
# A recipe that deploys on it names it as its runtime (then it comes first) or lists it in search.space.runtime.
NOT_SEARCHED = ("torch",)


def settings(raw: dict[str, list[Any]], recipe: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The runtime settings to try, deploy setting first, and notes on what was left out and why."""
    from .. import registry
    from ..runtime import RuntimeConfig

    deploy = to_dict(recipe.runtime)
    notes: list[str] = []
    if "backend" in raw:  # pinned; the recipe's runtime, when listed, stays the deploy runtime
        out = sorted(_crossed(deploy, raw, notes), key=lambda s: s["backend"] != deploy["backend"])
        if not out:
            raise ConfigError(f"search.space.runtime leaves no valid runtime setting: {' '.join(notes)}")
        return out, notes
    out: list[dict[str, Any]] = []
    for backend in [deploy["backend"], *_others(recipe, notes)]:
        base = deploy if backend == deploy["backend"] else to_dict(
            RuntimeConfig(backend=backend, device=recipe.runtime.device, threads=recipe.runtime.threads))
        fields = dict(raw)
        mod = registry.module("runtime", backend)
        if not hasattr(mod, "SEARCH_PRECISIONS"):
            if fields.pop("precision", None):  # a runtime that computes in the model's own precision
                notes.append(f"search.space.runtime.precision is not searched on {backend}: it runs the model "
                             f"in the model's own precision.")
        elif "precision" not in fields:
            fields["precision"] = [base["precision"]]
            hint = getattr(mod, "HINTS", {})  # precisions with one hint compute alike (OpenVINO: int8 and fp32)
            for p in mod.SEARCH_PRECISIONS:
                why = mod.cannot_compute(p)
                if why:
                    notes.append(f"precision {p} on {backend} left out of the search: {why}.")
                elif all(hint.get(p, p) != hint.get(q, q) for q in fields["precision"]):
                    fields["precision"].append(p)
        found = _crossed(base, fields, notes)
        if not found and backend == deploy["backend"]:
            raise ConfigError(f"search.space.runtime leaves no valid setting of the recipe's runtime "
                              f"{backend}: {' '.join(notes)}")
        out += [s for s in found if s not in out]
    return out, notes


def _crossed(base: dict[str, Any], fields: dict[str, list[Any]], notes: list[str]) -> list[dict[str, Any]]:
    """``base`` with every combination of the listed values, each a valid RuntimeConfig (the others are noted)."""
    from ..runtime import RuntimeConfig

    keys = list(fields)
    out = []
    for values in itertools.product(*(fields[k] for k in keys)):
        setting = {**base, **dict(zip(keys, values))}
        try:
            RuntimeConfig(**setting)
        except ConfigError as e:
            notes.append(f"runtime setting {_label(setting, keys)} left out of the search: {str(e).split('. ')[0]}.")
            continue
        out.append(setting)
    return out


def _label(setting: dict[str, Any], keys: list[str]) -> str:
    return " ".join([str(setting["backend"]), *(f"{k}={setting[k]}" for k in keys if k != "backend")])


def _others(recipe: Any, notes: list[str]) -> list[str]:
    """The registered CPU runtimes besides the deploy one that are installed and have an exporter."""
    from .. import registry

    deploy = recipe.runtime.backend
    if recipe.runtime.device != "cpu" or getattr(registry.module("runtime", deploy), "DEVICE", "cpu") != "cpu":
        notes.append(f"no other runtime is searched: the recipe deploys on {deploy} on a GPU, and the other GPU "
                     f"runtimes are not compared automatically; list them in search.space.runtime.backend.")
        return []
    out = []
    for name in registry.RUNTIMES:
        mod = registry.module("runtime", name)
        if name == deploy or name in NOT_SEARCHED or getattr(mod, "DEVICE", "cpu") != "cpu":
            continue
        if not _installed(mod):
            notes.append(f"runtime '{name}' left out of the search: {mod.why_unavailable()}")
            continue
        exporter = next((registry.module("export format", f) for f in mod.FORMATS if f in registry.EXPORTERS), None)
        if exporter is None or not _installed(exporter):
            notes.append(f"runtime '{name}' left out of the search: no exporter for its format(s) "
                         f"({', '.join(mod.FORMATS)}) is registered and installed here.")
            continue
        out.append(name)
    return out


def _installed(mod: Any) -> bool:
    """Whether the package a runtime or exporter module needs is found here (``PACKAGE``, located without
    importing it: some take seconds to import); a module without ``PACKAGE`` is asked ``available()``."""
    package = getattr(mod, "PACKAGE", None)
    if package is None:
        return bool(getattr(mod, "available", lambda: True)())
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False
