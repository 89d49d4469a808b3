"""How much the score drops when only one layer is compressed, for each layer and each probe.

A probe is int8 or int4 quantization, 30% or 50% structured pruning, or half-rank factorization, applied
to one layer at a time through the registered technique (its ``Config.include`` restricted to that
layer, no fine-tuning), and scored with the task's metric on a subset of the validation data. Where a
technique is not registered, analyze's own minimal probe (``_probes.py``) stands in and the result says
so (``via``). ``drop`` is in metric units, positive = worse, and one sample of the subset is
``1 / samples`` of accuracy: drops below that are noise.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..errors import ConfigError, ModelpressError
from . import _probes

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Probe:
    name: str
    label: str
    technique: str  # registry name of the real technique
    kind: str  # quantize | prune | lowrank (the family, for eligibility and advice)
    own: Callable[[Any], Any]  # analyze's stand-in, applied to one module in place
    own_label: str
    settings: Callable[[Any], dict[str, Any]]  # the real technique's Config fields for this layer
    # Settings that only save time (a skipped report, no training): left out where the Config lacks them.
    optional: tuple[str, ...] = ()


def _lowrank_settings(module: Any) -> dict[str, Any]:
    """Half of the layer's largest rank (a k x k convolution: spatial SVD), factorized even where that does
    not cut MACs (``max_cost_ratio: 1``): the probe measures accuracy, the advice weighs the cost."""
    weight = module.weight
    common = {"rank_by": "param_ratio", "max_cost_ratio": 1.0, "recover_epochs": 0}  # param_ratio: no search
    if weight.dim() == 4 and tuple(weight.shape[2:]) != (1, 1):
        cout, cin, kh, kw = weight.shape
        return {"rank": max(1, min(cin * kh, cout * kw) // 2), "conv_method": "spatial", **common}
    return {"rank": max(1, min(weight.shape[0], weight.shape[1]) // 2), **common}


def _quantize_settings(bits: int) -> Callable[[Any], dict[str, Any]]:
    """int8: static (int8 weights and calibrated activations, run on ONNX Runtime's int8 kernels, as deployed);
    int4: 4-bit weights (weight_only)."""
    if bits == 8:
        return lambda module: {"mode": "static"}
    return lambda module: {"mode": "weight_only", "bits": bits}


def _prune_settings(ratio: float) -> Callable[[Any], dict[str, Any]]:
    """Structured: whole output channels (and what they feed) removed, no fine-tuning."""
    return lambda module: {"method": "channel", "ratio": ratio, "epochs": 0}


PROBES: dict[str, Probe] = {p.name: p for p in (
    Probe("int8", "quantize int8", "quantize", "quantize", lambda m: _probes.fake_quantize(m, 8),
          "analyze probe: per-channel affine fake-quantization of the weights to 8 bits", _quantize_settings(8)),
    Probe("int4", "quantize int4", "quantize", "quantize", lambda m: _probes.fake_quantize(m, 4),
          "analyze probe: per-channel affine fake-quantization of the weights to 4 bits", _quantize_settings(4)),
    Probe("prune30", "prune 30%", "prune", "prune", lambda m: _probes.zero_channels(m, 0.3),
          "analyze probe: 30% of output channels with the lowest L2 norm zeroed", _prune_settings(0.3), ("epochs",)),
    Probe("prune50", "prune 50%", "prune", "prune", lambda m: _probes.zero_channels(m, 0.5),
          "analyze probe: 50% of output channels with the lowest L2 norm zeroed", _prune_settings(0.5), ("epochs",)),
    Probe("lowrank", "factorize half rank", "lowrank", "lowrank", _probes.half_rank,
          "analyze probe: weight replaced by its half-rank SVD reconstruction", _lowrank_settings,
          ("recover_epochs", "rank_by")),
)}


def resolve(probe: Probe) -> tuple[Any | None, str]:
    """(technique module or None, note): the registered technique when it can be restricted to one layer."""
    if probe.technique not in registry.TECHNIQUES:
        return None, f"the '{probe.technique}' technique is not registered: {probe.own_label}"
    mod = registry.module("technique", probe.technique)
    fields = {f.name for f in dataclasses.fields(mod.Config)}
    if "include" not in fields:
        return None, f"'{probe.technique}' has no include setting to restrict it to one layer: {probe.own_label}"
    return mod, f"technique '{probe.technique}' restricted to the layer, no fine-tuning"


def no_val_data(task: Any) -> str | None:
    """Why sensitivity cannot run on this task (None when it can)."""
    data = task.val_data
    if data is None:
        return "the task has no validation data"
    if getattr(data, "targets", 0) is None:
        return "the task's validation data has no labels (targets)"
    try:
        first = next(iter(data), None)
    except Exception as e:  # a user task's data that cannot be read
        return f"the task's validation data cannot be read ({type(e).__name__}: {e})"
    if first is None:
        return "the task's validation data is empty"
    return None


def subset(data: Any, samples: int) -> Any:
    """The first ``samples`` labelled samples (whole batches for data that is not ``Batches``)."""
    if hasattr(data, "take"):
        return data.take(samples)
    out, n = [], 0
    for inputs, target in data:
        out.append((inputs, target))
        n += len(target)
        if n >= samples:
            break
    return out


def _num_samples(data: Any) -> int:
    return data.num_samples if hasattr(data, "num_samples") else sum(len(t) for _, t in data)


def score(model: Any, task: Any, data: Any, runtime: Any = None) -> float:
    """The task's metric on ``data``: in PyTorch, or on the runtime (``RuntimeConfig``, default ONNX Runtime)
    when a technique rewrites the exported ONNX graph (its effect exists only there). ``model``: an
    ``Applied`` or a plain model."""
    import tempfile
    from pathlib import Path

    from ..compress import Applied
    from ..evaluate import evaluate, predict_fn, torch_predict
    from ..export import onnx as onnx_export
    from ..runtime import RuntimeConfig, open_session
    from .profile import quiet

    applied = Applied.of(model)
    if not applied.onnx_rewrites:
        return evaluate(torch_predict(applied.model, task), task, data)
    with tempfile.TemporaryDirectory(prefix="modelpress-sensitivity-") as tmp:
        with quiet():
            art = onnx_export.export(applied.model, task, Path(tmp), rewrites=applied.onnx_rewrites)
        return evaluate(predict_fn(open_session(art, runtime or RuntimeConfig())), task, data)


def _skipped_by_technique(applied: Any, layer: str) -> str | None:
    """A technique that left the layer unchanged says why under a ``*_skipped`` or ``fallback_layers`` fact."""
    for key, value in applied.facts.items():
        if (key.endswith("_skipped") or key == "fallback_layers") and isinstance(value, dict) and layer in value:
            return f"the technique left it unchanged: {value[layer]}"
    return None


def probe_layer(model: Any, task: Any, data: Any, row: dict[str, Any], probe: Probe, technique: Any) -> dict:
    """The score with only ``row``'s layer compressed by ``probe``, or why it was not probed."""
    name = row["module"]
    module = model.get_submodule(name)
    if technique is None:
        why = _probes.eligible(row["kind"], probe.kind, module, row["is_output"])
        if why:
            return {"skipped": why, "via": "probe"}
        candidate = copy.deepcopy(model)
        try:
            probe.own(candidate.get_submodule(name))
        except ValueError as e:
            return {"skipped": str(e), "via": "probe"}
        return _scored(candidate, task, data, "probe")
    from ..config import parse

    fields = {f.name for f in dataclasses.fields(technique.Config)}
    settings = {k: v for k, v in probe.settings(module).items() if k in fields or k not in probe.optional}
    try:
        config = parse(technique.Config, {**settings, "include": [name]}, probe.technique)
    except ConfigError as e:
        return {"skipped": f"its settings do not fit this layer: {e}", "via": probe.technique}
    try:
        candidate = technique.apply(copy.deepcopy(model), config, task)
    except ModelpressError as e:
        return {"skipped": str(e).split(". Eligible layers")[0], "via": probe.technique}
    except Exception as e:  # a technique's bug must not hide the other layers' results
        return {"error": f"{type(e).__name__}: {str(e)[:200]}", "via": probe.technique}
    why = _skipped_by_technique(candidate, name)
    if why:
        return {"skipped": why, "via": probe.technique}
    return _scored(candidate, task, data, probe.technique)


def _scored(candidate: Any, task: Any, data: Any, via: str) -> dict[str, Any]:
    try:
        return {"score": score(candidate, task, data), "via": via}
    except ModelpressError as e:  # e.g. a probe that runs only on ONNX Runtime, for a model that does not export
        return {"error": f"cannot score it: {str(e)[:300]}", "via": via}


def sensitivity(model: Any, task: Any, table: dict[str, Any], probes: tuple[str, ...] = tuple(PROBES),
                samples: int = 2000, max_layers: int = 40, progress: Progress | None = None) -> dict[str, Any]:
    """Per-layer score drops for ``probes`` on the first ``samples`` validation samples.

    Only layers with weights are probed (convolutions and linear layers), at most ``max_layers`` of them
    (those with the most parameters plus MACs). Returns ``{"skipped": reason}`` for a task without
    labelled validation data.
    """
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ConfigError(f"Unknown sensitivity probe(s) {unknown}. Valid probes: {', '.join(PROBES)}.")
    why = no_val_data(task)
    if why:
        return {"skipped": f"Sensitivity skipped: {why}. Give the task labelled val_data to measure how much "
                           f"each layer tolerates quantization, pruning and factorization."}
    started = time.perf_counter()
    data = subset(task.val_data, samples)
    baseline = score(model, task, data)
    rows = [r for r in table["rows"] if r["kind"] in _probes.WEIGHTED_KINDS and "(own ops)" not in r["name"]]
    left_out = []
    if len(rows) > max_layers:
        keep = {r["module"] for r in sorted(rows, key=lambda r: -(r["param_share"] + r["mac_share"]))[:max_layers]}
        left_out = [r["module"] for r in rows if r["module"] not in keep]
        rows = [r for r in rows if r["module"] in keep]
    resolved = {p: resolve(PROBES[p]) for p in probes}
    total, done = len(rows) * len(probes), 0
    layers = []
    for row in rows:
        results = {}
        for p in probes:
            if progress:
                progress(done, total, f"{PROBES[p].label} on {row['module']}")
            res = probe_layer(model, task, data, row, PROBES[p], resolved[p][0])
            if "score" in res:
                res["drop"] = task.score_drop(baseline, res["score"])
            results[p] = res
            done += 1
        layers.append({"layer": row["module"], "type": row["type"], "kind": row["kind"], "params": row["params"],
                       "macs": row["macs"], "results": results})
    if progress:
        progress(total, total, "done")
    n = _num_samples(data)
    return {"baseline_score": baseline, "samples": n, "higher_is_better": task.higher_is_better,
            "resolution": 1.0 / n if n else None, "metric": getattr(task.metric, "__name__", "metric"),
            "probes": {p: {"label": PROBES[p].label, "via": "technique" if resolved[p][0] else "probe",
                           "technique": PROBES[p].technique, "note": resolved[p][1]} for p in probes},
            "layers": layers, "layers_left_out": left_out, "seconds": time.perf_counter() - started}
