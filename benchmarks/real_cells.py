"""One cell of the real-model matrix (benchmarks/real.py), run through modelpress's public pipeline.

A cell is one recipe: {task, at most one technique step with its defaults, export format, runtime}. It runs
``modelpress.run`` exactly as a user's recipe does, then reads the ``Result``. Runtimes other than ONNX Runtime
are also timed against the fp32 ONNX model on ONNX Runtime (same process, interleaved), so that every row's
latency ratio is against the same reference.

Outcome of a cell (``status``): ``ok``; ``refused`` (modelpress raised a ``ModelpressError``: a named reason);
``crash`` (any other exception, or the process died); ``timeout`` (set by the driver).

Run as a script, it reads a cell spec (JSON) and writes the row (JSON):
``python benchmarks/real_cells.py SPEC.json ROW.json``.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BIG_BATCH = {"minilm": 16}  # the larger timed batch: 8, or 16 for MiniLM


def big_batch(model: str) -> int:
    return BIG_BATCH.get(model, 8)


def cells(model: str) -> list[dict[str, Any]]:
    """The matrix's cells for one model: fp32 on each runtime, then each technique's defaults on ONNX Runtime,
    then OpenVINO's own int8 export option. ``runtime`` settings (threads...) are filled in by the driver."""
    sizes = {"batch_sizes": [1, big_batch(model)]}  # compiled sizes of the formats that fix them
    ort = ("onnx", {}, "onnxruntime", {})
    int4_packed = {"mode": "weight_only", "bits": 4, "group_size": 32, "compute": "packed"}  # runs on MatMulNBits
    out = [
        ("fp32", [], *ort),
        ("fp32", [], "openvino", {}, "openvino", {"precision": "fp32"}),
        ("fp32", [], "tflite", sizes, "tflite", {}),
        ("fp32", [], "executorch", sizes, "executorch", {}),
        ("quantize dynamic", [{"quantize": {"mode": "dynamic"}}], *ort),
        ("quantize static", [{"quantize": {"mode": "static"}}], *ort),
        ("quantize weight_only int4 g32", [{"quantize": {"mode": "weight_only", "bits": 4, "group_size": 32}}], *ort),
        ("quantize weight_only int4 g32 packed", [{"quantize": int4_packed}], *ort),
        ("quantize weight_only int4 g32 packed", [{"quantize": int4_packed}], "openvino", {}, "openvino",
         {"precision": "fp32"}),
        ("quantize weight_only int4 g32 packed_int8", [{"quantize": {**int4_packed, "compute": "packed_int8"}}], *ort),
        ("prune channel", [{"prune": {"method": "channel"}}], *ort),
        ("lowrank", [{"lowrank": {}}], *ort),
        ("cluster", [{"cluster": {}}], *ort),
        ("distill", [{"distill": {}}], *ort),
        ("openvino int8", [], "openvino", {"int8": True}, "openvino", {"precision": "int8"}),
    ]
    return [{"model": model, "cell": f"{name} / {backend}", "technique": name, "steps": steps,
             "export": {"format": fmt, "options": options}, "runtime": {"backend": backend, **rt}}
            for name, steps, fmt, options, backend, rt in out]


