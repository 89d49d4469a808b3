"""Rewrite an fp32 ONNX graph into QDQ form for ONNX Runtime's int8 kernels (static quantization).

For each target Conv/Gemm/MatMul: the activation input gets QuantizeLinear -> DequantizeLinear (u8, the calibrated
range), the weight becomes an int8 initializer behind DequantizeLinear (symmetric, per output channel: zero point 0
is what the u8 x s8 VNNI kernels take), the bias an int32 initializer with scale ``s_x * s_w``. The quantization
point of an input is repeated upstream through pass-through ops (MaxPool, Flatten, Reshape, ...), zero padding, and
through ReLU and ReLU6 (a Clip from 0 whose top the range does not exceed) when the zero point is 0 — exact, since
quantizing commutes with those — when that reaches a quantized Conv/Gemm's output, so ONNX Runtime fuses ``DQ ->
Conv -> (ReLU) -> Q`` into one QLinearConv instead of leaving float islands between int8 ops. A Conv whose output
reaches no quantized consumer gets its own output quantization for the same reason. A zero Pad in front of a
quantized Conv (a "SAME" convolution's export) is merged into the Conv's own padding first (``fold_pads``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...onnxgraph import PASS_THROUGH, OnnxGraph
from ..quantizer import WeightSpec, act_qparams, quantize

Range = tuple[float, float]
SHAPE_ONLY = {"Shape", "Size"}  # consumers that read only the shape keep the float tensor


def clip_bounds(g: OnnxGraph, node: Any) -> tuple[float, float] | None:
    """A Clip's (min, max) (inputs from opset 11, attributes before), None where a bound is not a constant."""
    if len(node.input) > 1 or g.attr(node, "min") is None:
        bounds = []
        for i, default in ((1, -np.inf), (2, np.inf)):
            name = node.input[i] if len(node.input) > i else ""
            value = g.array(name) if name else np.array(default)
            if value is None or value.size != 1:
                return None
            bounds.append(float(value.reshape(())))
        return bounds[0], bounds[1]
    return float(g.attr(node, "min", -np.inf)), float(g.attr(node, "max", np.inf))


def zero_pad(g: OnnxGraph, node: Any) -> bool:
    """Whether ``node`` is a Pad that pads with zeros (mode constant, value 0)."""
    if node.op_type != "Pad":
        return False
    value = g.array(node.input[2]) if len(node.input) > 2 and node.input[2] \
        else np.array(g.attr(node, "value", 0.0))  # opset < 11: an attribute
    return g.attr(node, "mode", b"constant") in (b"constant", "constant") and value is not None \
        and value.size == 1 and float(value.reshape(())) == 0.0


def commutes(g: OnnxGraph, node: Any, scale: float, zp: int) -> bool:
    """Whether quantizing ``node``'s input with (``scale``, ``zp``) gives what quantizing its output does: a Pad
    with zeros (0.0 is exact in every range); ReLU, and a Clip from 0 (ReLU6) whose top is not below the range's,
    when the zero point is 0 (the clamp the quantization does anyway)."""
    if node.op_type == "Pad":
        return zero_pad(g, node)
    if zp != 0:
        return False
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip":
        return False
    bounds = clip_bounds(g, node)
    return bounds is not None and bounds[0] == 0.0 and bounds[1] >= 255 * scale * (1 - 1e-6)


def fold_pads(g: OnnxGraph, targets: list[Any]) -> dict[str, str]:
    """Merge a zero Pad in front of a target Conv into the Conv's own ``pads`` (what "SAME" convolutions export
    as: a Pad, its amounts computed by a constant subgraph, then the Conv). Exact; ONNX Runtime then runs the
    int8 convolution on its padded input directly instead of Pad in float between DequantizeLinear and
    QuantizeLinear. Returns, per merged Conv, its new input tensor -> the Pad's output it read before."""
    from onnx import helper

    merged: dict[str, str] = {}
    for conv in targets:
        pad = g.producer.get(conv.input[0])
        if conv.op_type != "Conv" or pad is None or not zero_pad(g, pad) \
                or g.attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") \
                or len(g.consumers[conv.input[0]]) != 1 or conv.input[0] in g.outputs:
            continue
        amounts = g.constant(pad.input[1]) if len(pad.input) > 1 else np.array(g.attr(pad, "pads", []))
        axes = g.constant(pad.input[3]) if len(pad.input) > 3 and pad.input[3] else None
        if amounts is None or axes is not None or amounts.ndim != 1 or len(amounts) % 2 or (amounts < 0).any():
            continue
        rank = len(amounts) // 2
        begin, end = amounts[:rank], amounts[rank:]
        if begin[:2].any() or end[:2].any():
            continue  # batch or channel padding is not a convolution's
        spatial = rank - 2
        own = list(g.attr(conv, "pads", [0] * 2 * spatial))
        new = [int(a) + int(b) for a, b in zip(own, [*begin[2:], *end[2:]])]
        for a in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(a)
        conv.attribute.append(helper.make_attribute("pads", new))
        merged[pad.input[0]] = conv.input[0]
        conv.input[0] = pad.input[0]
        g.graph.node.remove(pad)
        g.reindex()
    return merged


