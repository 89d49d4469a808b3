"""What a factorization costs: parameters and multiply-accumulates (MACs) per sample, and, when asked,
the layer's latency before and after measured on ONNX Runtime.

Shapes come from one forward pass on calibration inputs (dimension 0 is the batch); MACs are per
sample, so a Linear applied to a sequence counts every token.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from torch import nn

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


def measured_ratio(original: nn.Module, factorized: nn.Module, in_shape: tuple[int, ...], batch_size: int,
                   threads: int = 2) -> float:
    """Latency of ``factorized`` over ``original`` as single-layer ONNX models on ONNX Runtime (CPU),
    timed interleaved: the median of per-round ratios."""
    from ..bench import BenchConfig, interleaved

    x = np.random.default_rng(0).standard_normal((batch_size, *in_shape)).astype(np.float32)
    runs = {"original": _ort_run(original, x, threads), "factorized": _ort_run(factorized, x, threads)}
    times = interleaved(runs, {"x": x}, BenchConfig(batch_sizes=(batch_size,), warmup=5, rounds=15, runs_per_round=10))
    paired = [np.median(f) / np.median(o) for f, o in zip(times["factorized"], times["original"])]
    return float(np.median(paired))


def _ort_run(layer: nn.Module, x: np.ndarray, threads: int):
    import onnxruntime as ort
    import torch

    from ..runtime.onnxruntime import session_options

    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(layer.eval(), (torch.from_numpy(x),), buf, dynamo=False, opset_version=18,
                          input_names=["x"], output_names=["y"])
    session = ort.InferenceSession(buf.getvalue(), session_options(threads), providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(None, inputs)
