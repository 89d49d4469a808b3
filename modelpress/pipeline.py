"""``run(recipe, out)``: compress, export, load on the runtime, evaluate, benchmark, write one folder.

The output folder is built under a temporary name next to ``out`` and renamed when complete, so an
interrupted run never leaves a half-written result (``outdir``: staging, locking, publishing).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import registry
from .artifact import Artifact, atomic_write_text
from .bench import compare, peak_memory, throughput_per_s
from .energy import EnergyMeter
from .compress import facts, storage
from .errors import ModelpressError
from .isolate import probe
from .outdir import discard, prepare_output, publish, recover
from .evaluate import evaluate, parity, predict_fn, torch_predict
from .recipe import Recipe
from .runtime import open_session
from .task import Task, load_task

Progress = Callable[[str], None]


def check_finite(model: Any) -> None:
    """Refuse a model whose weights hold NaN or Inf, naming the tensor."""
    import torch

    for name, tensor in list(model.state_dict().items()):
        if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
            raise ModelpressError(f"The model's weight '{name}' contains NaN or Inf values; fix or retrain the model.")


def export_model(model: Any, task: Task, recipe: Recipe, folder: Path, fp32: bool = False) -> Artifact:
    """Export with the recipe's exporter, then encode with the storage codec a technique asked for.
    ``fp32``: the baseline export, with the exporter's own int8 option (OpenVINO, LiteRT) turned off."""
    exporter = registry.module("export format", recipe.export.format)
    config = recipe.export.exporter_config()
    if fp32 and getattr(config, "int8", False):
        config = dataclasses.replace(config, int8=False)
    art = exporter.export(model, task, folder, config,
                          recipe={"task": recipe.task, "steps": [s.to_yaml() for s in recipe.steps]})
    wanted = storage(model)
    if wanted:
        options = {k: v for k, v in wanted.items() if k != "encoding"}
        art = registry.module("storage encoding", wanted["encoding"]).encode(art, model, options)
    return art


def compress(model: Any, task: Task, recipe: Recipe, progress: Progress = lambda s: None) -> Any:
    """Apply the recipe's steps in order to a copy of ``model``."""
    model = copy.deepcopy(model)
    for step in recipe.steps:
        progress(f"applying {step.name}")
        model = registry.module("technique", step.name).apply(model, step.config, task)
    return model


def measure(model: Any, baseline: Any, task: Task, recipe: Recipe, folder: Path, baseline_score: float,
            progress: Progress = lambda s: None) -> dict[str, Any]:
    """Export ``model`` into ``folder`` and measure it against the exported ``baseline`` on the runtime."""
    progress("exporting")
    art = export_model(model, task, recipe, folder / "artifact")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".baseline-") as tmp:  # inside the staging folder
        base_art = export_model(baseline, task, recipe, Path(tmp), fp32=True)
        progress(f"loading on {recipe.runtime.backend}")
        example = task.example_inputs
        probe(art, recipe.runtime, example(1))
        session, peak_bytes = peak_memory(lambda: open_session(art, recipe.runtime), lambda s: s.run(example(1)))
        base_session = open_session(base_art, recipe.runtime)
        progress("evaluating")
        score = evaluate(predict_fn(session), task)
        par = parity(torch_predict(model, task), predict_fn(session), task.eval_data)
        latency = compare(session.run, base_session.run, example, recipe.bench, progress)
        # a runtime that always runs on one device (CUDA, TensorRT) says so; its energy comes from that meter
        meter = EnergyMeter(getattr(registry.module("runtime", recipe.runtime.backend), "DEVICE", recipe.runtime.device))
        energy = meter.measure(lambda: session.run(example(1)), 200)
        base_size = base_art.size_bytes
    result: dict[str, Any] = {
        "task": task.name, "recipe": [s.to_yaml() for s in recipe.steps],
        "export": recipe.export.format, "runtime": recipe.runtime.backend, "device": recipe.runtime.device,
        "threads": recipe.runtime.threads, "streams": recipe.runtime.streams,
        "score": score, "baseline_score": baseline_score, "score_drop": task.score_drop(baseline_score, score),
        "latency_ms": {str(bs): v["candidate"] for bs, v in latency.items()},
        "baseline_latency_ms": {str(bs): v["baseline"] for bs, v in latency.items()},
        "latency_ratio": {str(bs): v["paired_ratio"] for bs, v in latency.items()},
        "speedup_measured": {str(bs): 1 / v["paired_ratio"] for bs, v in latency.items()},
        "throughput_per_s": {str(bs): v for bs, v in throughput_per_s({b: v["candidate"] for b, v in latency.items()}).items()},
        "size_bytes": art.size_bytes, "baseline_size_bytes": base_size, "size_ratio": art.size_bytes / base_size,
        "peak_memory_bytes": peak_bytes, "parity": par,
        "energy_j_per_inference": energy, "energy_note": None if energy is not None else meter.why,
        **facts(model),
    }
    result["notes"] = notes(result, [s.name for s in recipe.steps])
    violations = recipe.constraints.violations(result)
    result["constraints_met"] = not violations
    result["violations"] = violations
    result["error"] = None
    return result


