"""GPU runtimes: ONNX Runtime CUDA, TensorRT (through ONNX Runtime) and PyTorch CUDA, against fp32 ONNX
Runtime on the CPU, on the reference models.

    python benchmarks/gpu.py [--json rows.json] [--quick]

Rows per model: ``onnxruntime_cuda-fp32``, ``tensorrt-fp32``, ``tensorrt-fp16``, ``torch_cuda-fp32``,
``torch_cuda-fp16``, ``torch_cuda-bf16`` (those whose runtime is available). ``lat×@B``: latency / CPU fp32
ONNX Runtime at batch B, timed interleaved (batch 1, 32 and 256); ``max_abs_diff``/``agreement``
against the torch model; ``energy_j``: joules per inference at batch 256 from NVML (whole board), or
empty with the reason. Without an NVIDIA GPU and the GPU builds it prints why and writes no rows.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from common import bench_config, emit, onnx_session, parser, rechecked, row, tempdir

from modelpress import registry
from modelpress.bench import compare
from modelpress.energy import EnergyMeter
from modelpress.evaluate import compare as compare_outputs
from modelpress.evaluate import evaluate, first_output, predict_fn, torch_predict
from modelpress.runtime import RuntimeConfig, open_session
from modelpress.task import load_task

MODELS = {"lenet5": "fashion-mnist:lenet5", "transformer": "digits:transformer"}
CANDIDATES = [("onnxruntime_cuda", "onnx", "fp32"), ("tensorrt", "onnx", "fp32"), ("tensorrt", "onnx", "fp16"),
              ("torch_cuda", "torch", "fp32"), ("torch_cuda", "torch", "fp16"), ("torch_cuda", "torch", "bf16")]


def main() -> None:
    args = parser(__doc__).parse_args()
    usable = [c for c in CANDIDATES if registry.module("runtime", c[0]).available()]
    if not usable:
        for name in sorted({c[0] for c in CANDIDATES}):
            print(f"skip {name}: {registry.module('runtime', name).why_unavailable()}")
        print("no GPU runtime is available here: nothing to measure")
        emit([], args, "GPU runtimes")
        return
    config = dataclasses.replace(bench_config(args), batch_sizes=(1, 32, 256))
    meter = EnergyMeter("cuda")
    rows = []
    for name, task_name in MODELS.items():
        task = load_task(task_name)
        model = task.build_model()
        fp32 = evaluate(torch_predict(model, task), task, task.test_data)
        with tempdir() as tmp:
            cpu, cpu_size = onnx_session(model, task, Path(tmp) / "cpu")
            artifacts = {fmt: registry.module("export format", fmt).export(model, task, Path(tmp) / fmt)
                         for fmt in {c[1] for c in usable}}
            for backend, fmt, precision in usable:
                label = f"{backend}-{precision}"
                try:
                    session = open_session(artifacts[fmt], RuntimeConfig(backend=backend, device="cuda",
                                                                         precision=precision))
                except Exception as e:
                    print(f"{name}: {label} failed: {type(e).__name__}: {e}")
                    continue
                par = first_output(compare_outputs(torch_predict(model, task), predict_fn(session), task.test_data,
                                                   task.output_kinds, task.output_names))
                latency = compare(session.run, cpu.run, task.example_inputs, config)
                joules = meter.measure(lambda s=session: s.run(task.example_inputs(256)), 20)
                score = evaluate(predict_fn(session), task, task.test_data)
                rows.append(row(name, label, score, fp32, artifacts[fmt].size_bytes,
                                cpu_size, rechecked(latency, session.run, cpu.run, task, config),
                                p50_ms_256=round(latency[256]["candidate"]["p50"], 4),
                                max_abs_diff=float(f"{par['max_abs_diff']:.3g}"), agreement=round(par["agreement"], 4),
                                energy_j=None if joules is None else joules / 256,
                                energy_note=None if joules is not None else meter.why))
    emit(rows, args, "GPU runtimes against fp32 ONNX Runtime on the CPU",
         ("p50_ms_256", "max_abs_diff", "agreement", "energy_j"))


if __name__ == "__main__":
    main()
