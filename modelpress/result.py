"""The Result of one run: built once by the pipeline, written as result.json (versioned by ``SCHEMA``).

Scores: ``score`` / ``baseline_score`` / ``score_drop`` are measured once on the task's test data (what is
reported); ``val_*`` on its validation data (what decisions such as the search's choice read). Latency:
per batch size, percentiles of both models, the median of per-round paired ratios (candidate / fp32,
timed interleaved), their interquartile range and a verdict: a ratio whose range holds 1.0 is "no
measurable difference". ``parity`` compares the artifact with the compressed torch model and ``fidelity``
with the fp32 torch model, per output. What the techniques, exporter and storage codec report goes to
``facts`` (written at the top level of result.json, as before).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .constraints import Quantities
from .fidelity import fidelity_of

SCHEMA = 2
FASTER, SLOWER, SAME = "faster", "slower", "no measurable difference"


def verdict(q1: float, q3: float) -> str:
    """From the interquartile range of paired ratios (candidate / baseline).

    >>> verdict(0.6, 0.7), verdict(0.9, 1.1), verdict(1.2, 1.3)
    ('faster', 'no measurable difference', 'slower')
    """
    return FASTER if q3 < 1.0 else SLOWER if q1 > 1.0 else SAME


def worst_fidelity(comparison: dict[str, dict[str, Any]] | None) -> float | None:
    """The lowest per-output fidelity measure (``fidelity.fidelity_of``: for class scores top-1 agreement where
    the fp32 model decides, cosine for other outputs).

    >>> worst_fidelity({"a": {"cosine": 0.9, "agreement": 0.7, "decisive_agreement": 0.95}, "b": {"cosine": 0.99}})
    0.95
    """
    values = [fidelity_of(c) for c in (comparison or {}).values()]
    values = [v for v in values if v is not None]
    return min(values) if values else None


@dataclass(frozen=True)
class Result:
    task: str
    recipe: list[dict[str, Any]]
    export: str
    runtime: str
    device: str
    threads: int
    streams: int
    score: float
    baseline_score: float
    score_drop: float
    val_score: float
    baseline_val_score: float
    val_score_drop: float
    latency_ms: dict[str, dict[str, float]]
    baseline_latency_ms: dict[str, dict[str, float]]
    latency_ratio: dict[str, float]
    latency_ratio_iqr: dict[str, list[float]]
    latency_verdict: dict[str, str]
    throughput_per_s: dict[str, float]
    size_bytes: int
    baseline_size_bytes: int
    peak_memory_bytes: int
    parity: dict[str, dict[str, Any]]
    fidelity: dict[str, dict[str, Any]]
    energy_j_per_inference: float | None
    energy_note: str | None
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.baseline_size_bytes

    @property
    def speedup_measured(self) -> dict[str, float]:
        return {bs: 1 / r for bs, r in self.latency_ratio.items()}

    @property
    def constraints_met(self) -> bool:
        return not self.violations

    def quantities(self, split: str = "test") -> Quantities:
        """What the constraints limit; the score drop on ``split`` ('val' for decisions, 'test' for reports)."""
        return Quantities(score_drop=self.val_score_drop if split == "val" else self.score_drop,
                          latency_ms_batch1=(self.latency_ms.get("1") or {}).get("p50"), size_bytes=self.size_bytes,
                          energy_j=self.energy_j_per_inference, fidelity=worst_fidelity(self.fidelity))

    def to_json(self) -> dict[str, Any]:
        """result.json: every field, the derived ones, and the facts at the top level."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "facts"}
        clash = sorted(set(self.facts) & set(data))
        if clash:
            raise ValueError(f"facts {clash} would overwrite result fields")
        return {"schema": SCHEMA, **data, "size_ratio": self.size_ratio, "speedup_measured": self.speedup_measured,
                "constraints_met": self.constraints_met, **self.facts}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        """The Result of a result.json written by this version (facts are the keys that are not fields)."""
        names = {f.name for f in fields(cls)}
        derived = {"schema", "size_ratio", "speedup_measured", "constraints_met"}
        known = {k: v for k, v in data.items() if k in names}
        facts = {k: v for k, v in data.items() if k not in names and k not in derived}
        return cls(**{**known, "facts": facts})
