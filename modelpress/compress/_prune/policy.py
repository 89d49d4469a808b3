"""Structured-pruning policy: how many units (channels or heads) each group loses, and which.

- ``layer`` scope: every group loses ``round(units * ratio)`` of its lowest-scoring units.
- ``global`` scope: scores are divided by their group's mean, then the lowest ``ratio`` share of all
  units across groups goes, with at most ``GLOBAL_MAX_GROUP_RATIO`` of any one group.
- ``round_to``: a channel group keeps a multiple of ``round_to`` channels (nearest, at least
  ``round_to``); a group with no more than ``round_to`` channels is left whole.
- A target in parameters or MACs is met by bisection on the channel ratio (:func:`solve`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .._graph import Graph
from ...errors import ConfigError

GLOBAL_MAX_GROUP_RATIO = 0.9


def round_keep(keep: int, units: int, round_to: int) -> int:
    """The channel count to keep once rounded to a multiple of ``round_to``."""
    if round_to <= 1:
        return keep
    if units <= round_to:
        return units
    return min(units, max(round_to, round_to * math.floor(keep / round_to + 0.5)))


def _keep_counts_layer(graph: Graph, ratio: float, round_to: int) -> list[int]:
    counts = []
    for g in graph.groups:
        keep = g.units - math.floor(g.units * ratio + 0.5)
        if keep <= 0:
            what = f"every head of '{g.heads_of}'" if g.heads_of else f"every channel of '{g.root}'"
            raise ConfigError(
                f"ratio {ratio:g} would remove {what} ({g.units} {'heads' if g.heads_of else 'channels'}). "
                f"Lower the ratio, or leave the layer out with exclude: ['{g.heads_of or g.root}'].")
        counts.append(keep if g.heads_of else round_keep(keep, g.units, round_to))
    return counts


def _keep_counts_global(graph: Graph, scores: list[torch.Tensor], ratio: float, round_to: int) -> list[int]:
    normalized = [s / s.mean().clamp_min(1e-12) for s in scores]
    caps = [g.units - max(1, math.ceil(g.units * (1 - GLOBAL_MAX_GROUP_RATIO))) for g in graph.groups]
    order = sorted(((float(v), gi) for gi, s in enumerate(normalized) for v in s.tolist()))
    budget = math.floor(sum(g.units for g in graph.groups) * ratio + 0.5)
    removed = [0] * len(graph.groups)
    for _, gi in order:
        if budget == 0:
            break
        if removed[gi] < caps[gi]:
            removed[gi] += 1
            budget -= 1
    return [g.units - r if g.heads_of else round_keep(g.units - r, g.units, round_to)
            for g, r in zip(graph.groups, removed)]


def plan(graph: Graph, scores: list[torch.Tensor], ratio: float, scope: str, round_to: int) -> dict[int, list[int]]:
    """Root channel indices to remove from each group (lowest unit scores first)."""
    if scope == "layer":
        keeps = _keep_counts_layer(graph, ratio, round_to)
    else:
        keeps = _keep_counts_global(graph, scores, ratio, round_to)
    removed = {}
    for gi, (g, s, keep) in enumerate(zip(graph.groups, scores, keeps)):
        drop_units = torch.argsort(s, stable=True)[: g.units - keep].tolist()
        removed[gi] = sorted(u * g.unit + j for u in drop_units for j in range(g.unit))
    return removed


def solve(removed_share: Callable[[float], float], goal: float, steps: int = 14) -> float:
    """The channel ratio in [0, 0.99] whose plan removes the share ``goal`` of a cost (parameters or
    MACs), by bisection; ``removed_share(ratio)`` raises ConfigError where a ratio is infeasible."""
    lo, hi = 0.0, 0.99
    best, best_err = 0.0, goal
    for _ in range(steps):
        mid = (lo + hi) / 2
        try:
            share = removed_share(mid)
        except ConfigError:
            hi = mid
            continue
        if abs(share - goal) < best_err:
            best, best_err = mid, abs(share - goal)
        if share < goal:
            lo = mid
        else:
            hi = mid
    return best
