"""Multiply-accumulates of convolutions and matrix products, counted as they run.

A ``TorchFunctionMode`` sees every torch function call during one forward pass and hands the MACs of
the ones that do dense arithmetic to a callback (the layer table charges them to the innermost module
running). Elementwise ops, normalizations and pooling count 0 MACs. ``einsum`` is not counted.
Counts are for the whole batch of the forward pass.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.overrides import TorchFunctionMode

MATMULS = {"matmul", "__matmul__", "__rmatmul__", "mm", "bmm"}
ADD_MATMULS = {"addmm", "baddbmm", "addbmm", "addmv"}  # (c, a, b): the product is a @ b


def macs_of(name: str, args: tuple, kwargs: dict, result: Any) -> int:
    import torch

    def arg(i: int, key: str) -> Any:
        return args[i] if len(args) > i else kwargs.get(key)

    if not isinstance(result, torch.Tensor) and name not in ("multi_head_attention_forward",):
        return 0
    if name == "linear":
        return result.numel() * arg(1, "weight").shape[-1]
    if name in ("conv1d", "conv2d", "conv3d"):
        return result.numel() * arg(1, "weight")[0].numel()  # (in / groups) * kernel per output element
    if name.startswith("conv_transpose"):
        weight = arg(1, "weight")
        return arg(0, "input").numel() * weight[0].numel()  # every input element meets (out / groups) * kernel
    if name in MATMULS:
        a = args[0] if name != "__rmatmul__" else args[1]
        return result.numel() * (a.shape[-1] if a.dim() else 1)
    if name in ADD_MATMULS:
        return result.numel() * arg(1, "mat1").shape[-1]
    if name == "scaled_dot_product_attention":
        q, k, v = args[0], args[1], args[2]
        lead = math.prod(q.shape[:-2])
        return lead * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    if name == "multi_head_attention_forward":
        q, k = args[0], args[1]  # [L, N, E], [S, N, E] (the module transposes batch_first inputs)
        length, batch, embed = q.shape[0], q.shape[1] if q.dim() == 3 else 1, q.shape[-1]
        source = k.shape[0]
        projections = (length + 2 * source) * embed * embed + length * embed * embed  # q, k, v in; out
        return batch * (projections + 2 * length * source * embed)
    return 0


class MacCounter(TorchFunctionMode):
    """``with MacCounter(charge): model(x)`` calls ``charge(macs)`` for each dense op, as it runs."""

    def __init__(self, charge: Callable[[int], None]):
        super().__init__()
        self.charge = charge

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name:
            try:
                macs = macs_of(name, args, kwargs, result)
            except (AttributeError, IndexError, TypeError):  # an unusual call signature: not counted
                macs = 0
            if macs:
                self.charge(int(macs))
        return result
