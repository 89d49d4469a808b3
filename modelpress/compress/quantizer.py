"""The uniform affine quantizer, for weights (per tensor, per output channel or per group) and activations.

Step ``scale = (max - min) / (2^bits - 1)`` (asymmetric, with an integer zero point) or
``scale = max|w| / (2^(bits-1) - 1)`` (symmetric, zero point 0); ``q = clamp(round(w / scale) + zp)`` and
``w_hat = (q - zp) * scale``. Weights are viewed as ``[channels, K]`` (channel axis first, the rest
flattened); groups are runs of ``group_size`` consecutive values along K inside one channel.

>>> import torch
>>> spec = WeightSpec(bits=4, granularity="channel")
>>> w = torch.tensor([[0.7, -0.33, 0.12]])
>>> fake_quant(w, spec)
tensor([[ 0.7000, -0.3000,  0.1000]])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

Granularity = Literal["tensor", "channel", "group"]
MSE_SHRINKS = torch.linspace(0.5, 1.0, 26)  # clipping factors tried by the MSE weight-range search


@dataclass(frozen=True)
class WeightSpec:
    bits: int = 8
    symmetric: bool = True
    granularity: Granularity = "channel"
    group_size: int = 128  # used when granularity == "group"
    clip: Literal["minmax", "mse"] = "minmax"

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2 ** self.bits - 1

    def describe(self) -> str:
        where = {"tensor": "per tensor", "channel": "per channel", "group": f"groups of {self.group_size}"}
        return f"int{self.bits} {'symmetric' if self.symmetric else 'asymmetric'} {where[self.granularity]}"


@dataclass
class QuantizedWeight:
    """Integer codes ``[C, G, g]`` (a float tensor of whole numbers), ``scale`` and ``zero_point`` ``[C, G, 1]``
    (``C`` = 1 per tensor), and the layout to undo: original ``shape``, the channel ``axis`` moved first."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    shape: tuple[int, ...]
    axis: int

    def dequantize(self) -> torch.Tensor:
        """Quantized values in the original layout."""
        return self.layout((self.codes - self.zero_point) * self.scale)

    def integers(self) -> torch.Tensor:
        """The integer codes (zero point included) in the original layout."""
        return self.layout(self.codes)

    def step(self) -> torch.Tensor:
        """The scale that applies to each value, in the original layout."""
        return self.layout(self.scale.expand_as(self.codes))

    def layout(self, values: torch.Tensor) -> torch.Tensor:
        """``[C, G, g]`` values back in the original layout (padding dropped)."""
        c = self.shape[self.axis] if self.shape else 1
        rows = values.reshape(c, -1)[:, : int(np.prod(self.shape)) // max(c, 1)]
        return from_rows(rows, self.shape, self.axis)


def to_rows(w: torch.Tensor, axis: int) -> torch.Tensor:
    """``w`` as ``[channels, K]`` with ``axis`` first."""
    return w.movedim(axis, 0).reshape(w.shape[axis], -1)


def from_rows(rows: torch.Tensor, shape: tuple[int, ...], axis: int) -> torch.Tensor:
    moved = (shape[axis], *shape[:axis], *shape[axis + 1:])
    return rows.reshape(moved).movedim(0, axis)


def _grouped(rows: torch.Tensor, spec: WeightSpec) -> torch.Tensor:
    """``[C, K]`` -> ``[C, G, g]`` (zero padded at the end of K; zeros never widen a range that holds 0)."""
    c, k = rows.shape
    if spec.granularity == "tensor":
        return rows.reshape(1, 1, c * k)
    g = k if spec.granularity == "channel" else min(spec.group_size, k)
    pad = (-k) % g
    if pad:
        rows = torch.nn.functional.pad(rows, (0, pad))
    return rows.reshape(c, -1, g)


def _params(lo: torch.Tensor, hi: torch.Tensor, spec: WeightSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per group for the range [lo, hi] (lo <= 0 <= hi); an all-zero group gets scale 1."""
    scale = (torch.maximum(-lo, hi) if spec.symmetric else hi - lo) / spec.qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.zeros_like(scale) if spec.symmetric else torch.clamp(torch.round(-lo / scale), 0, spec.qmax)
    return scale, zp


def _codes(groups: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, spec: WeightSpec) -> torch.Tensor:
    return torch.clamp(torch.round(groups / scale) + zp, spec.qmin, spec.qmax)


def quantize(w: torch.Tensor, spec: WeightSpec, axis: int = 0) -> QuantizedWeight:
    """Quantize ``w`` (channels on ``axis``) to integer codes with per-tensor/channel/group parameters."""
    w = w.detach().float()
    rows = to_rows(w, axis)
    groups = _grouped(rows, spec)
    lo = torch.clamp(groups.amin(-1, keepdim=True), max=0.0)
    hi = torch.clamp(groups.amax(-1, keepdim=True), min=0.0)
    scale, zp = _params(lo, hi, spec)
    if spec.clip == "mse" and groups.numel():
        best_err = torch.full_like(scale, torch.inf)
        best_scale, best_zp = scale, zp
        for shrink in MSE_SHRINKS.tolist():
            s, z = _params(lo * shrink, hi * shrink, spec)
            err = (((_codes(groups, s, z, spec) - z) * s - groups) ** 2).sum(-1, keepdim=True)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_scale, best_zp = torch.where(better, s, best_scale), torch.where(better, z, best_zp)
        scale, zp = best_scale, best_zp
    codes = _codes(groups, scale, zp, spec)
    return QuantizedWeight(codes, scale, zp, tuple(w.shape), axis)


def fake_quant(w: torch.Tensor, spec: WeightSpec, axis: int = 0) -> torch.Tensor:
    """``w`` rounded to its quantization grid, with a straight-through gradient (identity) for training."""
    w_hat = quantize(w, spec, axis).dequantize().to(w.dtype)
    return w + (w_hat - w).detach() if w.requires_grad else w_hat


def sqnr_db(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when exact)."""
    noise = float(((w - w_hat).double() ** 2).sum())
    signal = float((w.double() ** 2).sum())
    return float("inf") if noise == 0 else 10 * float(np.log10(max(signal, 1e-300) / noise))


def act_qparams(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point for an unsigned 8-bit activation covering ``[lo, hi]`` (the range always holds 0,
    so 0.0 is exact and a ReLU output gets zero point 0)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0
    if not scale > 0:
        return 1.0 / 255.0, 0
    scale = float(np.float32(scale))
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def fake_quant_act(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Unsigned 8-bit fake quantization (gradient passes inside the range, as in PyTorch's own op)."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


def fake_quant_act_dynamic(x: torch.Tensor) -> torch.Tensor:
    """What ONNX ``DynamicQuantizeLinear`` does at run time: u8 parameters from this tensor's own range."""
    scale, zp = act_qparams(float(x.detach().min()), float(x.detach().max()))
    return fake_quant_act(x, scale, zp)