def classify(error: BaseException) -> dict[str, Any]:
    """A ModelpressError is a refusal (its message is the reason); anything else is a crash, with the exception
    type, its first line and where it was raised (the innermost frame in modelpress, and the innermost overall)."""
    from modelpress.errors import ModelpressError

    first = (str(error).strip().splitlines() or [""])[0]
    if isinstance(error, ModelpressError):
        return {"status": "refused", "error_type": type(error).__name__, "error": str(error)}
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/modelpress/" in f.filename]
    where = lambda f: f"{f.filename.split('/site-packages/')[-1].split('/realbench/')[-1]}:{f.lineno} in {f.name}"  # noqa: E731
    return {"status": "crash", "error_type": type(error).__name__, "error": first,
            "where": where(ours[-1]) if ours else None, "raised_at": where(frames[-1]) if frames else None,
            "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__))[-6000:]}


def fidelity(result: Any) -> dict[str, float]:
    """The fp32-fidelity measures of the task's (first) output: top-1 agreement and top-5 overlap for class
    scores, cosine and nearest-neighbour agreement for embeddings (and cosine for every output)."""
    (name, measures), *_ = result.fidelity.items()
    return {k: round(measures[k], 4) for k in ("agreement", "top5_overlap", "cosine", "nn_agreement") if k in measures}


def against_ort(out: Path, task: Any, recipe: Any, spec: dict[str, Any], folder: str = "fp32-onnx") -> dict[str, Any]:
    """The cell's artifact timed against the fp32 ONNX model on ONNX Runtime (interleaved, paired), and its size
    against that ONNX file."""
    from common import onnx_session

    from modelpress.artifact import load
    from modelpress.bench import compare
    from modelpress.runtime import RuntimeConfig, open_session

    session = open_session(load(out / "artifact"), recipe.runtime)
    base, base_size = onnx_session(task.build_model(), task, out / folder, RuntimeConfig(**spec["ort"]))
    res = compare(session.run, base.run, task.example_inputs, recipe.bench)
    return {"latency_ratio": {str(b): r["paired_ratio"] for b, r in res.items()},
            "latency_iqr": {str(b): r["paired_iqr"] for b, r in res.items()},
            "size_ratio": load(out / "artifact").size_bytes / base_size}


def recheck(reported: dict[str, float], out: Path, task: Any, recipe: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """The smallest and largest batch timed again against the fp32 ONNX model, separately from the reported
    ratios: ``latency_recheck`` and whether it agrees with them within ``RECHECK_TOLERANCE`` (``recheck_ok``)."""
    import dataclasses

    from common import RECHECK_TOLERANCE

    ends = tuple(sorted({min(recipe.bench.batch_sizes), max(recipe.bench.batch_sizes)}))
    again = against_ort(out, task, dataclasses.replace(recipe, bench=dataclasses.replace(recipe.bench, batch_sizes=ends)),
                        spec, folder="fp32-onnx-recheck")["latency_ratio"]
    return {"latency_recheck": again,
            "recheck_ok": all(abs(again[b] / reported[b] - 1) <= RECHECK_TOLERANCE for b in again)}


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in this process; never raises (the outcome is in ``status``)."""
    import modelpress
    from modelpress.recipe import parse_recipe

    row: dict[str, Any] = {k: spec.get(k) for k in ("model", "cell", "technique", "timing")}
    row.update(export=spec["export"]["format"], runtime=spec["runtime"]["backend"])
    start = time.perf_counter()
    try:
        recipe = parse_recipe({"task": spec.get("task", spec["model"]), "steps": spec["steps"], "export": spec["export"],
                               "runtime": spec["runtime"], "bench": spec["bench"], "constraints": {}})
        with tempfile.TemporaryDirectory(prefix="modelpress-real-") as tmp:
            out = Path(tmp) / "run"
            result = modelpress.run(recipe, out)
            row.update(status="ok", score=result.score, score_drop=result.score_drop, fidelity=fidelity(result),
                       fidelity_per_output=result.fidelity, latency_ratio=result.latency_ratio,
                       latency_iqr=result.latency_ratio_iqr, latency_verdict=result.latency_verdict,
                       latency_vs="fp32 onnxruntime", size_ratio=result.size_ratio, size_bytes=result.size_bytes,
                       peak_memory_bytes=result.peak_memory_bytes,
                       notes=result.notes, violations=result.violations,
                       flagged=[n.split(":")[0] for n in result.notes if n.startswith("Fidelity collapsed")],
                       facts={k: v for k, v in result.facts.items() if k.endswith(("_note", "skipped", "fallback_layers"))})
            from modelpress.task import load_task

            task = load_task(recipe.task)
            if recipe.runtime.backend != "onnxruntime":
                row.update(latency_vs_same_runtime=result.latency_ratio, size_ratio_same_format=result.size_ratio,
                           **against_ort(out, task, recipe, spec))
            row.update(recheck(row["latency_ratio"], out, task, recipe, spec))
    except Exception as e:  # noqa: BLE001 - the matrix records every outcome; a crash is reported as such
        row.update(classify(e))
    row["wall_s"] = round(time.perf_counter() - start, 1)
    return row


def main(argv: list[str]) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # the stage, in the log
    spec_path, row_path = map(Path, argv)
    row = run_cell(json.loads(spec_path.read_text()))
    row_path.write_text(json.dumps(row, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
