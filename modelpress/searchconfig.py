"""The ``search`` block of a recipe (``SearchConfig``), strictly validated: every searched setting in
``search.space`` is a non-empty list of values of the setting's type, each accepted by the owner's own range
checks (a technique's Config, RuntimeConfig). The search itself (``modelpress.search``) reads it; a recipe
holds it without importing the search."""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import check, coerce, parse, to_dict
from .errors import ConfigError, closest

SPACE_KEYS = ("techniques", "max_steps", "order", "runtime")
OBJECTIVES = ("latency", "size", "energy")


def _where(*parts: str) -> str:
    return ".".join(("search.space", *parts))


def _choices(value: Any, hint: Any, where: str, build: Any = None) -> list[Any]:
    """A non-empty list of values of type ``hint``; ``build(v)`` runs the owner's range checks."""
    if not isinstance(value, list):
        raise ConfigError(
            f"'{where}' must be a list of values to try, got {type(value).__name__} {value!r}. "
            f"Write [{value!r}] to fix one value."[:400])
    if not value:
        raise ConfigError(f"'{where}' is an empty list: the search space has nothing to try there. "
                          f"List at least one value, or leave the key out for the defaults.")
    out = []
    for i, v in enumerate(value):
        v = to_dict(coerce(v, hint, f"{where}[{i}]"))
        if build is not None:
            build(v, f"{where}[{i}]")
        if v not in out:
            out.append(v)
    return out


def technique_module(name: str) -> Any:
    from . import registry

    return registry.module("technique", name)


def settings_of(name: str, raw: Any, where: str) -> dict[str, list[Any]]:
    """Validate one technique's searched settings against its Config."""
    return _settings(technique_module(name).Config, raw, where, name, "{ratio: [0.3, 0.5]}")


def _runtime_settings(raw: Any) -> dict[str, list[Any]]:
    from .runtime import RuntimeConfig

    return _settings(RuntimeConfig, raw, _where("runtime"), "runtime", "{backend: [onnxruntime]}")