def plan_points(g: OnnxGraph, targets: list[Any], ranges: Mapping[str, Range]) -> dict[str, tuple[float, int]]:
    """Tensor -> (scale, zero point) of every quantization point.

    A target's input point is repeated up a chain of pass-through ops only when the chain starts at another
    target: then ``DQ -> Conv -> Q`` fuses and MaxPool & co. run on uint8. Below a float op the point stays
    where it is, so the float producer's MaxPool runs on ONNX Runtime's float NCHWc kernels rather than on
    uint8 in NCHW layout, and only the smaller tensor is quantized."""
    names = {n.name for n in targets}
    params = {n.input[0]: act_qparams(*ranges[n.input[0]]) for n in targets}
    for start in list(params):
        chain, t = [], start
        while True:
            p = g.producer.get(t)
            if p is None or not (p.op_type in PASS_THROUGH or commutes(g, p, *params[start])):
                break
            src = p.input[0]
            users = [c for c in g.consumers[src] if c.op_type not in SHAPE_ONLY]
            if src in params or src in g.outputs or len(users) != 1 or g.array(src) is not None:
                break  # another user of src would see quantized values: keep the point where it is
            chain.append(src)
            t = src
        top = g.producer.get(t)
        if chain and top is not None and top.name in names:
            params.update({c: params[start] for c in chain})
    for n in targets:
        y = n.output[0]
        if n.op_type == "Conv" and y not in params and y not in g.outputs and y in ranges:
            params[y] = act_qparams(*ranges[y])
    return params


def _insert_qdq(g: OnnxGraph, tensor: str, scale: float, zp: int) -> None:
    from onnx import helper

    consumers = [c for c in g.consumers[tensor] if c.op_type not in SHAPE_ONLY]
    if not consumers:
        return
    s = g.add_initializer(f"{tensor}_scale", np.array(scale, np.float32))
    z = g.add_initializer(f"{tensor}_zero_point", np.array(zp, np.uint8))
    q_out, dq_out = g.fresh(f"{tensor}_quantized"), g.fresh(f"{tensor}_dequantized")
    q = helper.make_node("QuantizeLinear", [tensor, s, z], [q_out], name=g.fresh(f"{tensor}_QuantizeLinear"))
    dq = helper.make_node("DequantizeLinear", [q_out, s, z], [dq_out], name=g.fresh(f"{tensor}_DequantizeLinear"))
    g.rewire(tensor, dq_out, consumers)
    g.insert_before(consumers[0], [q, dq])
    g.reindex()


def _quantize_weight(g: OnnxGraph, node: Any, x_scale: float, spec: WeightSpec) -> None:
    from onnx import helper
    import torch

    name, w, axis = g.weight_input(node)
    qw = quantize(torch.from_numpy(w.copy()), spec, axis)
    w_int8 = qw.integers().numpy().astype(np.int8)
    w_scale = qw.scale.reshape(-1).numpy().astype(np.float32)
    if spec.granularity == "tensor":
        w_scale = w_scale.reshape(())  # a scalar scale: per tensor
    wq = g.add_initializer(f"{name}_int8", w_int8)
    ws = g.add_initializer(f"{name}_scale", w_scale)
    wz = g.add_initializer(f"{name}_zero_point", np.zeros_like(w_int8, shape=w_scale.shape))
    out = g.fresh(f"{name}_dequantized")
    per_axis = {"axis": axis} if w_scale.ndim else {}  # opset < 13 knows no axis attribute
    g.insert_before(node, [helper.make_node("DequantizeLinear", [wq, ws, wz], [out], **per_axis,
                                            name=g.fresh(f"{name}_DequantizeLinear"))])
    node.input[1] = out
    if len(node.input) > 2 and node.input[2]:
        b = g.array(node.input[2])
        if b is not None and b.ndim == 1:
            b_scale = (np.float32(x_scale) * w_scale).astype(np.float32)
            b_int = np.round(b.astype(np.float64) / b_scale)
            if np.abs(b_int).max(initial=0) < 2 ** 31 - 1:  # else leave the bias float (rare: tiny scales)
                old = node.input[2]
                bq = g.add_initializer(f"{old}_int32", b_int.astype(np.int32))
                bs = g.add_initializer(f"{old}_scale", b_scale)
                bz = g.add_initializer(f"{old}_zero_point", np.zeros(b_scale.shape, np.int32))
                bout = g.fresh(f"{old}_dequantized")
                g.insert_before(node, [helper.make_node("DequantizeLinear", [bq, bs, bz], [bout],
                                                        **({"axis": 0} if per_axis else {}),
                                                        name=g.fresh(f"{old}_DequantizeLinear"))])
                node.input[2] = bout
                g.reindex()
                g.remove_initializer(old)
    g.reindex()
    g.remove_initializer(name)


def rewrite(proto: Any, targets: list[str], ranges: Mapping[str, Range], per_channel: Mapping[str, bool],
            weight_bits: int = 8) -> Any:
    """Quantize the nodes named in ``targets`` (static u8 activations, s8 weights of ``weight_bits`` bits: 7 keeps
    u8 x s8 pair sums inside int16 for kernels without VNNI; one scale per output channel for the nodes
    ``per_channel`` maps to True, else per tensor) in place."""
    g = OnnxGraph(proto)
    nodes = [n for n in g.graph.node if n.name in set(targets)]
    moved = fold_pads(g, nodes)  # a padded input's range is its source's (ranges always hold 0)
    ranges = {**ranges, **{new: ranges[old] for new, old in moved.items() if old in ranges and new not in ranges}}
    params = plan_points(g, nodes, ranges)
    inputs = {n.name: n.input[0] for n in nodes}
    for tensor, (scale, zp) in params.items():
        _insert_qdq(g, tensor, scale, zp)
    for node in nodes:
        spec = WeightSpec(bits=weight_bits, symmetric=True,
                          granularity="channel" if per_channel.get(node.name, True) else "tensor")
        _quantize_weight(g, node, params[inputs[node.name]][0], spec)
    return proto
