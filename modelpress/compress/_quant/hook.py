"""The export step of quantization: an ONNX rewrite (``compress.OnnxRewrite``) that turns the exported fp32 graph
into its int8 form (static QDQ or dynamic int8) with the ranges calibrated on the torch model.

Exported nodes are matched to layers by the exporter's scope names (``/features/features.3/Conv`` is layer
``features.3``); a layer's input range is the range of that node's input tensor, a convolution's output
range that of the node's output. The rewrite returns, as facts, the layers it put on int8 (``int8_layers``:
module -> op) and those it left in float with the reason (``fallback_layers``); which ops a runtime really
runs in int8 is read from the artifact by the runtime afterwards (``op_precisions``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import ModelpressError
from ...onnxgraph import OnnxGraph, module_name
from . import dynamic, qdq


@dataclass(frozen=True)
class Plan:
    mode: Literal["static", "dynamic"]
    layers: dict[str, str]  # module name -> "Conv" | "Linear": the layers planned for int8
    per_channel: dict[str, bool] = field(default_factory=dict)  # layer -> one weight scale per output channel
    input_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> calibrated input range
    output_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # conv layer -> output range
    fallback: dict[str, str] = field(default_factory=dict)  # layers kept float by the plan, with the reason
    weight_bits: int = 8  # bits of the int8 weights' values (7: reduced range, see quantize.Config.reduce_range)


@dataclass(frozen=True)
class OnnxLowering:
    """Rewrites the exported graph per ``plan``; plain data, so it copies and compares like the plan."""

    plan: Plan

    def targets(self, g: OnnxGraph) -> list[Any]:
        nodes = [n for n in g.graph.node if g.weight_input(n) is not None and module_name(n.name) in self.plan.layers]
        if self.plan.mode == "dynamic":
            return [n for n in nodes if dynamic.eligible(g, n)]
        return [n for n in nodes if module_name(n.name) in self.plan.input_ranges]

    def __call__(self, proto: Any, task: Any) -> tuple[Any, dict[str, Any]]:
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        need = 13 if self.plan.mode == "static" and any(self.plan.per_channel.values()) else 11
        if opset < need:
            raise ModelpressError(
                f"quantize (mode {self.plan.mode}{', per_channel' if need == 13 else ''}) needs ONNX opset {need} or "
                f"newer, but the export uses opset {opset}. Set 'export: {{options: {{opset: 18}}}}'"
                f"{' or quantize.per_channel: false' if need == 13 else ''}."
            )
        g = OnnxGraph(proto)
        nodes = self.targets(g)
        names = [n.name for n in nodes]
        channel = {n.name: self.plan.per_channel.get(module_name(n.name), True) for n in nodes}
        if self.plan.mode == "dynamic":
            dynamic.rewrite(proto, names, channel, self.plan.weight_bits)
        else:
            ranges = {}
            for n in nodes:
                m = module_name(n.name)
                ranges[n.input[0]] = tuple(self.plan.input_ranges[m])
                if m in self.plan.output_ranges:
                    ranges[n.output[0]] = tuple(self.plan.output_ranges[m])
            qdq.rewrite(proto, names, ranges, channel, self.plan.weight_bits)
        found = {module_name(n.name) for n in nodes}
        fallback = dict(self.plan.fallback)
        fallback.update({m: "not found as a Conv/Gemm/MatMul with constant weights in the exported graph"
                         for m in self.plan.layers if m not in found})
        return proto, {"fallback_layers": fallback,
                       "int8_layers": {m: op for m, op in self.plan.layers.items() if m in found}}
