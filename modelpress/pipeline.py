"""``run(recipe, out)``: compress, export, load on the runtime, evaluate, benchmark, write one folder.

The output folder is built under a temporary name next to ``out`` and renamed when complete, so an
interrupted run never leaves a half-written result (``outdir``: staging, locking, publishing).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import registry
from .artifact import Artifact, atomic_write_text
from .bench import compare, peak_memory, throughput_per_s
from .energy import EnergyMeter
from .compress import Applied
from .constraints import MIN_FIDELITY
from .errors import ModelpressError
from .evaluate import compare as compare_outputs
from .evaluate import evaluate, predict_fn, torch_predict
from .export import fp32_config
from .isolate import probe
from .outdir import discard, prepare_output, publish, recover
from .progress import log
from .recipe import Recipe
from .result import FASTER, SCHEMA, SLOWER, Result, verdict
from .runtime import open_session
from .task import Task, load_task



def check_finite(model: Any) -> None:
    """Refuse a model whose weights hold NaN or Inf, naming the tensor."""
    import torch

    for name, tensor in list(model.state_dict().items()):
        if torch.is_floating_point(tensor) and not torch.isfinite(tensor).all():
            raise ModelpressError(f"The model's weight '{name}' contains NaN or Inf values; fix or retrain the model.")


def export_model(model: Any, task: Task, recipe: Recipe, folder: Path, fp32: bool = False) -> Artifact:
    """Export with the recipe's exporter (applying the techniques' ONNX rewrites), then encode with the
    storage codec a technique asked for. ``model``: an ``Applied`` or a plain model. ``fp32``: the baseline
    export, with the exporter's own int8 option (OpenVINO, LiteRT) turned off."""
    applied = Applied.of(model)
    exporter = registry.module("export format", recipe.export.format)
    config = recipe.export.exporter_config()
    if fp32:
        config = fp32_config(config)
    rewrites = applied.onnx_rewrites
    if rewrites and not getattr(exporter, "LOWERS_ONNX_REWRITES", False):
        lowering = [f for f in registry.EXPORTERS if getattr(registry.module("export format", f), "LOWERS_ONNX_REWRITES", False)]
        raise ModelpressError(
            f"A step of this recipe (e.g. quantize in an int8 mode) produces an ONNX graph rewrite that the "
            f"'{recipe.export.format}' exporter cannot express: it would export a float graph with rounded weights. "
            f"Export with format {' or '.join(repr(f) for f in lowering)}, or use the exporter's own int8 option "
            f"where it has one (export options int8: true) instead of the step.")
    art = exporter.export(applied.model, task, folder, config, **({"rewrites": rewrites} if rewrites else {}),
                          recipe={"task": recipe.task, "steps": [s.to_yaml() for s in recipe.steps]})
    if applied.storage is not None:
        codec = registry.module("storage encoding", applied.storage.encoding)
        art = codec.encode(art, applied.model, dict(applied.storage.options))
    return art


def compress(model: Any, task: Task, recipe: Recipe) -> Applied:
    """Apply the recipe's steps in order to a copy of ``model`` (an ``Applied`` or a plain model)."""
    from .layer_timing import tools_for

    applied, tools = copy.deepcopy(Applied.of(model)), tools_for(recipe)
    for step in recipe.steps:
        log.info(f"applying {step.name}")
        applied = registry.module("technique", step.name).apply(applied, step.config, task, tools)
    return applied


@dataclasses.dataclass(frozen=True)
class Scores:
    """A model's metric on the task's validation (decisions) and test (reports) data."""

    val: float
    test: float

    @classmethod
    def of(cls, predict: Any, task: Task) -> Scores:
        return cls(val=evaluate(predict, task, task.val_data), test=evaluate(predict, task, task.test_data))


class BaselineCache:
    """What a study measures every candidate against, made once instead of once per candidate: the fp32
    model's export for each export setting (kept under ``folder``, which the caller owns) and its outputs on
    inputs it has already been run on (the fidelity comparison reads the same test batches every time)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._artifacts: dict[str, Artifact] = {}
        self._outputs: dict[tuple[int, str], Any] = {}

    def artifact(self, baseline: Any, task: Task, recipe: Recipe) -> Artifact:
        """The fp32 export of ``baseline`` with the recipe's export settings (exported on first use)."""
        import hashlib

        key = hashlib.sha256(f"{id(baseline)} {task.name} {recipe.export!r}".encode()).hexdigest()[:16]
        if key not in self._artifacts or not self._artifacts[key].path.exists():  # (a search may clear the folder)
            self._artifacts[key] = export_model(baseline, task, recipe, self.folder / key, fp32=True)
        return self._artifacts[key]

    def predict(self, baseline: Any, task: Task) -> Any:
        """``torch_predict(baseline, task)``, answering inputs it has seen from memory."""
        import hashlib

        inner = torch_predict(baseline, task)

        def cached(inputs: Any) -> Any:
            digest = hashlib.sha256()
            for name in sorted(inputs):
                value = inputs[name]
                digest.update(f"{name}{value.dtype}{value.shape}".encode())
                digest.update(value.tobytes())
            key = (id(baseline), digest.hexdigest())
            if key not in self._outputs:
                self._outputs[key] = inner(inputs)
            return self._outputs[key]

        return cached


