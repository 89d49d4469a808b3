"""Which operations of an ONNX artifact run on int8 kernels in ONNX Runtime, which run in float, and how many
quantize/dequantize boundaries sit between them: read from the graph ONNX Runtime itself builds after its
fusions (with the recipe's session settings), not guessed from operator names or from what a technique
planned.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Container, Mapping
from typing import Any

from ..onnxgraph import module_name
from . import RuntimeConfig

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


def optimized_graph(proto: Any, config: RuntimeConfig = RuntimeConfig()) -> Any:
    """The graph ONNX Runtime runs after its optimizations (the session settings of ``config``)."""
    import onnx
    import onnxruntime as ort

    from .onnxruntime import session_options

    with tempfile.TemporaryDirectory(prefix="modelpress-ops-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        opts = session_options(config.threads, config.spinning)
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


def quantized(proto: Any) -> bool:
    """Whether the graph holds any quantization op (a float graph needs no analysis)."""
    return any(n.op_type in BOUNDARIES or n.op_type in INT8_KERNELS for n in proto.graph.node)


def analyse(proto: Any, modules: Container[str] | None = None, config: RuntimeConfig = RuntimeConfig()
            ) -> dict[str, Any]:
    """``int8_ops`` and ``float_ops`` (``'module: OpType'``, in graph order) and ``quant_boundaries`` (the
    number of QuantizeLinear/DequantizeLinear/DynamicQuantizeLinear nodes left at run time). ``modules``:
    the model's module names, to name nodes that the runtime renamed while fusing."""
    graph = optimized_graph(proto, config).graph
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




def op_precisions(artifact: Any, config: RuntimeConfig, modules: Container[str] | None = None) -> dict[str, Any]:
    """For a quantized ONNX artifact: ``int8_ops``, ``float_ops`` and ``quant_boundaries`` as ONNX Runtime runs
    it with ``config``; empty for a float graph (nothing to report)."""
    import onnx

    proto = onnx.load(str(artifact.runnable_path()))
    return analyse(proto, modules, config) if quantized(proto) else {}
