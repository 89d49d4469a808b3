"""Constraints, objectives, the Pareto front and the choice of one candidate, over trial records.

A record is the plain summary the study keeps per trial: ``state`` (complete, pruned, failed),
``values`` (the measured quantities below, None where not measured) and ``objectives`` (objective name
-> value to minimise, for complete trials). Everything here is a pure function of records.
"""
from __future__ import annotations

import math
from typing import Any

# constraint -> the measured quantity it limits
LIMITS = {"max_score_drop": "score_drop", "max_latency_ms": "latency_ms_batch1", "max_size_bytes": "size_bytes",
          "max_energy_j": "energy_j"}


def values_of(outcome: dict[str, Any]) -> dict[str, float | None]:
    """The quantities the constraints limit, from a trial outcome (subset numbers for stopped trials)."""
    result = outcome.get("result") or {}
    subset = outcome.get("subset") or {}
    lat1 = ((result.get("latency_ms") or {}).get("1") or {}).get("p50")
    return {"score_drop": result.get("score_drop", subset.get("score_drop")),
            "latency_ms_batch1": lat1,
            "size_bytes": result.get("size_bytes", subset.get("size_bytes")),
            "energy_j": result.get("energy_j_per_inference")}


def violations(constraints: Any, values: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each constraint the values miss: name, limit, value, by how much (absolute and relative)."""
    out = []
    for name, quantity in LIMITS.items():
        limit, value = getattr(constraints, name), values.get(quantity)
        if limit is not None and value is not None and value > limit:
            out.append({"constraint": name, "limit": limit, "value": value, "excess": value - limit,
                        "relative": (value - limit) / max(abs(limit), 1e-12)})
    return out


def describe(v: dict[str, Any]) -> str:
    return f"{LIMITS[v['constraint']]} {v['value']:.4g} exceeds {v['constraint']} {v['limit']:.4g} by {v['excess']:.4g}"


def constraint_values(constraints: Any, values: dict[str, float | None]) -> list[float]:
    """For the sampler: one number per constraint, <= 0 when met (relative excess when missed)."""
    missed = {v["constraint"]: v["relative"] for v in violations(constraints, values)}
    return [missed.get(name, 0.0) for name in LIMITS]


def feasible(record: dict[str, Any], constraints: Any) -> bool:
    return record["state"] == "complete" and not violations(constraints, record["values"])


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


def closest(records: list[dict[str, Any]], constraints: Any, keep: int) -> list[dict[str, Any]]:
    """The measured infeasible records that miss the constraints by the least (sum of relative excess)."""
    scored = []
    for r in records:
        if r["state"] not in ("complete", "pruned"):
            continue
        missed = violations(constraints, r["values"])
        if missed:
            scored.append((sum(v["relative"] for v in missed), r["state"] != "complete", r["number"], r))
    return [r for *_, r in sorted(scored, key=lambda s: s[:3])[:keep]]


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