def op_precisions(art: Artifact, applied: Applied, recipe: Recipe) -> dict[str, Any]:
    """What the runtime reads off the artifact about the ops it runs in int8 (runtimes that can tell), and
    the layers the graph put on int8 that the runtime runs in float anyway."""
    read = getattr(registry.module("runtime", recipe.runtime.backend), "op_precisions", None)
    if read is None:
        return {}
    modules = {n for n, _ in applied.model.named_modules()}
    return read(art, recipe.runtime, modules)


def runtime_fallbacks(facts: dict[str, Any]) -> dict[str, str]:
    """Layers a rewrite put on int8 (``int8_layers``) that the runtime did not run on an int8 kernel."""
    planned, ops = facts.get("int8_layers") or {}, facts.get("int8_ops")
    if not planned or ops is None:
        return {}
    on_int8 = {op.split(": ")[0] for op in ops}
    return {m: f"no int8 kernel for this {op} on the runtime after its fusions; it runs in float"
            for m, op in planned.items() if m not in on_int8}


def measure(applied: Applied, baseline: Any, task: Task, recipe: Recipe, folder: Path, baseline_scores: Scores,
            cache: BaselineCache | None = None) -> Result:
    """Export ``applied`` into ``folder`` and measure it against the exported fp32 ``baseline`` on the runtime.
    ``cache``: the baseline's export and outputs from earlier measurements of the same study (a search)."""
    log.info("exporting")
    art = export_model(applied, task, recipe, folder / "artifact")
    with tempfile.TemporaryDirectory(dir=folder, prefix=".baseline-") as tmp:  # inside the staging folder
        base_art = cache.artifact(baseline, task, recipe) if cache else \
            export_model(baseline, task, recipe, Path(tmp), fp32=True)
        log.info(f"loading on {recipe.runtime.backend}")
        example = task.example_inputs
        probe(art, recipe.runtime, example(1))
        session, peak_bytes = peak_memory(lambda: open_session(art, recipe.runtime), lambda s: s.run(example(1)))
        base_session = open_session(base_art, recipe.runtime)
        log.info("evaluating")
        predict = predict_fn(session)
        scores = Scores.of(predict, task)
        names, kinds = task.output_names, task.output_kinds
        parity = compare_outputs(torch_predict(applied.model, task), predict, task.test_data, kinds, names)
        reference = cache.predict(baseline, task) if cache else torch_predict(baseline, task)
        fidelity = compare_outputs(reference, predict, task.test_data, kinds, names)
        latency = compare(session.run, base_session.run, example, recipe.bench, log.info)
        # a runtime that always runs on one device (CUDA, TensorRT) says so; its energy comes from that meter
        meter = EnergyMeter(getattr(registry.module("runtime", recipe.runtime.backend), "DEVICE", recipe.runtime.device))
        energy = meter.measure(lambda: session.run(example(1)), 200)
        base_size = base_art.size_bytes
    facts = {**applied.facts, **art.manifest.get("facts", {}), **op_precisions(art, applied, recipe)}
    fallbacks = runtime_fallbacks(facts)
    if fallbacks:
        facts["fallback_layers"] = {**facts.get("fallback_layers", {}), **fallbacks}
    result = Result(
        task=task.name, recipe=[s.to_yaml() for s in recipe.steps], export=recipe.export.format,
        runtime=recipe.runtime.backend, device=recipe.runtime.device, threads=recipe.runtime.threads,
        streams=recipe.runtime.streams,
        score=scores.test, baseline_score=baseline_scores.test,
        score_drop=task.score_drop(baseline_scores.test, scores.test),
        val_score=scores.val, baseline_val_score=baseline_scores.val,
        val_score_drop=task.score_drop(baseline_scores.val, scores.val),
        latency_ms={str(bs): v["candidate"] for bs, v in latency.items()},
        baseline_latency_ms={str(bs): v["baseline"] for bs, v in latency.items()},
        latency_ratio={str(bs): v["paired_ratio"] for bs, v in latency.items()},
        latency_ratio_iqr={str(bs): v["paired_iqr"] for bs, v in latency.items()},
        latency_verdict={str(bs): verdict(*v["paired_iqr"]) for bs, v in latency.items()},
        throughput_per_s={str(bs): v for bs, v in throughput_per_s({b: v["candidate"] for b, v in latency.items()}).items()},
        size_bytes=art.size_bytes, baseline_size_bytes=base_size, peak_memory_bytes=peak_bytes,
        parity=parity, fidelity=fidelity, energy_j_per_inference=energy,
        energy_note=None if energy is not None else meter.why, facts=facts,
    )
    violations = [v.describe() for v in recipe.constraints.check(result.quantities("test"))]
    return dataclasses.replace(result, notes=notes(result, [s.name for s in recipe.steps]), violations=violations)


