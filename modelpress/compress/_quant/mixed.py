"""Accuracy-aware mixed precision: rank layers by how much quantizing each one alone disturbs the model's
output, then return the most sensitive layers to higher precision, one at a time, until the score drop holds.

Decide (``sensitivity``, ``fallback``) is kept apart from acting on the graph: the result is a list of
layer names that stay at the higher precision.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import nn

from .layers import QuantLayer


def sensitivity(model: nn.Module, wrapped: Mapping[str, QuantLayer], batches: Iterable[dict],
                input_names: tuple[str, ...]) -> dict[str, float]:
    """Layer -> relative output error (``compress.sensitivity``: every output) with only that layer quantized."""
    from ..sensitivity import OutputProbe

    for q in wrapped.values():
        q.enabled = False
    probe = OutputProbe(model, list(batches), input_names)  # the float model's outputs
    scores = {}
    for name, q in wrapped.items():
        q.enabled = True
        scores[name] = probe.error()
        q.enabled = False
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
