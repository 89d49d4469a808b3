"""Constraints on a result, and the one check that ``run``, ``auto``, the search summary and the reports use.

A constraint limits a measured quantity (``Quantities``): the score drop, the median latency at batch 1,
the stored size, the energy per inference (``max_*``: at most), and the fidelity to the fp32 model
(``min_fidelity``: at least; on by default, so an artifact whose outputs collapsed is never reported as
meeting its constraints). A quantity that was not measured (None) meets every limit.

>>> c = Constraints(max_score_drop=0.01, max_size_bytes=1000)
>>> [v.describe() for v in c.check(Quantities(score_drop=0.02, size_bytes=800))]
['score_drop 0.02 exceeds max_score_drop 0.01 by 0.01']
>>> [v.describe() for v in c.check(Quantities(score_drop=float("nan")))]
['score_drop is nan (not a usable measurement), so max_score_drop cannot be met']
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from .config import check

# constraint -> the measured quantity it limits (and its name in Quantities)
LIMITS = {"max_score_drop": "score_drop", "max_latency_ms": "latency_ms_batch1", "max_size_bytes": "size_bytes",
          "max_energy_j": "energy_j", "min_fidelity": "fidelity"}
MIN_FIDELITY = 0.8  # default floor: below it an artifact's outputs have collapsed, whatever the task's score


@dataclass(frozen=True)
class Quantities:
    """The measured quantities constraints limit (None: not measured)."""

    score_drop: float | None = None  # in the task metric's units, positive = worse than fp32
    latency_ms_batch1: float | None = None  # median latency at batch size 1
    size_bytes: float | None = None
    energy_j: float | None = None  # joules per inference
    # the artifact's worst output against the fp32 model: top-1 agreement for class scores where the fp32 model
    # decides (task.decisive_agreement), cosine otherwise
    fidelity: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Violation:
    constraint: str
    limit: float
    value: float

    @property
    def quantity(self) -> str:
        return LIMITS[self.constraint]

    @property
    def at_least(self) -> bool:
        """A floor (``min_*``) rather than a ceiling."""
        return self.constraint.startswith("min_")

    @property
    def excess(self) -> float:
        return self.limit - self.value if self.at_least else self.value - self.limit

    @property
    def relative(self) -> float:
        """The excess as a share of the limit (infinite for a NaN value)."""
        return self.excess / max(abs(self.limit), 1e-12) if math.isfinite(self.value) else math.inf

    def describe(self) -> str:
        if not math.isfinite(self.value):
            return f"{self.quantity} is {self.value} (not a usable measurement), so {self.constraint} cannot be met"
        verb = "is below" if self.at_least else "exceeds"
        return f"{self.quantity} {self.value:.4g} {verb} {self.constraint} {self.limit:.4g} by {self.excess:.4g}"

    def to_json(self) -> dict[str, float | str]:
        return {"constraint": self.constraint, "limit": self.limit, "value": self.value, "excess": self.excess,
                "relative": self.relative}


@dataclass(frozen=True)
class Constraints:
    max_score_drop: float | None = None
    max_latency_ms: float | None = None  # median latency at batch size 1
    max_size_bytes: int | None = None
    max_energy_j: float | None = None  # joules per inference
    min_fidelity: float | None = MIN_FIDELITY  # worst output's agreement (or cosine) with the fp32 model

    def __post_init__(self) -> None:
        for name in LIMITS:
            value = getattr(self, name)
            check(value is None or math.isfinite(value), f"{name} must be a finite number, got {value}: a NaN or "
                  f"infinite limit can never be missed. Remove it to set no limit.")
        drop = self.max_score_drop
        check(drop is None or drop >= 0, f"max_score_drop must be >= 0 (the most score the model may lose), got {drop}: "
              f"a negative limit asks the compressed model to beat the fp32 model, which compression cannot promise.")
        for name in ("max_latency_ms", "max_size_bytes", "max_energy_j"):
            value = getattr(self, name)
            check(value is None or value > 0, f"{name} must be positive, got {value}.")
        check(self.min_fidelity is None or 0 <= self.min_fidelity <= 1,
              f"min_fidelity must be between 0 and 1 (top-1 agreement or cosine with the fp32 model), got "
              f"{self.min_fidelity}; null turns the check off.")

    def check(self, measured: Quantities) -> list[Violation]:
        """Each constraint ``measured`` misses, with by how much. A limited quantity measured as NaN (a model
        whose outputs are NaN scores NaN) misses its limit: it can never pass as met."""
        out = []
        for name, quantity in LIMITS.items():
            limit, value = getattr(self, name), getattr(measured, quantity)
            if limit is None or value is None:
                continue
            met = value >= limit if name.startswith("min_") else value <= limit  # False for NaN either way
            if not met:
                out.append(Violation(name, float(limit), float(value)))
        return out

    def margins(self, measured: Quantities) -> list[float]:
        """For a sampler: one number per constraint, <= 0 when met (the relative excess when missed)."""
        missed = {v.constraint: v.relative for v in self.check(measured)}
        return [missed.get(name, 0.0) for name in LIMITS]
