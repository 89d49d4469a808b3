"""Accuracy-aware mixed precision: rank layers by how much quantizing each one alone disturbs the model's
output, then return the fewest most sensitive layers to higher precision that make the score drop hold.

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


def fallback(order: list[str], demote: Callable[[str], Callable[[], None]], score_drop: Callable[[], float],
             max_score_drop: float, drop: float | None = None) -> tuple[list[str], float]:
    """The shortest prefix of ``order`` (most sensitive first) whose layers, demoted, bring ``score_drop()``
    within ``max_score_drop``, found in about 2 log2(n) scorings rather than n: prefixes of 1, 2, 4, ... layers
    until one holds, then bisection between the last two (the drop is taken to shrink as layers go back).
    ``demote(name)`` returns the function that undoes it; undoing goes in reverse order. ``drop``: the drop with
    nothing demoted, where it was scored already.

    Returns the demoted layers and the final drop (which may still exceed the limit once every layer is
    demoted: then quantization is not what costs the score).

    >>> harm = {"a": 0.5, "b": 0.3, "c": 0.1, "d": 0.05}
    >>> live, scored = set(harm), []
    >>> def demote(name):
    ...     live.discard(name)
    ...     return lambda: live.add(name)
    >>> def drop():
    ...     scored.append(len(live))
    ...     return sum(harm[n] for n in live)
    >>> fallback(list(harm), demote, drop, 0.12), sorted(live), len(scored)
    ((['a', 'b', 'c'], 0.05), ['d'], 5)
    """
    undo: list[Callable[[], None]] = []

    def to(k: int) -> float:  # demote exactly order[:k], then score
        while len(undo) > k:
            undo.pop()()
        while len(undo) < k:
            undo.append(demote(order[len(undo)]))
        return score_drop()

    drops = {0: score_drop() if drop is None else drop}
    if drops[0] <= max_score_drop or not order:
        return [], drops[0]
    lo, hi = 0, 1  # lo fails; find hi that holds
    while True:
        drops[hi] = to(hi)
        if drops[hi] <= max_score_drop or hi == len(order):
            break
        lo, hi = hi, min(2 * hi, len(order))
    while hi - lo > 1 and drops[hi] <= max_score_drop:
        mid = (lo + hi) // 2
        drops[mid] = to(mid)
        lo, hi = (lo, mid) if drops[mid] <= max_score_drop else (mid, hi)
    if len(undo) != hi:
        to(hi)  # the state of the answer (its drop is known)
    return order[:hi], drops[hi]