def _settings(config_cls: type, raw: Any, where: str, owner: str, example: str) -> dict[str, list[Any]]:
    """Each searched setting of ``config_cls``: a known field, a list of values of its type, each passing the
    Config's own range checks."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{where}' must map {owner} settings to lists of values, e.g. {example}.")
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    hints = typing.get_type_hints(config_cls)
    out = {}
    for key, values in raw.items():
        if key not in fields:
            raise ConfigError(f"Unknown setting '{key}' for {owner} in '{where}'.{closest(str(key), fields)} "
                              f"Valid settings: {', '.join(sorted(fields))}.")

        def build(v: Any, at: str, key: str = key) -> None:
            parse(config_cls, {key: v}, where)  # the owner's own range checks, one value at a time

        out[key] = _choices(values, hints[key], f"{where}.{key}", build)
    return out


def validate_space(raw: Any) -> dict[str, Any]:
    """The ``search.space`` mapping, checked and normalised (same shape as the input)."""
    from . import registry

    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'search.space' must be a mapping (techniques, max_steps, order, runtime and one "
                          f"entry per technique), got {type(raw).__name__}.")
    valid = (*SPACE_KEYS, *registry.TECHNIQUES)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in valid:
            raise ConfigError(f"Unknown key '{key}' in 'search.space'.{closest(str(key), valid)} "
                              f"Valid keys: {', '.join(SPACE_KEYS)} and the technique names "
                              f"({', '.join(sorted(registry.TECHNIQUES)) or 'none registered'}).")
        if key == "techniques":
            if not isinstance(value, list):
                raise ConfigError(f"'search.space.techniques' must be a list of technique names, got {value!r}.")
            for name in value:
                if name not in registry.TECHNIQUES:
                    from .errors import unknown
                    raise unknown("technique", str(name), registry.TECHNIQUES)
            check(len(set(value)) == len(value), f"'search.space.techniques' lists a technique twice: {value}.")
            out[key] = list(value)
        elif key == "max_steps":
            value = coerce(value, int, "search.space.max_steps")
            check(value >= 0, f"'search.space.max_steps' must be >= 0, got {value}.")
            out[key] = value
        elif key == "order":
            check(value in ("fixed", "search"), f"'search.space.order' must be 'fixed' or 'search', got {value!r}.")
            out[key] = value
        elif key == "runtime":
            out[key] = _runtime_settings(value)
        else:
            out[key] = settings_of(key, value, _where(key))
    return out


@dataclass(frozen=True)
class SearchConfig:
    """``search`` in a recipe. Every field has a default; ``space`` is checked against the registry."""

    space: dict[str, Any] = field(default_factory=dict)
    objectives: tuple[str, ...] = ("latency", "size")
    trials: int = 30  # finished trials (complete, stopped early or failed) the study ends with
    workers: int = 1  # parallel worker processes on this machine
    timeout_s: float | None = None  # time limit of one invocation: a trial starts only if expected to end within it
    # time limit of one trial (stopped and recorded as 'timeout' past it); None: a quarter of timeout_s when
    # that is set, else no limit. Never past the invocation's own limit.
    trial_timeout_s: float | None = None
    seed: int = 0
    latency_batch_size: int | None = None  # batch size of the latency objective; None: the largest benched
    subset_samples: int = 512  # evaluation samples of the cheap first evaluation
    early_stop_margin: float | None = None  # None: 3 binomial standard errors for [0, 1] metrics
    tie_tolerance: float = 0.03  # objective values within this relative gap count as equal when choosing
    keep_closest: int = 3  # infeasible candidates reported when nothing meets the constraints
    startup_trials: int | None = None  # random trials before the sampler models; None: about a third

    def __post_init__(self) -> None:
        objectives = tuple(self.objectives)
        check(len(objectives) > 0, f"search.objectives needs at least one of {', '.join(OBJECTIVES)}.")
        for o in objectives:
            check(o in OBJECTIVES, f"Unknown objective '{o}'.{closest(o, OBJECTIVES)} "
                                   f"Valid objectives: {', '.join(OBJECTIVES)}.")
        check(len(set(objectives)) == len(objectives), f"search.objectives lists an objective twice: {list(objectives)}.")
        check(self.trials >= 1, f"trials must be at least 1, got {self.trials}.")
        check(self.workers >= 1, f"workers must be at least 1, got {self.workers}.")
        check(self.timeout_s is None or self.timeout_s > 0, f"timeout_s must be positive, got {self.timeout_s}.")
        check(self.trial_timeout_s is None or self.trial_timeout_s > 0,
              f"trial_timeout_s must be positive, got {self.trial_timeout_s}.")
        check(self.latency_batch_size is None or self.latency_batch_size >= 1,
              f"latency_batch_size must be at least 1, got {self.latency_batch_size}.")
        check(self.subset_samples >= 1, f"subset_samples must be at least 1, got {self.subset_samples}.")
        check(self.early_stop_margin is None or self.early_stop_margin >= 0,
              f"early_stop_margin must be >= 0, got {self.early_stop_margin}.")
        check(0 <= self.tie_tolerance < 1, f"tie_tolerance must be in [0, 1), got {self.tie_tolerance}.")
        check(self.keep_closest >= 1, f"keep_closest must be at least 1, got {self.keep_closest}.")
        check(self.startup_trials is None or self.startup_trials >= 1,
              f"startup_trials must be at least 1, got {self.startup_trials}.")
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "space", validate_space(self.space))

    def trial_limit_s(self) -> float | None:
        """One trial's time limit: ``trial_timeout_s``, else a quarter of ``timeout_s``, else none."""
        if self.trial_timeout_s is not None:
            return self.trial_timeout_s
        return self.timeout_s / 4 if self.timeout_s is not None else None
