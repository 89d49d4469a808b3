"""A small editable view of an ONNX graph: producers, consumers, initializers, and which torch module each
node came from (the exporter names nodes by module scope: ``/blocks/blocks.0/attn/q/MatMul``)."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Container
from typing import Any

import numpy as np

# Operators that move or select values without computing new ones: quantizing their input or their output
# gives the same result (monotonic or pure data movement), so a quantization point may pass through them.
PASS_THROUGH = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
WEIGHTED = {"Conv", "Gemm", "MatMul"}


def module_name(node_name: str, known: Container[str] | None = None) -> str:
    """The torch module a node was exported from ('' at the top level). With ``known`` (the model's module
    names), the longest scope prefix that names a known module (runtime-fused nodes append their own parts).

    >>> module_name("/blocks/blocks.0/attn/q/MatMul"), module_name("/layer2/shortcut/shortcut.0/Conv")
    ('blocks.0.attn.q', 'layer2.shortcut.0')
    >>> module_name("/blocks/blocks.0/attn/MatMul/MatMulScaleFusion/", {"blocks.0.attn"})
    'blocks.0.attn'
    """
    parts = node_name.split("/")
    parts = [p for p in (parts[:-1] if known is None else parts) if p]
    full, prev, best = "", "", ""
    for part in parts:
        if prev and part.startswith(prev + "."):
            full += part[len(prev):]
        else:
            full = f"{full}.{part}" if full else part
        prev = part
        if known is not None and full in known:
            best = full
    return full if known is None else best


class OnnxGraph:
    """Index over ``proto.graph``; edits go straight to the proto (call :meth:`reindex` after rewiring)."""

    def __init__(self, proto: Any):
        self.proto = proto
        self.graph = proto.graph
        self.reindex()

    def reindex(self) -> None:
        from onnx import numpy_helper

        self.inits = {i.name: i for i in self.graph.initializer}
        self._arrays: dict[str, np.ndarray] = {}
        self._to_array = numpy_helper.to_array
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for n in self.graph.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.outputs = {o.name for o in self.graph.output}
        self.inputs = {i.name for i in self.graph.input}

    def array(self, name: str) -> np.ndarray | None:
        """The value of an initializer (or a Constant node's output), else None."""
        if name in self.inits:
            if name not in self._arrays:
                self._arrays[name] = self._to_array(self.inits[name])
            return self._arrays[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    return self._to_array(attr.t)
        return None

    def constant(self, name: str, max_nodes: int = 64) -> np.ndarray | None:
        """The value of ``name`` where it is computed from initializers and Constant nodes only (the small
        subgraphs exporters write for shapes and pad amounts, e.g. ConstantOfShape -> Concat -> Slice), by
        onnx's reference evaluator; None where it reads a graph input or takes more than ``max_nodes`` nodes."""
        value = self.array(name)
        if value is not None or name in self.inputs or name not in self.producer:
            return value
        nodes, ids, todo, seen = [], set(), [name], set()
        while todo:
            tensor = todo.pop()
            if tensor in seen or not tensor or tensor in self.inits:
                continue
            seen.add(tensor)
            node = self.producer.get(tensor)
            if node is None or len(nodes) >= max_nodes or node.domain not in ("", "ai.onnx"):
                return None  # a graph input, too large, or an op the reference evaluator may not know
            if id(node) not in ids:
                ids.add(id(node))
                nodes.append(node)
                todo.extend(node.input)
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        order = [n for n in self.graph.node if id(n) in ids]  # the graph's topological order
        used = {i for n in order for i in n.input}
        graph = helper.make_graph(order, "constant", [], [helper.make_tensor_value_info(name, 0, None)],
                                  [self.inits[i] for i in used if i in self.inits])
        model = helper.make_model(graph, opset_imports=list(self.proto.opset_import))
        try:
            return np.asarray(ReferenceEvaluator(model).run(None, {})[0])
        except Exception:  # noqa: BLE001 - not evaluable here: treated as not constant
            return None

    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def add_initializer(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(name)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.inits[name] = self.graph.initializer[-1]
        return name

    def remove_initializer(self, name: str) -> None:
        if name in self.inits and not any(name in n.input for n in self.graph.node):
            self.graph.initializer.remove(self.inits.pop(name))

    def fresh(self, base: str) -> str:
        taken = self.inits.keys() | self.producer.keys() | self.inputs
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        return name

    def insert_before(self, anchor: Any, nodes: list[Any]) -> None:
        """Insert ``nodes`` just before ``anchor`` (or at the start) so the node list stays topological."""
        nodes_list = list(self.graph.node)
        at = nodes_list.index(anchor) if anchor is not None else 0
        for offset, node in enumerate(nodes):
            self.graph.node.insert(at + offset, node)

    def rewire(self, old: str, new: str, consumers: list[Any]) -> None:
        for node in consumers:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    def weight_input(self, node: Any) -> tuple[str, np.ndarray, int] | None:
        """(initializer name, value, output-channel axis) of a Conv/Gemm/MatMul's constant weight, else None."""
        if node.op_type not in WEIGHTED or len(node.input) < 2:
            return None
        name = node.input[1]
        w = self.array(name)
        if w is None or w.dtype != np.float32:
            return None
        if node.op_type == "Conv" and w.ndim >= 3:
            return name, w, 0
        if node.op_type == "Gemm" and w.ndim == 2 and not self.attr(node, "transA", 0) \
                and self.attr(node, "alpha", 1.0) == 1.0 and self.attr(node, "beta", 1.0) == 1.0:
            return name, w, 0 if self.attr(node, "transB", 0) else 1
        if node.op_type == "MatMul" and w.ndim == 2:
            return name, w, 1
        return None
