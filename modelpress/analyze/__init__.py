"""Analyze and advise: where a model spends its size and time, how sensitive each layer is, and which
techniques, runtime and precision fit it on this machine.

>>> from modelpress.task import load_task  # doctest: +SKIP
>>> from modelpress.analyze import analyze, write
>>> result = analyze(load_task("fashion-mnist:lenet5"))  # doctest: +SKIP
>>> write(result, "runs/analyze-fashion-mnist-lenet5")  # doctest: +SKIP

Parts (each usable alone): ``layers.layer_table`` (parameters, MACs, activation memory per layer),
``profile.profile_onnx`` (op-level time on ONNX Runtime), ``sensitivity.sensitivity`` (score drop per
layer and probe), ``advise.advise`` (recommendations), ``plots.svg_plots`` (self-contained SVG strings,
for the HTML report).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..config import check
from ..errors import ModelpressError

JSON_FILE = "analysis.json"


@dataclass(frozen=True)
class AnalyzeConfig:
    samples: int = 1000  # evaluation samples per sensitivity score
    probes: tuple[str, ...] = ("int8", "int4", "prune30", "prune50", "lowrank")
    tolerance: float = 0.005  # a layer "tolerates" a probe when its score drop is at most this (metric units)
    batch_sizes: tuple[int, ...] = (1, 32)  # profiled batch sizes
    profile_runs: int = 50  # profiled runs at batch 1 (a third of them at larger batches), after warm-up
    threads: int = 2
    max_layers: int = 40  # probe at most this many layers (those with the most parameters plus MACs)
    profile: bool = True
    sensitivity: bool = True

    def __post_init__(self) -> None:
        from .sensitivity import PROBES

        check(self.samples >= 1, f"samples must be at least 1, got {self.samples}.")
        check(all(p in PROBES for p in self.probes),
              f"Unknown probe(s) {[p for p in self.probes if p not in PROBES]}; valid probes: {', '.join(PROBES)}.")
        check(self.tolerance >= 0, f"tolerance must be >= 0 (a score drop in metric units), got {self.tolerance}.")
        check(len(self.batch_sizes) > 0 and all(b >= 1 for b in self.batch_sizes),
              f"batch_sizes must be positive numbers, got {list(self.batch_sizes)}.")
        check(self.profile_runs >= 5, f"profile_runs must be at least 5, got {self.profile_runs}.")
        check(self.threads >= 1, f"threads must be at least 1, got {self.threads}.")
        check(self.max_layers >= 1, f"max_layers must be at least 1, got {self.max_layers}.")


Stage = Callable[[str], None]
Step = Callable[[int, int, str], None]


def hardware() -> dict[str, Any]:
    from ..doctor import cpu_info, gpus

    return {**cpu_info(), "gpus": gpus()}


def analyze(task: Any, model: Any = None, config: AnalyzeConfig = AnalyzeConfig(), stage: Stage | None = None,
            step: Step | None = None) -> dict[str, Any]:
    """Layer table, ONNX Runtime profile, per-layer sensitivity and advice for ``model`` (default: the
    task's model). The model is not modified. Returns a JSON-able dict."""
    from .advise import advise
    from .layers import layer_table
    from .sensitivity import sensitivity

    say = stage or (lambda s: None)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    if model is None:
        say("loading the task's model")
        model = task.build_model()
    model = model.eval()
    say("counting parameters, MACs and activations per layer")
    t0 = time.perf_counter()
    table = layer_table(model, task)
    seconds["layers"] = time.perf_counter() - t0
    profile: dict[str, Any] | None = None
    if config.profile:
        say("profiling on ONNX Runtime")
        t0 = time.perf_counter()
        profile = _profile(model, task, table, config)
        seconds["profile"] = time.perf_counter() - t0
    sens: dict[str, Any] | None = None
    if config.sensitivity:
        say("measuring per-layer sensitivity")
        t0 = time.perf_counter()
        sens = sensitivity(model, task, table, config.probes, config.samples, config.max_layers, step)
        seconds["sensitivity"] = time.perf_counter() - t0
    hw = hardware()
    advice = advise(table, profile, sens, hw, config.tolerance)
    seconds["total"] = time.perf_counter() - started
    return {"task": task.name, "model": type(model).__name__, "hardware": hw, "layers": table,
            "profile": profile if config.profile else {"skipped": "profiling turned off (--no-profile)"},
            "sensitivity": sens if config.sensitivity else {"skipped": "sensitivity turned off (--no-sensitivity)"},
            "advice": advice, "seconds": seconds,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.__dict__.items()}}


def _profile(model: Any, task: Any, table: dict[str, Any], config: AnalyzeConfig) -> dict[str, Any]:
    """The profile, or ``{"error": message}`` naming the layer when the model cannot be exported."""
    from ..runtime import onnxruntime as ort_runtime
    from .profile import export_onnx, profile_onnx

    if not ort_runtime.available():
        return {"error": f"No profile: {ort_runtime.why_unavailable()}"}
    try:
        proto = export_onnx(model, task)
    except ModelpressError as e:
        return {"error": str(e)}
    return profile_onnx(proto, task, table, config.batch_sizes, config.profile_runs, threads=config.threads)


def write(result: dict[str, Any], folder: str | Path) -> list[Path]:
    """Write ``analysis.json`` and the SVG plots into ``folder`` (created if missing); each file atomically.

    Only analyze's own files are written (an earlier analysis in the folder is replaced)."""
    from ..artifact import atomic_write_text
    from .plots import svg_plots

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ModelpressError(f"The output path {folder} exists and is not a folder; choose a folder with -o.")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / JSON_FILE]
    atomic_write_text(paths[0], json.dumps(result, indent=2, default=_json_default))
    for name, svg in svg_plots(result).items():
        path = folder / f"{name}.svg"
        atomic_write_text(path, svg)
        paths.append(path)
    return paths


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def svg_plots(result: dict[str, Any]) -> dict[str, str]:
    """The analysis plots as self-contained SVG strings, by name (for the HTML report)."""
    from .plots import svg_plots as plots

    return plots(result)


class _CallablePackage(ModuleType):
    """``modelpress.analyze`` is both this package and the public ``analyze`` function: calling the package
    calls :func:`analyze`."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return analyze(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
