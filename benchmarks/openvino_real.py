"""OpenVINO int8 variants on the real reference models, through modelpress's pipeline, side by side.

    python benchmarks/openvino_real.py [--json rows.json] [--quick] [--models minilm,mobilenet-v2]

For each model (``minilm``: all-MiniLM-L6-v2 sentence embeddings at batch 16; ``mobilenet-v2`` at batch 8)
each variant is one recipe with the ``openvino`` export and runtime (2 threads), measured by
``pipeline.measure`` as ``modelpress run`` measures it:

- ``int8 auto``: ``int8: true`` (NNCF quantize, ``model_type: auto``);
- ``int8 weights``: ``int8: weights`` (``nncf.compress_weights`` INT8_ASYM, activations float);
- ``int8 default (old)``: ``int8: true, model_type: default`` (what ``int8: true`` did before; with
  ``on_collapse: keep`` so a collapsed IR is still measured).

Columns: ``cosine``, ``nn_agreement`` (MiniLM) / ``agreement`` (top-1, CNN) of the artifact to the fp32
torch model on the test split (the result's ``fidelity``); ``vs_ov_fp32`` is the result's paired latency
ratio to the fp32 IR on OpenVINO (f32); ``vs_ort_fp32`` times every variant, the fp32 IR and the fp32
ONNX model on ONNX Runtime interleaved in one loop afterwards and divides by ONNX Runtime's latency; that loop's
ratio to the fp32 IR (``vs_ov_fp32_same_loop``) is the re-timing of ``vs_ov_fp32`` (``recheck_ok``: within ±15%);
``model_type`` and ``check`` are the exporter's fact ``openvino_int8`` (its choice and the worst
validation fidelity it checked). Numbers are indicative on a shared machine.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import BENCH, RECHECK_TOLERANCE, parser

from modelpress.artifact import load
from modelpress.bench import BenchConfig, interleaved
from modelpress.evaluate import torch_predict
from modelpress.pipeline import Scores, compress, export_model, measure
from modelpress.recipe import parse_recipe
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.task import load_task

BATCH = {"minilm": 16, "mobilenet-v2": 8}
VARIANTS = [
    ("int8 auto", {"int8": True}),
    ("int8 weights", {"int8": "weights"}),
    ("int8 default (old)", {"int8": True, "model_type": "default", "on_collapse": "keep"}),
]


def recipe(task: str, options: dict[str, Any], bench: BenchConfig) -> Any:
    return parse_recipe({"task": task, "steps": [], "export": {"format": "openvino", "options": options},
                         "runtime": {"backend": "openvino", "threads": 2, "precision": "int8"},
                         "bench": {"batch_sizes": list(bench.batch_sizes), "warmup": bench.warmup,
                                   "rounds": bench.rounds, "runs_per_round": bench.runs_per_round,
                                   "max_rounds": bench.rounds, "min_seconds": bench.min_seconds},
                         "constraints": {"min_fidelity": None}})


def paired(times: dict[str, list[list[float]]], name: str, base: str) -> float:
    return float(np.median([np.median(a) / np.median(b) for a, b in zip(times[name], times[base])]))


def run_model(name: str, quick: bool, work: Path) -> list[dict[str, Any]]:
    batch = BATCH[name]
    bench = BenchConfig(batch_sizes=(batch,), warmup=2 if quick else 3, rounds=4 if quick else 10,
                        runs_per_round=3 if quick else 5, min_seconds=0.0 if quick else BENCH.min_seconds)
    t0 = time.time()
    task = load_task(name)
    model = task.build_model()
    baseline_scores = Scores.of(torch_predict(model, task), task)
    print(f"{name}: task and fp32 scores in {time.time() - t0:.0f} s", flush=True)
    rows, artifacts = [], {}
    for label, options in VARIANTS:
        t0 = time.time()
        r = recipe(name, options, bench)
        folder = work / f"{name}-{label.split()[1]}"
        folder.mkdir(parents=True)
        try:
            result = measure(compress(model, task, r), model, task, r, folder, baseline_scores)
        except Exception as e:  # a variant that fails is a row with its error
            rows.append({"model": name, "candidate": label, "options": options, "error": str(e)})
            print(f"  {label}: {e}", flush=True)
            continue
        artifacts[label] = load(folder / "artifact")
        fid = next(iter(result.fidelity.values()))
        fact = result.facts.get("openvino_int8", {})
        rows.append({"model": name, "candidate": label, "options": options, "batch": batch,
                     "cosine": round(fid["cosine"], 4), "nn_agreement": fid.get("nn_agreement"),
                     "agreement": fid.get("agreement"), "score": round(result.score, 4),
                     "vs_ov_fp32": round(result.latency_ratio[str(batch)], 3),
                     "vs_ov_fp32_iqr": [round(v, 3) for v in result.latency_ratio_iqr[str(batch)]],
                     "size_ratio": round(result.size_bytes / result.baseline_size_bytes, 3),
                     "model_type": fact.get("model_type"), "why": fact.get("why"),
                     "check": (fact.get("fidelity_check") or {}).get("worst"), "retried": fact.get("retried"),
                     "note": result.facts.get("openvino_int8_note"), "seconds": round(time.time() - t0)})
        print(f"  {label}: {json.dumps(rows[-1])}", flush=True)
    # every variant, the fp32 IR and fp32 ONNX Runtime, timed interleaved in one loop
    ov = RuntimeConfig(backend="openvino", threads=2, precision="int8")
    fp32_recipe = recipe(name, {}, bench)
    sessions = {label: open_session(a, ov) for label, a in artifacts.items()}
    sessions["openvino fp32"] = open_session(export_model(model, task, fp32_recipe, work / f"{name}-ovfp32"),
                                             RuntimeConfig(backend="openvino", threads=2))
    onnx_recipe = parse_recipe({"task": name, "export": {"format": "onnx"}, "runtime": {"backend": "onnxruntime"}})
    sessions["onnxruntime fp32"] = open_session(export_model(model, task, onnx_recipe, work / f"{name}-ort"),
                                                RuntimeConfig(backend="onnxruntime", threads=2))
    times = interleaved({k: s.run for k, s in sessions.items()}, task.example_inputs(batch), bench)
    for row in rows:
        if row["candidate"] in sessions:
            row["vs_ort_fp32"] = round(paired(times, row["candidate"], "onnxruntime fp32"), 3)
            row["vs_ov_fp32_same_loop"] = round(paired(times, row["candidate"], "openvino fp32"), 3)
            row["recheck_ok"] = abs(row["vs_ov_fp32_same_loop"] / row["vs_ov_fp32"] - 1) <= RECHECK_TOLERANCE
    rows.append({"model": name, "candidate": "openvino fp32", "batch": batch,
                 "vs_ort_fp32": round(paired(times, "openvino fp32", "onnxruntime fp32"), 3),
                 "ms": round(float(np.median([np.median(t) for t in times["openvino fp32"]])), 2)})
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="minilm,mobilenet-v2", help="comma-separated: minilm, mobilenet-v2")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="openvino-real-") as tmp:
        for name in args.models.split(","):
            rows += run_model(name, args.quick, Path(tmp))
    cols = ("model", "candidate", "model_type", "cosine", "nn_agreement", "agreement", "check", "vs_ov_fp32",
            "vs_ov_fp32_same_loop", "recheck_ok", "vs_ort_fp32", "size_ratio")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join("-" if r.get(c) is None else f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c])
                         for c in cols) + (f" | error: {r['error'][:200]}" if "error" in r else ""))
    checked = [r for r in rows if "recheck_ok" in r]
    print(f"re-timing: {sum(r['recheck_ok'] for r in checked)} of {len(checked)} variants' ratio to the fp32 IR agrees "
          f"within ±{RECHECK_TOLERANCE:.0%} with its second timing (vs_ov_fp32_same_loop)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
