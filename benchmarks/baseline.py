"""fp32 reference numbers: each reference model in torch eager against its fp32 ONNX Runtime artifact.

    python benchmarks/baseline.py [--json rows.json] [--quick]

Rows: candidate ``onnxruntime-fp32`` measured against torch eager (latency ratio < 1 means ONNX Runtime
is faster than eager PyTorch on this machine).
"""
from __future__ import annotations

from pathlib import Path

from common import bench_config, emit, latency_ratios, onnx_session, parser, row, score_session, tempdir

from modelpress.evaluate import evaluate, torch_predict
from modelpress.runtime.torch import from_module
from modelpress.task import load_task

TASKS = ("digits", "digits:transformer", "fashion-mnist:lenet-300-100", "fashion-mnist:lenet5")


def main() -> None:
    args = parser(__doc__).parse_args()
    rows = []
    for name in TASKS:
        task = load_task(name)
        model = task.build_model()
        eager = from_module(model, task.input_names, threads=2)
        fp32 = evaluate(torch_predict(model, task), task, task.test_data)
        with tempdir() as tmp:
            session, size = onnx_session(model, task, Path(tmp))
            rows.append(row(name, "onnxruntime-fp32 vs torch eager", score_session(session, task), fp32, size, size,
                            latency_ratios(session, eager, task, bench_config(args)),
                            params=sum(p.numel() for p in model.parameters())))
    emit(rows, args, "fp32: ONNX Runtime against torch eager", ("params",))


if __name__ == "__main__":
    main()
