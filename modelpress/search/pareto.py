"""Objectives, the Pareto front and the choice of one candidate, over trial records.

A record is the plain summary the study keeps per trial: ``state`` (complete, pruned, failed),
``values`` (the ``Quantities`` the constraints limit, on validation data: the search decides on it) and
``objectives`` (objective name -> value to minimise, for complete trials). The constraints are checked by
``Constraints.check``, the one check ``run`` uses too. Everything here is a pure function of records.
"""
from __future__ import annotations

import math
from typing import Any

from ..constraints import Constraints, Quantities
from ..result import Result


def values_of(outcome: dict[str, Any]) -> Quantities:
    """The quantities the constraints limit, from a trial outcome: the validation score drop of a measured
    trial, or the subset (validation) numbers of a stopped one."""
    if outcome.get("result"):
        return Result.from_json(outcome["result"]).quantities("val")
    subset = outcome.get("subset") or {}
    return Quantities(score_drop=subset.get("score_drop"), size_bytes=subset.get("size_bytes"))


def feasible(record: dict[str, Any], constraints: Constraints) -> bool:
    return record["state"] == "complete" and not constraints.check(record["values"])


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(records: list[dict[str, Any]], objectives: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records no other record dominates (ties on every objective all stay)."""
    points = [(r, tuple(r["objectives"][o] for o in objectives)) for r in records]
    return [r for r, p in points if not any(dominates(q, p) for _, q in points)]


def choose(candidates: list[dict[str, Any]], objectives: tuple[str, ...], tolerance: float,
           references: list[dict[str, Any]] = ()) -> dict[str, Any] | None:
    """Lexicographic choice: keep the records within ``tolerance`` (relative) of the best first objective,
    then of the best second among those, and so on; the last objective is minimised exactly. When some
    candidates are no worse than every one of ``references`` (the single-technique defaults that meet the
    constraints) on every objective, the choice is made among those only."""
    pool = list(candidates)
    if not pool:
        return None
    covering = [r for r in pool if all(r["objectives"][o] <= ref["objectives"][o] for ref in references
                                       for o in objectives)]
    pool = covering or pool
    for i, name in enumerate(objectives):
        best = min(r["objectives"][name] for r in pool)
        slack = 0.0 if i == len(objectives) - 1 else tolerance * abs(best)
        pool = [r for r in pool if r["objectives"][name] <= best + slack]
    return min(pool, key=lambda r: (tuple(r["objectives"][o] for o in objectives), r["number"]))


def closest(records: list[dict[str, Any]], constraints: Constraints, keep: int) -> list[dict[str, Any]]:
    """The measured infeasible records that miss the constraints by the least (sum of relative excess)."""
    scored = []
    for r in records:
        if r["state"] not in ("complete", "pruned"):
            continue
        missed = constraints.check(r["values"])
        if missed:
            scored.append((sum(v.relative for v in missed), r["state"] != "complete", r["number"], r))
    return [r for *_, r in sorted(scored, key=lambda s: s[:3])[:keep]]


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
