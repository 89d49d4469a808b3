"""Checks before a search starts: settings that cannot work, constraints that contradict each other or
that no model could meet, an empty space. Each failure is a ConfigError saying what to change.

"No model could meet" is measured, not guessed: a model that does nothing (it returns its input)
is exported and run on each runtime in the space; its file size and per-call latency are floors that
no candidate can go below.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RuntimeUnavailable


def preflight(recipe: Any, config: Any, space: Any, task: Any) -> int:
    """Raise on a search that cannot work; returns the batch size of the latency objective."""
    from .. import registry
    from ..energy import EnergyMeter

    c = recipe.constraints
    batches = recipe.bench.batch_sizes
    batch = config.latency_batch_size or max(batches)
    if batch not in batches:
        raise ConfigError(f"search.latency_batch_size {batch} is not timed: bench.batch_sizes is {list(batches)}. "
                          f"Add {batch} to bench.batch_sizes or pick one of them.")
    if c.max_latency_ms is not None and 1 not in batches:
        raise ConfigError(f"constraints.max_latency_ms is checked at batch size 1, but bench.batch_sizes is "
                          f"{list(batches)}. Add 1 to bench.batch_sizes.")
    if c.max_score_drop is not None and c.max_score_drop < 0:
        raise ConfigError(f"constraints.max_score_drop {c.max_score_drop} asks every compressed model to score "
                          f"higher than the fp32 model by {-c.max_score_drop:g}, which compression cannot promise. "
                          f"Use 0 for 'no drop at all', or a small positive drop such as 0.01.")
    wants_energy = "energy" in config.objectives or c.max_energy_j is not None
    if wants_energy and not EnergyMeter().available:
        what = "the 'energy' objective" if "energy" in config.objectives else "constraints.max_energy_j"
        raise ConfigError(f"{what} needs an energy meter, and none is readable here: {EnergyMeter().why}. "
                          f"Remove it, or run where RAPL or NVML is readable.")
    if space.size() <= 1:
        notes = f" ({' '.join(space.notes)})" if space.notes else ""
        raise ConfigError(
            f"The search space is empty: it holds only the fp32 model on {space.runtimes[0]['backend']}, so there is "
            f"nothing to search (techniques: {list(space.techniques)}, max_steps: {space.max_steps}){notes}. "
            f"List techniques in search.space.techniques, raise search.space.max_steps, or search runtimes in "
            f"search.space.runtime.")
    for backend in space.backends():
        mod = registry.module("runtime", backend)
        if not mod.available():
            raise RuntimeUnavailable(f"The search space runs candidates on '{backend}', which is not usable here: "
                                     f"{mod.why_unavailable()} Or list the runtimes to search in "
                                     f"search.space.runtime.backend.")
    if c.max_latency_ms is not None or c.max_size_bytes is not None:
        _check_floors(recipe, space, task)
    return batch


class _Nothing:
    """Built lazily as an nn.Module: returns its first input, flattened (no weights, no work)."""

    @staticmethod
    def build() -> Any:
        from torch import nn

        class Nothing(nn.Module):
            def forward(self, *inputs: Any) -> Any:
                return inputs[0].flatten(1)

        return Nothing().eval()


def floors(recipe: Any, space: Any, task: Any) -> dict[str, dict[str, float]]:
    """Per runtime: the size in bytes and the fastest per-call latency in ms of a model that does nothing."""
    from ..pipeline import export_model
    from ..recipe import ExportConfig
    from ..runtime import RuntimeConfig, open_session

    out = {}
    model = _Nothing.build()
    for i, backend in enumerate(space.backends()):
        r = dataclasses.replace(recipe, steps=(), export=ExportConfig(**space.export[backend]),
                                runtime=RuntimeConfig(backend=backend, threads=recipe.runtime.threads))
        with tempfile.TemporaryDirectory(prefix="modelpress-floor-") as tmp:
            try:
                art = export_model(model, task, r, Path(tmp))
                session = open_session(art, r.runtime)
            except Exception:
                if i == 0:
                    raise
                continue  # another runtime of the space that cannot run this stand-in: no floor from it
            x = task.example_inputs(1)
            for _ in range(5):
                session.run(x)
            times = []
            for _ in range(30):
                t0 = time.perf_counter()
                session.run(x)
                times.append((time.perf_counter() - t0) * 1e3)
            out[backend] = {"size_bytes": art.size_bytes, "latency_ms": min(times)}
    return out


def _check_floors(recipe: Any, space: Any, task: Any) -> None:
    c = recipe.constraints
    measured = floors(recipe, space, task)
    best_latency = min(measured.items(), key=lambda kv: kv[1]["latency_ms"])
    best_size = min(measured.items(), key=lambda kv: kv[1]["size_bytes"])
    if c.max_latency_ms is not None and c.max_latency_ms < best_latency[1]["latency_ms"]:
        raise ConfigError(
            f"constraints.max_latency_ms {c.max_latency_ms:g} cannot be met: on {best_latency[0]} a model that does "
            f"nothing at all takes {best_latency[1]['latency_ms']:.4f} ms per call at batch 1 here. Raise the limit.")
    if c.max_size_bytes is not None and c.max_size_bytes < best_size[1]["size_bytes"]:
        raise ConfigError(
            f"constraints.max_size_bytes {c.max_size_bytes} cannot be met: an artifact with no weights at all takes "
            f"{best_size[1]['size_bytes']} bytes as {space.export[best_size[0]]['format']}. Raise the limit.")
