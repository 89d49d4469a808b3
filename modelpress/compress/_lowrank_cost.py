"""What a factorization costs: parameters and multiply-accumulates (MACs) per sample. (Its latency, when
``cost: measured`` asks for it, is timed by the pipeline's ``Tools.time_ratio`` on the recipe's runtime.)

Shapes come from one forward pass on calibration inputs (dimension 0 is the batch); MACs are per
sample, so a Linear applied to a sequence counts every token.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ._lowrank_layers import Spec


@dataclass(frozen=True)
class Geometry:
    """A layer's spec with its per-sample input and output shapes (batch dimension removed)."""

    spec: Spec
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    bias: bool

    @property
    def positions(self) -> tuple[int, int]:
        """(input positions, output positions): tokens for a Linear, H*W for a convolution."""
        if self.spec.kind == "linear":
            tokens = math.prod(self.in_shape[:-1])
            return tokens, tokens
        return math.prod(self.in_shape[-2:]), math.prod(self.out_shape[-2:])


def params(g: Geometry, method: str | None = None, ranks: tuple[int, ...] = ()) -> int:
    """Parameters of the layer (``method`` None: the original layer)."""
    s = g.spec
    kh, kw = s.kernel
    bias = s.cout if g.bias else 0
    if method is None:
        return s.cout * s.cin * kh * kw + bias
    if method == "svd":
        return ranks[0] * (s.cin + s.cout) + bias
    if method == "spatial":
        return ranks[0] * (s.cin * kh + s.cout * kw) + bias
    r_in, r_out = ranks
    return ((s.cin * r_in if r_in < s.cin else 0) + r_out * r_in * kh * kw
            + (r_out * s.cout if r_out < s.cout else 0) + bias)


def macs(g: Geometry, method: str | None = None, ranks: tuple[int, ...] = ()) -> int:
    """Multiply-accumulates per sample (``method`` None: the original layer)."""
    s = g.spec
    kh, kw = s.kernel
    p_in, p_out = g.positions
    if method is None:
        return p_out * s.cout * s.cin * kh * kw
    if method == "svd":
        return p_out * ranks[0] * (s.cin + s.cout)
    if method == "spatial":
        # the kh x 1 stage runs at the output height and the full input width (stride 1, no padding in W)
        height_out = g.out_shape[-2]
        width_in = g.in_shape[-1]
        return height_out * width_in * ranks[0] * s.cin * kh + p_out * s.cout * ranks[0] * kw
    r_in, r_out = ranks
    return ((p_in * s.cin * r_in if r_in < s.cin else 0) + p_out * r_out * r_in * kh * kw
            + (p_out * r_out * s.cout if r_out < s.cout else 0))