def notes(result: Result, techniques: Sequence[str] = ()) -> list[str]:
    """Plain statements about what the measurements show (for example: smaller but not faster), then what
    the techniques said: their facts named ``*_note``, and the lines of a technique's ``explain(result)``
    (quantize: why int8 came out slower)."""
    out = []
    ratios, verdicts = result.latency_ratio, result.latency_verdict
    if result.size_ratio < 0.9 and all(v != FASTER for v in verdicts.values()):
        out.append(f"The artifact is {1 / result.size_ratio:.1f}x smaller but not faster on "
                   f"{result.runtime} (latency ratio {', '.join(f'batch {b}: {r:.2f}' for b, r in ratios.items())}).")
    for bs, r in ratios.items():
        q1, q3 = result.latency_ratio_iqr[bs]
        if verdicts[bs] == SLOWER:
            out.append(f"At batch {bs} the artifact is slower than the fp32 baseline ({r:.2f}x its latency, "
                       f"interquartile range {q1:.2f}-{q3:.2f}).")
    worst = result.quantities().fidelity
    if worst is not None and worst < MIN_FIDELITY:
        out.append(f"Fidelity collapsed: the artifact's worst output agrees with the fp32 model on only {worst:.3f} "
                   f"(top-1 agreement for class scores where the fp32 model decides, cosine otherwise; per output "
                   f"in 'fidelity'). It does not compute what the model computes: keep sensitive layers in float (quantize mode mixed, or "
                   f"exclude), or recover accuracy (distill) before trusting its speed or size.")
    out += [v for k, v in result.facts.items() if k.endswith("_note") and v]
    for name in dict.fromkeys(techniques):
        explain = getattr(registry.module("technique", name), "explain", None)
        out += explain(result) if explain else []
    return out


def run(recipe: Recipe, out: str | Path, force: bool = False) -> Result:
    """Run a recipe end to end and write ``out/``: recipe.yaml, result.json, report.md, artifact/."""
    from .report.markdown import render

    out = Path(out)
    recover(out)
    if out.exists() and not force:
        raise ModelpressError(f"The output folder {out} already exists. Choose another folder or pass --force to replace it.")
    log.info(f"loading task {recipe.task}")
    task = load_task(recipe.task)
    model = task.build_model()
    check_finite(model)
    stage = prepare_output(out, force)
    try:
        log.info("scoring the fp32 model")
        baseline_scores = Scores.of(torch_predict(model, task), task)
        compressed = compress(model, task, recipe)
        try:
            result = measure(compressed, model, task, recipe, stage, baseline_scores)
        except ModelpressError as e:
            if not (stage / "artifact" / "manifest.json").exists():
                raise
            # The artifact was exported but cannot be measured: keep it with the error, say where.
            failed = {"schema": SCHEMA, "task": task.name, "baseline_score": baseline_scores.test, "score": None,
                      "error": str(e)}
            atomic_write_text(stage / "recipe.yaml", recipe.to_yaml())
            atomic_write_text(stage / "result.json", json.dumps(failed, indent=2))
            publish(stage, out)
            raise ModelpressError(f"{e} The exported artifact and a result.json with this error were saved in {out}.") from None
        atomic_write_text(stage / "recipe.yaml", recipe.to_yaml())
        atomic_write_text(stage / "result.json", json.dumps(result.to_json(), indent=2, default=str))
        atomic_write_text(stage / "report.md", render(result))
        publish(stage, out)
    finally:
        discard(stage)  # a failed run's staging folder; releases the output's lock
    return result
