"""Pre-flight: which operations of a (quantized) ONNX graph run on int8 kernels in ONNX Runtime, which
run in float, and how many quantize/dequantize boundaries sit between them — read from the graph ONNX
Runtime itself builds after its fusions, not guessed from operator names. And, once a benchmark has
measured the latency, a plain explanation when int8 came out slower than fp32.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Container, Mapping
from typing import Any

from .graph import module_name

# Kernels that compute on 8-bit integers (ONNX Runtime CPU, after its QDQ fusions).
INT8_KERNELS = {
    "QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "MatMulInteger",
    "ConvInteger", "QLinearAdd", "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearSoftmax", "QLinearConcat", "QLinearReduceMean", "QAttention", "QLinearWhere",
    "NhwcMaxPool", "DynamicQuantizeLSTM", "MatMulNBits",
}
BOUNDARIES = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# Ops that only move data or compute shapes: they are neither listed as int8 nor as float work.
MOVEMENT = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat", "Identity",
            "ReorderInput", "ReorderOutput", "Cast", "Constant", "Slice", "Expand", "ConstantOfShape", "Range"}
INT8_WHEN_INT8_INPUT = {"MaxPool", "Resize", "Pad", "Split"}


def optimized_graph(proto: Any, threads: int = 2) -> Any:
    """The graph ONNX Runtime runs after its optimizations (the same settings as the runtime module)."""
    import onnx
    import onnxruntime as ort

    from ...runtime.onnxruntime import session_options

    with tempfile.TemporaryDirectory(prefix="modelpress-preflight-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        opts = session_options(threads)
        opts.optimized_model_filepath = path
        ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(path)


def _int8_tensors(graph: Any) -> set[str]:
    import onnx

    int8 = {i.name for i in graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    for node in graph.node:
        op = node.op_type
        if op in ("QuantizeLinear", "DynamicQuantizeLinear") or (op.startswith("QLinear") and op != "QLinearSoftmax") \
                or (op == "QGemm" and len(node.input) > 7) or op == "NhwcMaxPool" \
                or ((op in MOVEMENT or op in INT8_WHEN_INT8_INPUT) and node.input and node.input[0] in int8):
            int8.add(node.output[0])
    return int8


def analyse(proto: Any, modules: Container[str] | None = None) -> dict[str, Any]:
    """``int8_ops`` and ``float_ops`` (``'module: OpType'``, in graph order) and ``quant_boundaries`` (the
    number of QuantizeLinear/DequantizeLinear/DynamicQuantizeLinear nodes left at run time). ``modules``:
    the model's module names, to name nodes that the runtime renamed while fusing."""
    graph = optimized_graph(proto).graph
    int8 = _int8_tensors(graph)
    int8_ops, float_ops, boundaries = [], [], 0
    for node in graph.node:
        label = f"{module_name(node.name, modules) or '(model)'}: {node.op_type}"
        if node.op_type in BOUNDARIES:
            boundaries += 1
        elif node.op_type in INT8_KERNELS or (node.op_type in INT8_WHEN_INT8_INPUT and node.input[0] in int8):
            int8_ops.append(label)
        elif node.op_type not in MOVEMENT:
            float_ops.append(label)
    return {"int8_ops": int8_ops, "float_ops": float_ops, "quant_boundaries": boundaries}


def fallback_layers(planned: Mapping[str, str], int8_ops: list[str]) -> dict[str, str]:
    """Planned int8 layers (module -> op) that ONNX Runtime did not turn into an int8 kernel."""
    on_int8 = {op.split(": ")[0] for op in int8_ops}
    return {m: f"no int8 kernel for this {op} after ONNX Runtime's fusions; it runs in float"
            for m, op in planned.items() if m not in on_int8}


def explain_slowdown(result: Mapping[str, Any], cpu_flags: Mapping[str, bool] | None = None) -> list[str]:
    """Why an int8 artifact is slower than fp32, from a pipeline result (``latency_ratio`` per batch size and
    the quantize facts ``int8_ops``, ``float_ops``, ``quant_boundaries``). Empty when it is not slower.

    >>> explain_slowdown({"latency_ratio": {"1": 1.3, "32": 0.6}, "int8_ops": ["fc: QGemm"], "float_ops": [],
    ...                   "quant_boundaries": 2}, {"avx512_vnni": True})[0][:44]
    'int8 is slower than fp32 at batch 1 (1.30x)'
    """
    ratios = {int(b): float(r) for b, r in (result.get("latency_ratio") or {}).items()}
    slow = sorted(b for b, r in ratios.items() if r > 1.0)
    if not slow:
        return []
    if cpu_flags is None:
        from ...doctor import cpu_info

        cpu_flags = cpu_info()["flags"]
    int8_ops, float_ops = list(result.get("int8_ops") or []), list(result.get("float_ops") or [])
    boundaries = int(result.get("quant_boundaries") or 0)
    fast = sorted(b for b, r in ratios.items() if r <= 1.0)
    out = []
    if fast and max(slow) < min(fast):
        out.append(f"int8 is slower than fp32 at batch {', '.join(map(str, slow))} "
                   f"({', '.join(f'{ratios[b]:.2f}x' for b in slow)}) but faster at batch "
                   f"{', '.join(map(str, fast))}: the batch is too small for the int8 kernels to repay the cost of "
                   f"quantizing and dequantizing activations.")
    else:
        out.append(f"int8 is slower than fp32 at batch {', '.join(map(str, slow))} "
                   f"({', '.join(f'{ratios[b]:.2f}x' for b in slow)}).")
    if not int8_ops:
        out.append("No operation runs on an int8 kernel: ONNX Runtime fused none of the quantized layers, so the "
                   "graph only added quantize/dequantize work.")
    if boundaries > max(2, len(int8_ops)):
        out.append(f"{boundaries} quantize/dequantize boundaries for {len(int8_ops)} int8 ops: QDQ islands — "
                   f"values convert between float and int8 around ops that have no int8 kernel "
                   f"({', '.join(sorted({op.split(': ')[1] for op in float_ops})[:6]) or 'none listed'}).")
    heavy = [op for op in float_ops if op.split(": ")[1] in ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")]
    if heavy:
        out.append(f"Missing int8 kernels: {len(heavy)} matrix/convolution ops still run in float "
                   f"({', '.join(heavy[:4])}{'...' if len(heavy) > 4 else ''}).")
    if any(op.split(": ")[1] == "ConvInteger" for op in int8_ops):
        out.append("ConvInteger (dynamic int8 convolution) has no fast kernel in ONNX Runtime's CPU provider; "
                   "use static quantization for convolutions.")
    threads, streams = int(result.get("threads") or 1), int(result.get("streams") or 1)
    if streams == 1 and threads > 1 and any(op.split(": ")[1] == "QLinearConv" for op in int8_ops):
        out.append(f"ONNX Runtime's int8 convolution (QLinearConv) splits each image across the {threads} intra-op "
                   f"threads, and on small images that synchronisation can cost more than the extra threads bring. "
                   f"Split the batch instead: runtime {{threads: {threads}, streams: {threads}}} (LeNet-5 on 2 cores: "
                   f"benchmarks/quantize.py --streams 2).")
    if not (cpu_flags.get("avx512_vnni") or cpu_flags.get("avx_vnni") or cpu_flags.get("amx_int8")):
        out.append("This CPU has no VNNI or AMX int8 dot-product instructions: int8 matrix kernels gain little over "
                   "fp32 here.")
    return out
