"""Accuracy-aware mixed precision: rank layers by how much quantizing each one alone disturbs the model's
output, then return the most sensitive layers to higher precision, one at a time, until the score drop holds.

Decide (``sensitivity``, ``fallback``) is kept apart from acting on the graph: the result is a list of
layer names that stay at the higher precision.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .layers import QuantLayer


def _outputs(model: nn.Module, batches: list[dict], input_names: tuple[str, ...]) -> list[np.ndarray]:
    from ...train import forward, to_tensors

    outs = []
    with torch.no_grad():
        for b in batches:
            out = forward(model.eval(), to_tensors(b), input_names)
            outs.append((out[0] if isinstance(out, (tuple, list)) else out).float().numpy())  # the scored output
    return outs


def sensitivity(model: nn.Module, wrapped: Mapping[str, QuantLayer], batches: Iterable[dict],
                input_names: tuple[str, ...]) -> dict[str, float]:
    """Layer -> output noise-to-signal ratio (squared error / squared output) with only that layer quantized."""
    batches = list(batches)
    for q in wrapped.values():
        q.enabled = False
    reference = _outputs(model, batches, input_names)
    signal = sum(float((r.astype(np.float64) ** 2).sum()) for r in reference) or 1.0
    scores = {}
    for name, q in wrapped.items():
        q.enabled = True
        out = _outputs(model, batches, input_names)
        q.enabled = False
        scores[name] = sum(float(((o - r).astype(np.float64) ** 2).sum()) for o, r in zip(out, reference)) / signal
    for q in wrapped.values():
        q.enabled = True
    return scores


def fallback(order: list[str], demote: Callable[[str], None], score_drop: Callable[[], float],
             max_score_drop: float) -> tuple[list[str], float]:
    """``demote`` layers in ``order`` (most sensitive first) until ``score_drop()`` <= ``max_score_drop``.

    Returns the demoted layers and the final drop (which may still exceed the limit once every layer is
    demoted: then quantization is not what costs the score).
    """
    fell: list[str] = []
    drop = score_drop()
    for name in order:
        if drop <= max_score_drop:
            break
        demote(name)
        fell.append(name)
        drop = score_drop()
    return fell, drop
