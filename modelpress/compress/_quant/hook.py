"""The export step of quantization: an ``onnx.POST_EXPORT_ATTR`` callable that turns the exported fp32 graph
into its int8 form (static QDQ or dynamic int8) with the ranges calibrated on the torch model, then reads
back from ONNX Runtime which ops run on int8 kernels and records that on the model.

Exported nodes are matched to layers by the exporter's scope names (``/features/features.3/Conv`` is layer
``features.3``); a layer's input range is the range of that node's input tensor, a convolution's output
range that of the node's output."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ...errors import ModelpressError
from .. import record
from . import dynamic, preflight, qdq
from .graph import Graph, module_name


@dataclass
class Plan:
    mode: Literal["static", "dynamic"]
    layers: dict[str, str]  # module name -> "Conv" | "Linear": the layers planned for int8
    per_channel: dict[str, bool] = field(default_factory=dict)  # layer -> one weight scale per output channel
    input_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # layer -> calibrated input range
    output_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # conv layer -> output range
    fallback: dict[str, str] = field(default_factory=dict)  # layers kept float by the plan, with the reason
    preflight: bool = True


class OnnxLowering:
    """Rewrites the exported graph per ``plan`` and records the pre-flight facts on ``model``.

    The model reference is what lets the runtime-verified facts reach the result: the pipeline reads the
    model's facts after exporting it. A deep copy of the model copies this object with it (and points it at
    the copy)."""

    def __init__(self, model: Any, plan: Plan):
        self.model, self.plan = model, plan

    def targets(self, g: Graph) -> list[Any]:
        nodes = [n for n in g.graph.node if g.weight_input(n) is not None and module_name(n.name) in self.plan.layers]
        if self.plan.mode == "dynamic":
            return [n for n in nodes if dynamic.eligible(g, n)]
        return [n for n in nodes if module_name(n.name) in self.plan.input_ranges]

    def __call__(self, proto: Any, task: Any) -> Any:
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
        need = 13 if self.plan.mode == "static" and any(self.plan.per_channel.values()) else 11
        if opset < need:
            raise ModelpressError(
                f"quantize (mode {self.plan.mode}{', per_channel' if need == 13 else ''}) needs ONNX opset {need} or "
                f"newer, but the export uses opset {opset}. Set 'export: {{options: {{opset: 18}}}}'"
                f"{' or quantize.per_channel: false' if need == 13 else ''}."
            )
        g = Graph(proto)
        nodes = self.targets(g)
        names = [n.name for n in nodes]
        channel = {n.name: self.plan.per_channel.get(module_name(n.name), True) for n in nodes}
        if self.plan.mode == "dynamic":
            dynamic.rewrite(proto, names, channel)
        else:
            ranges = {}
            for n in nodes:
                m = module_name(n.name)
                ranges[n.input[0]] = tuple(self.plan.input_ranges[m])
                if m in self.plan.output_ranges:
                    ranges[n.output[0]] = tuple(self.plan.output_ranges[m])
            qdq.rewrite(proto, names, ranges, channel)
        found = {module_name(n.name) for n in nodes}
        fallback = dict(self.plan.fallback)
        fallback.update({m: "not found as a Conv/Gemm/MatMul with constant weights in the exported graph"
                         for m in self.plan.layers if m not in found})
        if self.plan.preflight:
            facts = preflight.analyse(proto, {n for n, _ in self.model.named_modules()})
            planned = {m: op for m, op in self.plan.layers.items() if m in found}
            fallback.update(preflight.fallback_layers(planned, facts["int8_ops"]))
            record(self.model, **facts)
        record(self.model, fallback_layers=fallback)
        return proto
