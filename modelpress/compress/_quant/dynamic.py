"""Rewrite Gemm/MatMul layers of an fp32 ONNX graph into dynamic int8 (activations quantized at run time).

``DynamicQuantizeLinear(x) -> MatMulInteger(x_u8, W_s8) -> Cast -> Mul(x_scale * w_scale) [-> Add bias]``:
standard ONNX operators that ONNX Runtime fuses into DynamicQuantizeMatMul / MatMulIntegerToFloat. Weights
are int8, symmetric, one scale per output column. Layers sharing an input share one DynamicQuantizeLinear.
Convolutions are left float: ONNX Runtime's ConvInteger runs them several times slower than fp32 Conv.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...onnxgraph import OnnxGraph
from ..quantizer import WeightSpec, quantize



def eligible(g: OnnxGraph, node: Any) -> bool:
    return node.op_type in ("Gemm", "MatMul") and g.weight_input(node) is not None


def rewrite(proto: Any, targets: list[str], per_channel: Mapping[str, bool], weight_bits: int = 8) -> Any:
    """Replace the Gemm/MatMul nodes named in ``targets`` by their dynamic int8 form, in place (weights of
    ``weight_bits`` bits; one weight scale per output column for the nodes ``per_channel`` maps to True, else
    one per tensor)."""
    import torch
    from onnx import TensorProto, helper

    g = OnnxGraph(proto)
    shared: dict[str, tuple[str, str, str]] = {}
    for node in [n for n in g.graph.node if n.name in set(targets) and eligible(g, n)]:
        name, w, axis = g.weight_input(node)
        w_kn = np.ascontiguousarray(w if axis == 1 else w.T)  # MatMulInteger takes B as [K, N]
        channel = per_channel.get(node.name, True)
        spec = WeightSpec(bits=weight_bits, symmetric=True, granularity="channel" if channel else "tensor")
        qw = quantize(torch.from_numpy(w_kn.copy()), spec, axis=1)
        w_int8 = qw.integers().numpy().astype(np.int8)
        w_scale = qw.scale.reshape(-1).numpy().astype(np.float32)
        if not channel:
            w_scale = w_scale.reshape(())
        x = node.input[0]
        new: list[Any] = []
        if x not in shared:
            xq, xs, xz = (g.fresh(f"{x}_{s}") for s in ("quantized", "scale", "zero_point"))
            new.append(helper.make_node("DynamicQuantizeLinear", [x], [xq, xs, xz], name=g.fresh(f"{x}_DynamicQuantizeLinear")))
            shared[x] = (xq, xs, xz)
        xq, xs, xz = shared[x]
        wq = g.add_initializer(f"{name}_int8", w_int8)
        ws = g.add_initializer(f"{name}_scale", w_scale)
        wz = g.add_initializer(f"{name}_zero_point", np.zeros(w_scale.shape, np.int8))
        base = node.name or node.output[0]
        acc, acc_f, scale, out = (g.fresh(f"{base}_{s}") for s in ("int32", "float", "scale", "scaled"))
        has_bias = node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]
        final = node.output[0]
        new += [
            helper.make_node("MatMulInteger", [xq, wq, xz, wz], [acc], name=g.fresh(f"{base}_MatMulInteger")),
            helper.make_node("Cast", [acc], [acc_f], to=TensorProto.FLOAT, name=g.fresh(f"{base}_Cast")),
            helper.make_node("Mul", [xs, ws], [scale], name=g.fresh(f"{base}_ScaleMul")),
            helper.make_node("Mul", [acc_f, scale], [out if has_bias else final], name=g.fresh(f"{base}_Mul")),
        ]
        if has_bias:
            new.append(helper.make_node("Add", [out, node.input[2]], [final], name=g.fresh(f"{base}_BiasAdd")))
        g.insert_before(node, new)
        g.graph.node.remove(node)
        g.reindex()
        g.remove_initializer(name)
    return proto
