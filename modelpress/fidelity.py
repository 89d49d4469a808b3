"""How far one model's outputs are from another's, on arrays (no models, no runtimes): what ``evaluate.compare``
reports per output, and the one number a collapse is judged by (``fidelity_of``). The exporters' own checks
(OpenVINO int8) use it too, which is why it lives apart from ``evaluate`` (that imports the runtimes).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .task import decisive_agreement, top1_credit

TOP_K = 5  # logits: the overlap of the top-5 classes (fewer when the model has fewer classes)


def compare_arrays(ref: np.ndarray, out: np.ndarray, kind: str) -> dict[str, Any]:
    """One output of two models, as ``[samples, values]`` arrays, compared by its ``kind`` (the measures
    ``evaluate.compare`` lists)."""
    denom = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-12)
    row: dict[str, Any] = {"kind": kind, "samples": len(ref), "max_abs_diff": float(np.abs(ref - out).max()),
                           "cosine": float(np.mean((ref * out).sum(1) / denom))}
    if kind == "logits":
        row["agreement"] = float(top1_credit(out, ref.argmax(-1)).mean())
        row["decisive_agreement"], row["decisive_samples"] = decisive_agreement(out, ref)
        k = min(TOP_K, ref.shape[1])
        top_ref = np.argsort(-ref, axis=1)[:, :k]
        top_out = np.argsort(-out, axis=1)[:, :k]
        row["top5_overlap"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out)]))
    elif kind == "embeddings":
        row["nn_agreement"] = nn_agreement(ref, out)
    return row


def nearest_neighbours(x: np.ndarray) -> np.ndarray:
    """Per row, the index of its nearest other row by cosine similarity.

    >>> nearest_neighbours(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])).tolist()
    [1, 0, 1]
    """
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def nn_agreement(ref: np.ndarray, out: np.ndarray) -> float | None:
    """Share of samples whose nearest neighbour is the same under both embeddings (None below 3 samples)."""
    if len(ref) < 3:
        return None
    return float(np.mean(nearest_neighbours(ref) == nearest_neighbours(out)))


def fidelity_of(row: dict[str, Any]) -> float | None:
    """The fidelity measure of one compared output: for class scores top-1 agreement on the samples the
    reference decides (``task.decisive_agreement``; on all samples when too few are decided), cosine otherwise.

    >>> fidelity_of({"cosine": 0.9, "agreement": 0.7, "decisive_agreement": 0.95}), fidelity_of({"cosine": 0.99})
    (0.95, 0.99)
    """
    if row.get("decisive_agreement") is not None:
        return row["decisive_agreement"]
    return row.get("agreement", row.get("cosine"))


def measure_of(row: dict[str, Any], reference: str = "the fp32 model") -> str:
    """What ``fidelity_of(row)`` measures, in words."""
    if row.get("decisive_agreement") is not None:
        return f"top-1 agreement where {reference} decides"
    return "top-1 agreement" if "agreement" in row else "cosine"
