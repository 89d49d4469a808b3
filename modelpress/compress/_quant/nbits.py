"""Weight-only layers that run as n-bit (``quantize: {mode: weight_only, compute: packed}``): every MatMul or
Gemm of the exported graph whose constant weight lies on the step's grid becomes ONNX Runtime's
``com.microsoft.MatMulNBits``, which keeps the weight packed (``bits`` per value, one scale per block of
``group_size`` inputs) in the graph and computes from it, instead of a float32 weight decoded at load.

The codes are the ones ``quantize`` chose (read back off the exported weight, checked exact), so the
artifact computes what the quantized torch model computes. MatMulNBits' layout: ``B`` is uint8
``[N, blocks, block_size * bits / 8]`` with the codes of one output channel packed low-first along K,
``scales`` ``[N * blocks]``, ``zero_points`` (asymmetric only) uint8 packed the same way per channel; the
symmetric default zero point is ``2^(bits-1)``. Convolutions and weights on no grid stay as they are (the
``packed`` storage still shrinks them in the file).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DOMAIN = "com.microsoft"
BITS = (2, 4, 8)  # MatMulNBits' code widths
EXACT = 1e-3  # as the packed codec: every value within EXACT * step of its grid point


def check_block(group_size: int) -> str | None:
    """Why ``group_size`` cannot be MatMulNBits' block size, or None when it can (a power of two >= 16)."""
    if group_size < 16 or group_size & (group_size - 1):
        return (f"ONNX Runtime's MatMulNBits takes blocks of a power of two of at least 16 inputs; group_size is "
                f"{group_size}. Set group_size: 16, 32, 64, 128 or 256.")
    return None


def pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    """``[N, n]`` unsigned codes -> ``[N, n * bits / 8]`` bytes, each row packed low-first.

    >>> pack_rows(np.array([[1, 2, 15, 0]], np.uint8), 4).tolist()
    [[33, 15]]
    """
    n_rows, n = codes.shape
    per_byte = 8 // bits
    padded = np.zeros((n_rows, -(-n // per_byte) * per_byte), np.uint8)
    padded[:, :n] = codes
    lanes = padded.reshape(n_rows, -1, per_byte).astype(np.uint16)
    shifts = (np.arange(per_byte) * bits).astype(np.uint16)
    return (lanes << shifts).sum(-1).astype(np.uint8)


def blocks_on_grid(w_nk: np.ndarray, bits: int, group_size: int, symmetric: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(unsigned codes ``[N, blocks, group_size]``, scales ``[N, blocks]``, zero points or None) that reproduce
    ``w_nk`` (``[N, K]``) exactly, else None."""
    import torch

    from ..quantizer import WeightSpec, quantize

    n, k = w_nk.shape
    spec = WeightSpec(bits, symmetric, "group", group_size)
    q = quantize(torch.from_numpy(np.ascontiguousarray(w_nk)), spec, axis=0)
    if not np.all(np.abs(q.dequantize().numpy() - w_nk) <= EXACT * q.step().numpy()):
        return None
    offset = 2 ** (bits - 1) if symmetric else 0
    codes = q.codes.numpy() + offset  # [N, G, g]; K's zero padding already sits at the code that decodes to 0
    zp = q.zero_point.numpy()  # [N, G, 1]
    if codes.shape[-1] < group_size:  # K < group_size: one group per row, padded up to one block
        fill = np.broadcast_to(zp + offset, (n, 1, group_size - codes.shape[-1]))
        codes = np.concatenate([codes, fill], axis=-1)
    zero_points = None if symmetric else zp[..., 0].astype(np.uint8)
    return codes.astype(np.uint8), q.scale.numpy()[..., 0].astype(np.float32), zero_points


@dataclass(frozen=True)
class NBitsLowering:
    """The ONNX rewrite (``modelpress.compress.OnnxRewrite``) that puts on-grid MatMul/Gemm weights on
    MatMulNBits. Facts: ``nbits_layers`` (module: op) and ``nbits_kept`` (module: why it stayed float)."""

    bits: int
    group_size: int
    symmetric: bool = True
    int8_inputs: bool = False  # accuracy_level 4: inputs rounded to int8 per block, integer products

    def __call__(self, proto: Any, task: Any) -> tuple[Any, dict[str, Any]]:
        from onnx import helper

        from ...onnxgraph import OnnxGraph, module_name

        g = OnnxGraph(proto)
        lowered: dict[str, str] = {}
        kept: dict[str, str] = {}
        for node in list(proto.graph.node):
            found = g.weight_input(node)
            if found is None:
                continue
            name, w, axis = found
            layer = module_name(node.name) or node.name
            if node.op_type == "Conv":
                kept[layer] = "a convolution: MatMulNBits covers MatMul and Gemm only"
                continue
            w_nk = w if axis == 0 else w.T
            on_grid, bits = None, self.bits
            for bits in sorted({self.bits, 8}):  # the accuracy-aware fallback returns sensitive layers to 8 bits
                on_grid = blocks_on_grid(w_nk.astype(np.float32), bits, self.group_size, self.symmetric)
                if on_grid is not None:
                    break
            if on_grid is None:
                kept[layer] = f"its weight is not on the {self.bits}-bit grid of groups of {self.group_size}"
                continue
            codes, scales, zps = on_grid
            n, k = w_nk.shape
            inputs = [node.input[0],
                      g.add_initializer(f"{name}_nbits", pack_rows(codes.reshape(n, -1), bits)
                                        .reshape(n, codes.shape[1], -1)),
                      g.add_initializer(f"{name}_nbits_scales", scales.reshape(-1))]
            if zps is not None:
                inputs.append(g.add_initializer(f"{name}_nbits_zero_points", pack_rows(zps, bits).reshape(-1)))
            out = node.output[0]
            bias = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2] else None
            product = g.fresh(f"{out}_nbits") if bias else out
            new = [helper.make_node("MatMulNBits", inputs, [product], name=f"{node.name}_nbits", domain=DOMAIN,
                                    K=k, N=n, bits=bits, block_size=self.group_size,
                                    accuracy_level=4 if self.int8_inputs else 0)]
            if bias:
                new.append(helper.make_node("Add", [product, bias], [out], name=f"{node.name}_bias"))
            g.insert_before(node, new)
            proto.graph.node.remove(node)
            g.reindex()
            g.remove_initializer(name)
            lowered[layer] = f"MatMulNBits int{bits}"
        if lowered and not any(o.domain == DOMAIN for o in proto.opset_import):
            proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
        return proto, {"nbits_layers": lowered, "nbits_kept": kept}
