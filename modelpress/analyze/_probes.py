"""analyze's own minimal probes, used only where the registered technique for a probe is missing.

Each changes the weights of one layer in place and keeps the module's structure, so the model runs
unchanged otherwise. They are probes, not techniques: they say how much a layer's output tolerates the
kind of damage a technique does, not what a technique with calibration or fine-tuning would reach.

- ``fake_quantize``: per-output-channel uniform affine quantization of the weights to ``bits`` (the
  range always holds 0, so zero weights stay exact), then dequantized; activations stay float.
- ``zero_channels``: the ``ratio`` of output channels (rows of a Linear) with the lowest L2 norm set to
  zero, bias included (structured pruning without removing the channels).
- ``half_rank``: the weight, as a matrix ``out x (in * kernel)``, replaced by its SVD truncated to half
  its rank (the product of the two factors a factorization would keep).
"""
from __future__ import annotations

from typing import Any

WEIGHTED_KINDS = ("conv", "depthwise", "linear")


def _weight(module: Any) -> Any:
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() < 2:
        raise ValueError(f"a {type(module).__name__} has no weight matrix")
    return weight


def _out_dim(module: Any) -> int:
    return 1 if type(module).__name__.startswith("ConvTranspose") else 0  # ConvTranspose: [in, out/g, ...]


def fake_quantize(module: Any, bits: int) -> None:
    import torch

    weight = _weight(module)
    dim = _out_dim(module)
    with torch.no_grad():
        w = weight.detach().transpose(0, dim).reshape(weight.shape[dim], -1).to(torch.float64)
        lo = torch.clamp(w.min(dim=1, keepdim=True).values, max=0.0)
        hi = torch.clamp(w.max(dim=1, keepdim=True).values, min=0.0)
        levels = 2 ** bits - 1
        scale = torch.clamp((hi - lo) / levels, min=1e-12)
        zero_point = torch.round(-lo / scale)
        q = torch.clamp(torch.round(w / scale) + zero_point, 0, levels)
        deq = ((q - zero_point) * scale).to(weight.dtype)
        shape = list(weight.shape)
        shape[0], shape[dim] = shape[dim], shape[0]
        weight.copy_(deq.reshape(shape).transpose(0, dim))


def zero_channels(module: Any, ratio: float) -> int:
    """Zero the lowest-L2 output channels; returns how many were zeroed (at least 1 when ratio > 0)."""
    import torch

    weight = _weight(module)
    dim = _out_dim(module)
    with torch.no_grad():
        w = weight.detach().transpose(0, dim).reshape(weight.shape[dim], -1)
        channels = w.shape[0]
        k = min(channels - 1, max(1, round(ratio * channels))) if ratio > 0 else 0
        if k <= 0:
            return 0
        drop = torch.argsort(w.norm(dim=1))[:k]
        index = [slice(None)] * weight.dim()
        index[dim] = drop
        weight[tuple(index)] = 0
        bias = getattr(module, "bias", None)
        if bias is not None and dim == 0:
            bias[drop] = 0
    return int(k)


def half_rank(module: Any) -> int:
    """Replace the weight by its half-rank SVD reconstruction; returns the rank kept."""
    import torch

    weight = _weight(module)
    if getattr(module, "groups", 1) != 1:
        raise ValueError(f"a grouped or depthwise convolution (groups={module.groups}) has no channel matrix")
    with torch.no_grad():
        w = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
        full = min(w.shape)
        if full < 2:
            raise ValueError(f"its weight matrix {list(w.shape)} has rank 1 at most")
        rank = full // 2
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        approx = (u[:, :rank] * s[:rank]) @ vh[:rank]
        weight.copy_(approx.reshape(weight.shape).to(weight.dtype))
    return rank


def eligible(kind: str, probe_kind: str, module: Any, is_output: bool) -> str | None:
    """None when the probe applies to the layer, else why not (a short phrase)."""
    if kind not in WEIGHTED_KINDS:
        return f"a {type(module).__name__} has no weights to {probe_kind}"
    if probe_kind == "prune" and is_output:
        return "it produces the model's output: pruning it removes outputs"
    if probe_kind == "lowrank" and getattr(module, "groups", 1) != 1:
        return f"a grouped or depthwise convolution (groups={module.groups}) has no channel matrix"
    return None
