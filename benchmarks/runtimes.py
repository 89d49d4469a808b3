"""Every installed deployment runtime on the reference models, fp32 and int8, in one table.

    python benchmarks/runtimes.py [--json rows.json] [--quick] [--models lenet5,transformer]

Models: ``fashion-mnist:lenet5`` and ``digits:transformer``. For each, every installed CPU runtime runs an
fp32 artifact and an int8 one: ONNX Runtime (int8 = modelpress ``quantize: {mode: static}``, QDQ; ONNX
Runtime's ``quantize_static`` stands in when that module is missing), OpenVINO (int8 = NNCF
post-training), LiteRT and ExecuTorch (int8 = PT2E static). Eager torch is left out: with its OpenMP
threads interleaved among other runtimes' thread pools on 2 cores it measured 100x slower than alone
(benchmarks/baseline.py compares it with ONNX Runtime on its own). GPU runtimes join when available (benchmarks/gpu.py measures them in depth).

All sessions of a model are timed interleaved in one loop (2 threads each; ONNX Runtime also as 2 streams
of 1 thread, the setting ``quantize.explain`` suggests for int8 convolutions). Columns: ``lat×@B`` is
latency / fp32 ONNX Runtime at batch B (median of per-round ratios); ``vs_fp32_same@32`` is the int8
artifact's latency / the fp32 artifact's on the same runtime at batch 32; ``max_abs_diff`` and
``agreement`` compare with the torch model on test inputs; energy is joules per inference at
batch 32 from RAPL, or empty with the reason in the JSON.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Ratios, bench_config, emit, parser, row, tempdir

from modelpress import registry
from modelpress.bench import interleaved, percentiles
from modelpress.energy import EnergyMeter
from modelpress.evaluate import compare, evaluate, first_output, predict_fn, torch_predict
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.task import load_task

MODELS = {"lenet5": "fashion-mnist:lenet5", "transformer": "digits:transformer"}
# (label, runtime, export format, exporter options, int8 variant of the model for ONNX Runtime)
CANDIDATES = [
    ("onnxruntime-fp32", "onnxruntime", "onnx", {}, False),
    ("onnxruntime-int8", "onnxruntime", "onnx", {}, True),
    ("onnxruntime-fp32, 2 streams", "onnxruntime", "onnx", {}, False),
    ("onnxruntime-int8, 2 streams", "onnxruntime", "onnx", {}, True),
    ("openvino-fp32", "openvino", "openvino", {}, False),
    ("openvino-int8", "openvino", "openvino", {"int8": True}, False),
    ("tflite-fp32", "tflite", "tflite", {}, False),
    ("tflite-int8", "tflite", "tflite", {"int8": True}, False),
    ("executorch-fp32", "executorch", "executorch", {}, False),
    ("executorch-int8", "executorch", "executorch", {"int8": True}, False),
    ("onnxruntime_cuda-fp32", "onnxruntime_cuda", "onnx", {}, False),
    ("tensorrt-fp16", "tensorrt", "onnx", {}, False),
    ("torch_cuda-fp16", "torch_cuda", "torch", {}, False),
]
PRECISION = {"tensorrt-fp16": "fp16", "torch_cuda-fp16": "fp16"}
# ONNX Runtime's int8 convolutions split each small image across intra-op threads and lose to it on 2 cores;
# 2 streams of 1 thread split the batch instead (docs/runtimes.md). Both settings are timed.
STREAMS = {"onnxruntime-fp32, 2 streams": 2, "onnxruntime-int8, 2 streams": 2}


def ort_int8(model: Any, task: Any, folder: Path) -> tuple[Any, str]:
    """int8 QDQ ONNX for ONNX Runtime: modelpress's static quantization, else ORT's quantize_static."""
    from modelpress.export import onnx as onnx_export

    try:
        from modelpress.compress import quantize

        quantized = quantize.apply(model, quantize.Config(mode="static"), task)
        return (onnx_export.export(quantized.model, task, folder, rewrites=quantized.onnx_rewrites),
                "modelpress quantize (static, QDQ)")
    except ImportError:
        pass
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from modelpress import artifact

    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_export.to_onnx(model, task), str(folder / "fp32.onnx"))
    quant_pre_process(str(folder / "fp32.onnx"), str(folder / "pre.onnx"), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(list(task.calib_data))

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(folder / "pre.onnx"), str(folder / "model.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    for name in ("fp32.onnx", "pre.onnx"):
        (folder / name).unlink()
    return artifact.write_for_task(folder, "model.onnx", "onnx", task), "onnxruntime quantize_static (stand-in)"


def build(label: str, backend: str, fmt: str, options: dict, int8_ort: bool, model: Any, task: Any,
          folder: Path) -> tuple[Any, str | None]:
    if int8_ort:
        return ort_int8(model, task, folder)
    exporter = registry.module("export format", fmt)
    return exporter.export(model, task, folder, exporter.Config(**options)), None


def measure_model(name: str, task_name: str, args: Any) -> list[dict[str, Any]]:
    from rich.console import Console

    con = Console(stderr=True)
    task = load_task(task_name)
    model = task.build_model()
    torch_score = evaluate(torch_predict(model, task), task, task.test_data)
    config = bench_config(args)
    sessions, info = {}, {}
    with tempdir() as tmp:
        for label, backend, fmt, options, int8_ort in CANDIDATES:
            runtime = registry.module("runtime", backend)
            if not runtime.available():
                con.print(f"{name}: skip {label}: {runtime.why_unavailable()}", markup=False)
                continue
            con.print(f"{name}: exporting {label}")
            t0 = time.perf_counter()
            try:
                art, method = build(label, backend, fmt, options, int8_ort, model, task, Path(tmp) / label)
                precision = PRECISION.get(label, "int8" if "int8" in label else "fp32")
                session = open_session(art, RuntimeConfig(backend=backend, threads=2, precision=precision,
                                                          streams=STREAMS.get(label, 1)))
            except Exception as e:  # a target that fails is a row with the error, not a crash
                info[label] = {"error": f"{type(e).__name__}: {str(e)[:300]}", "runtime": backend}
                continue
            export_s = time.perf_counter() - t0
            par = first_output(compare(torch_predict(model, task), predict_fn(session), task.test_data,
                                       task.output_kinds, task.output_names))
            info[label] = {"runtime": backend, "size_bytes": art.size_bytes, "export_s": round(export_s, 1),
                           "score": evaluate(predict_fn(session), task, task.test_data), "parity": par,
                           "int8_method": method}
            sessions[label] = session
        con.print(f"{name}: timing {len(sessions)} sessions interleaved")
        runs = {label: s.run for label, s in sessions.items()}
        timing = {bs: interleaved(runs, task.example_inputs(bs), config) for bs in config.batch_sizes}
        ends = sorted({min(config.batch_sizes), max(config.batch_sizes)})  # timed again, separately: the recheck
        again = {bs: interleaved(runs, task.example_inputs(bs), config) for bs in ends}
        meter = EnergyMeter("cpu")
        energy = {label: meter.measure(lambda s=s: s.run(task.example_inputs(32)), 20) for label, s in sessions.items()}
    return rows_for(name, info, timing, energy, meter, torch_score, again)


def paired(t: dict, a: str, b: str) -> float:
    return round(float(np.median([np.median(x) / np.median(y) for x, y in zip(t[a], t[b])])), 4)


def rows_for(name: str, info: dict, timing: dict, energy: dict, meter: Any, torch_score: float,
             again: dict | None = None) -> list[dict]:
    """One row per target; ``again``: the separate re-timing (batch size -> timings), which becomes each latency
    ratio's ``recheck``."""
    base = "onnxruntime-fp32"
    rows = []
    for label, facts in info.items():
        if "error" in facts:
            rows.append({"model": name, "candidate": label, "score": float("nan"), "score_drop": float("nan"),
                         "size_ratio": float("nan"), "latency_ratio": None, **facts})
            continue
        lat = {str(bs): paired(t, label, base) for bs, t in timing.items()} if base in info else None
        if lat is not None and again:
            lat = Ratios(lat)
            lat.recheck = {str(bs): paired(t, label, base) for bs, t in again.items()}
        fp32_same = label.replace("int8", "fp32")
        vs_same = paired(timing[32], label, fp32_same) if "int8" in label and fp32_same in info and 32 in timing else None
        par = facts["parity"]
        e = energy.get(label)
        rows.append(row(name, label, facts["score"], torch_score, facts["size_bytes"], info[base]["size_bytes"], lat,
                        runtime=facts["runtime"], artifact_bytes=facts["size_bytes"],
                        p50_ms={str(bs): round(percentiles([x for r in t[label] for x in r])["p50"], 4)
                                for bs, t in timing.items()},
                        max_abs_diff=float(f"{par['max_abs_diff']:.3g}"), agreement=round(par["agreement"], 4),
                        vs_fp32_same_runtime_32=vs_same,
                        energy_j=None if e is None else e / 32, energy_note=None if e is not None else meter.why,
                        export_s=facts["export_s"], int8_method=facts["int8_method"]))
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    args = p.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += measure_model(name, MODELS[name], args)
    for r in rows:  # flatten for the table
        r["p50_ms@1"] = (r.get("p50_ms") or {}).get("1")
        r["p50_ms@32"] = (r.get("p50_ms") or {}).get("32")
        r["int8/fp32_same@32"] = r.get("vs_fp32_same_runtime_32")
    emit(rows, args, "runtimes: fp32 and int8 on every installed runtime (ratios vs fp32 ONNX Runtime)",
         ("p50_ms@1", "p50_ms@32", "int8/fp32_same@32", "max_abs_diff", "agreement", "artifact_bytes", "energy_j",
          "export_s"))
    methods = {r["int8_method"] for r in rows if r.get("int8_method")}
    print(f"ONNX Runtime int8 made with: {', '.join(sorted(methods)) or '-'}; energy: "
          f"{'RAPL' if EnergyMeter('cpu').available else EnergyMeter('cpu').why}")


if __name__ == "__main__":
    main()
