"""Bias correction: the mean error that weight rounding adds to each output channel, measured on
calibration inputs, confirmed on validation inputs, and folded into the layer's bias."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from .layers import QuantLayer


def correct_bias(model: nn.Module, wrapped: Mapping[str, QuantLayer], batches: Iterable[dict],
                 input_names: tuple[str, ...], check: Iterable[dict] | None = None,
                 min_z: float = 2.0) -> dict[str, torch.Tensor]:
    """Bias correction: per output channel of every enabled layer, the error its own rounding adds (float
    layer on the layer's actual input minus the quantized layer) is measured over ``batches`` (calibration)
    and its mean added to the bias where that mean is clearly not noise (at least ``min_z`` standard errors
    from zero) and, when ``check`` batches (validation inputs) are given, where the shift also shrinks the
    mean error measured on them: the decision is confirmed on data the estimate did not see. Returns the
    shift added per layer (``shift_biases`` with sign -1 takes it back for a layer that goes back to float)."""
    names = [n for n, q in wrapped.items() if q.enabled and q.layer.bias is not None]
    stats = rounding_errors(model, wrapped, names, batches, input_names)
    confirm = rounding_errors(model, wrapped, names, check, input_names) if check is not None else {}
    shifts = {}
    for name, (total, squares, n) in stats.items():
        mean = total / n
        stderr = ((squares / n - mean * mean).clamp(min=0) / n).sqrt()
        keep = mean.abs() >= min_z * stderr
        if name in confirm:
            seen = confirm[name][0] / confirm[name][2]
            keep &= mean * (2 * seen - mean) > 0  # |seen - mean| < |seen|: the shift helps on validation
        shift = torch.where(keep, mean, torch.zeros_like(mean)).float()
        with torch.no_grad():
            wrapped[name].layer.bias.add_(shift.to(wrapped[name].layer.bias.dtype))
        shifts[name] = shift
    return shifts


def rounding_errors(model: nn.Module, wrapped: Mapping[str, QuantLayer], names: list[str], batches: Iterable[dict],
                    input_names: tuple[str, ...]) -> dict[str, list[torch.Tensor]]:
    """Per layer in ``names``, over one streamed pass of the model on ``batches``: the per-channel sum and sum
    of squares of (float layer - quantized layer) on the layer's actual input, and the count."""
    from ...train import forward, to_tensors

    stats: dict[str, list[torch.Tensor]] = {}

    def observer(name: str) -> Any:
        linear = isinstance(wrapped[name].layer, nn.Linear)

        def observe(module: QuantLayer, args: tuple[torch.Tensor, ...], y: torch.Tensor) -> None:
            if not module.enabled:
                return
            d = (module.layer(args[0]) - y).detach().double()
            rows = d.reshape(-1, d.shape[-1]) if linear else d.transpose(0, 1).reshape(d.shape[1], -1).T
            new = [rows.sum(0), (rows * rows).sum(0), torch.tensor(float(rows.shape[0]), dtype=torch.float64)]
            stats[name] = new if name not in stats else [a + b for a, b in zip(stats[name], new)]
        return observe

    hooks = [wrapped[n].register_forward_hook(observer(n)) for n in names]
    try:
        with torch.no_grad():
            for inputs in batches:
                forward(model.eval(), to_tensors(inputs), input_names)
    finally:
        for h in hooks:
            h.remove()
    return stats


def shift_biases(wrapped: Mapping[str, QuantLayer], shifts: Mapping[str, torch.Tensor], sign: float) -> None:
    """Add (sign 1) or take back (sign -1) the bias correction ``shifts`` of those layers."""
    with torch.no_grad():
        for name, shift in shifts.items():
            bias = wrapped[name].layer.bias
            bias.add_(sign * shift.to(bias.dtype))
