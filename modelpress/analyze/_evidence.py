"""Measured facts the advice is built from: shares per layer kind, time per kind, tolerant layers.

Kinds: ``conv`` (dense and grouped convolutions), ``depthwise``, ``linear`` (outside attention),
``attention`` (the q/k/v/o projections of an attention block and its own products, softmax and
reshapes), ``norm``, ``other``; ``layout`` is time in nodes the runtime inserted (layout reorders).
"""
from __future__ import annotations

from typing import Any

SPEED_KINDS = ("conv", "depthwise", "linear", "attention")


def row_kind(row: dict[str, Any]) -> str:
    return "attention" if row["kind"] == "linear" and row.get("in_attention") else row["kind"]


def shares(table: dict[str, Any], field: str) -> dict[str, float]:
    """Share of ``params`` or ``macs`` per kind (sums to 1 when the model has any)."""
    total = table["totals"][field] or 1
    out: dict[str, float] = {}
    for r in table["rows"]:
        out[row_kind(r)] = out.get(row_kind(r), 0.0) + r[field] / total
    return out


def batch_profile(profile: dict[str, Any] | None, batch: str | None = None) -> dict[str, Any] | None:
    """One batch size's profile (``batch``, else the smallest), or None when there is no profile."""
    if not profile or "batches" not in profile or not profile["batches"]:
        return None
    batches = profile["batches"]
    key = batch if batch in batches else min(batches, key=int)
    return {"batch_size": int(key), **batches[key]}


def time_shares(table: dict[str, Any], prof: dict[str, Any] | None) -> dict[str, float]:
    """Share of the measured kernel time per kind (from the profile's per-layer times)."""
    if not prof:
        return {}
    kind_of = {r["module"]: row_kind(r) for r in table["rows"]}
    total = sum(prof["layers"].values()) or 1.0
    out: dict[str, float] = {}
    for layer, us in prof["layers"].items():
        kind = "layout" if layer == "(runtime-inserted)" else kind_of.get(layer, "other")
        out[kind] = out.get(kind, 0.0) + us / total
    return out


def layer_time_shares(table: dict[str, Any], prof: dict[str, Any] | None) -> dict[str, float]:
    if not prof:
        return {}
    total = sum(prof["layers"].values()) or 1.0
    return {layer: us / total for layer, us in prof["layers"].items()}


def probed(sens: dict[str, Any] | None, probe: str) -> bool:
    """Whether the sensitivity ran ``probe`` (it may have been left out, or sensitivity skipped)."""
    return bool(sens) and "layers" in sens and probe in sens.get("probes", {})


def drops(sens: dict[str, Any] | None, probe: str) -> dict[str, float]:
    """Layer -> measured score drop for ``probe`` (layers the probe could not run on are absent)."""
    if not sens or "layers" not in sens:
        return {}
    return {entry["layer"]: entry["results"][probe]["drop"] for entry in sens["layers"]
            if probe in entry["results"] and "drop" in entry["results"][probe]}


def split_tolerant(sens: dict[str, Any] | None, probe: str, layers: list[str], tolerance: float
                   ) -> tuple[list[str], list[str], dict[str, float]]:
    """(layers whose drop <= tolerance, layers above it, their drops) among ``layers`` that were probed.
    A drop of one evaluation sample (the score's resolution) counts as tolerated: it cannot tell a layer
    that is sensitive from one sample near the decision boundary."""
    d = drops(sens, probe)
    limit = max(tolerance, (sens or {}).get("resolution") or 0.0) + 1e-12
    probed = [n for n in layers if n in d]
    ok = [n for n in probed if d[n] <= limit]
    bad = [n for n in probed if d[n] > limit]
    return ok, bad, {n: round(d[n], 4) for n in probed}


def layers_of(table: dict[str, Any], *kinds: str, min_param_share: float = 0.0) -> list[str]:
    return [r["module"] for r in table["rows"] if row_kind(r) in kinds and "(own ops)" not in r["name"]
            and r["param_share"] >= min_param_share]


def pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def half_rank_mac_ratio(row: dict[str, Any]) -> float | None:
    """MACs after / before for a linear layer split at half rank: r (m + n) / (m n), r = min(m, n) / 2."""
    detail = row.get("detail", "")
    if row["kind"] != "linear" or "→" not in detail:
        return None
    n_in, n_out = (int(x) for x in detail.split("→"))
    r = max(1, min(n_in, n_out) // 2)
    return r * (n_in + n_out) / (n_in * n_out)
