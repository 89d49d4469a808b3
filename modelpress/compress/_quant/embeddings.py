"""Embedding tables in int8 (``quantize: {embeddings: true}``, the int8 modes): each ``nn.Embedding`` row is
rounded onto a symmetric int8 grid with its own scale, and the ONNX export gathers int8 rows and scales them
(``Gather`` of the int8 table, ``Cast``, ``Mul`` by the gathered row scales) instead of gathering float32
rows. A transformer's word-embedding table is often half its weights (all-MiniLM-L6-v2: 11.7 M of 22.7 M
parameters): the graph holds it as int8 (a quarter of its float32 bytes; MiniLM's file
0.648x -> 0.254x, benchmarks/real.py), and the lookup stays a lookup.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import numpy as np
import torch
from torch import nn

from ..quantizer import WeightSpec, fake_quant

ROW_INT8 = WeightSpec(bits=8, symmetric=True, granularity="channel")  # one scale per row (channel axis 0)
EXACT = 1e-3  # a table is on the grid when every value is within EXACT * step of its grid point


def round_tables(model: nn.Module, exclude: tuple[str, ...], shared: set[int] = frozenset()) -> dict[str, WeightSpec]:
    """Round every ``nn.Embedding`` table not matched by ``exclude`` onto ``ROW_INT8`` in place; their specs.
    A table whose parameter is in ``shared`` (ids of weights a quantized layer owns: tied weights) keeps the
    layer's grid."""
    tables = {n: m for n, m in model.named_modules()
              if isinstance(m, nn.Embedding) and n and not any(fnmatch(n, p) for p in exclude)
              and id(m.weight) not in shared}
    with torch.no_grad():
        for module in tables.values():
            module.weight.copy_(fake_quant(module.weight.detach(), ROW_INT8))
    return {n: ROW_INT8 for n in tables}


def rows_on_grid(table: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(int8 rows, float32 scale per row) that reproduce ``table`` exactly, else None."""
    from ..quantizer import quantize

    q = quantize(torch.from_numpy(np.array(table, dtype=np.float32)), ROW_INT8, axis=0)  # a writable copy
    if not np.all(np.abs(q.dequantize().numpy() - table) <= EXACT * q.step().numpy()):
        return None
    return q.integers().numpy().astype(np.int8), q.scale.numpy().reshape(-1, 1).astype(np.float32)


@dataclass(frozen=True)
class GatherLowering:
    """The ONNX rewrite: every ``Gather`` (axis 0) of a float32 2-D initializer that lies on the int8 row grid
    gathers int8 rows and their scales instead. Fact: ``int8_embeddings`` (table initializer: rows x width)."""

    def __call__(self, proto: Any, task: Any) -> tuple[Any, dict[str, Any]]:
        from onnx import TensorProto, helper

        from ...onnxgraph import OnnxGraph

        g = OnnxGraph(proto)
        lowered: dict[str, str] = {}
        for node in list(proto.graph.node):
            if node.op_type != "Gather" or g.attr(node, "axis", 0) != 0:
                continue
            table = g.array(node.input[0]) if node.input[0] in g.inits else None
            if table is None or table.dtype != np.float32 or table.ndim != 2:
                continue
            found = rows_on_grid(table)
            if found is None:
                continue
            rows, scales = found
            name, out = node.input[0], node.output[0]
            q_name = g.add_initializer(f"{name}_int8", rows)
            s_name = g.add_initializer(f"{name}_row_scale", scales)
            gathered, as_float, scale = (g.fresh(f"{out}_{part}") for part in ("int8", "float", "scale"))
            new = [helper.make_node("Gather", [q_name, node.input[1]], [gathered], name=f"{node.name}_int8", axis=0),
                   helper.make_node("Cast", [gathered], [as_float], name=f"{node.name}_cast", to=TensorProto.FLOAT),
                   helper.make_node("Gather", [s_name, node.input[1]], [scale], name=f"{node.name}_scale", axis=0),
                   helper.make_node("Mul", [as_float, scale], [out], name=f"{node.name}_dequant")]
            g.insert_before(node, new)
            proto.graph.node.remove(node)
            g.reindex()
            g.remove_initializer(name)
            lowered[name] = f"{table.shape[0]} x {table.shape[1]}"
        return proto, {"int8_embeddings": lowered}