def notes(result: dict[str, Any], techniques: Sequence[str] = ()) -> list[str]:
    """Plain statements about what the measurements show (for example: smaller but not faster), then what
    the techniques said: their facts named ``*_note``, and the lines of a technique's ``explain(result)``
    (quantize: why int8 came out slower)."""
    out = []
    ratios = result["latency_ratio"]
    if result["size_ratio"] < 0.9 and all(r >= 0.95 for r in ratios.values()):
        out.append(f"The artifact is {1 / result['size_ratio']:.1f}x smaller but not faster on "
                   f"{result['runtime']} (latency ratio {', '.join(f'batch {b}: {r:.2f}' for b, r in ratios.items())}).")
    for bs, r in ratios.items():
        if r > 1.05:
            out.append(f"At batch {bs} the artifact is slower than the fp32 baseline ({r:.2f}x its latency).")
    out += [v for k, v in result.items() if k.endswith("_note") and k != "energy_note" and v]
    for name in dict.fromkeys(techniques):
        explain = getattr(registry.module("technique", name), "explain", None)
        out += explain(result) if explain else []
    return out


def run(recipe: Recipe, out: str | Path, force: bool = False, progress: Progress = lambda s: None) -> dict[str, Any]:
    """Run a recipe end to end and write ``out/``: recipe.yaml, result.json, report.md, artifact/."""
    from .report.markdown import render

    out = Path(out)
    recover(out)
    if out.exists() and not force:
        raise ModelpressError(f"The output folder {out} already exists. Choose another folder or pass --force to replace it.")
    progress(f"loading task {recipe.task}")
    task = load_task(recipe.task)
    model = task.build_model()
    check_finite(model)
    stage = prepare_output(out, force)
    try:
        progress("scoring the fp32 model")
        baseline_score = evaluate(torch_predict(model, task), task)
        compressed = compress(model, task, recipe, progress)
        try:
            result = measure(compressed, model, task, recipe, stage, baseline_score, progress)
        except ModelpressError as e:
            if not (stage / "artifact" / "manifest.json").exists():
                raise
            # The artifact was exported but cannot be measured: keep it with the error, say where.
            failed = {"task": task.name, "baseline_score": baseline_score, "score": None, "error": str(e)}
            atomic_write_text(stage / "recipe.yaml", recipe.to_yaml())
            atomic_write_text(stage / "result.json", json.dumps(failed, indent=2))
            publish(stage, out)
            raise ModelpressError(f"{e} The exported artifact and a result.json with this error were saved in {out}.") from None
        atomic_write_text(stage / "recipe.yaml", recipe.to_yaml())
        atomic_write_text(stage / "result.json", json.dumps(result, indent=2, default=str))
        atomic_write_text(stage / "report.md", render(result))
        publish(stage, out)
    finally:
        discard(stage)  # a failed run's staging folder; releases the output's lock
    return result
