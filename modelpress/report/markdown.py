"""``report.md``: the result of one run as a Markdown table a person can read."""
from __future__ import annotations

from typing import Any

from ..result import Result
from ..runtime import setting_label


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB"


def comparison(outputs: dict[str, dict[str, Any]]) -> str:
    """One line per compared output: the agreement measures its kind has."""
    parts = []
    for name, c in outputs.items():
        items = [f"max |diff| {c['max_abs_diff']:.2e}", f"cosine {c['cosine']:.5f}"]
        if "agreement" in c:
            items += [f"top-1 agreement {c['agreement']:.4f}", f"top-5 overlap {c['top5_overlap']:.4f}"]
            if c.get("decisive_agreement") is not None:
                items.append(f"top-1 agreement where fp32 decides {c['decisive_agreement']:.4f} "
                             f"({c['decisive_samples']} samples)")
        if c.get("nn_agreement") is not None:
            items.append(f"nearest-neighbour agreement {c['nn_agreement']:.4f}")
        parts.append((f"{name}: " if len(outputs) > 1 else "") + ", ".join(items))
    return "; ".join(parts)


def rows(result: Result) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the Markdown report and the CLI table."""
    setting = setting_label(result.threads, result.streams)
    out = [("task", result.task), ("runtime", f"{result.runtime} ({result.device}, {setting})"),
           ("score (test)", f"{result.score:.4f} (fp32 {result.baseline_score:.4f}, drop {result.score_drop:+.4f})"),
           ("score (validation)", f"{result.val_score:.4f} (fp32 {result.baseline_val_score:.4f}, "
                                  f"drop {result.val_score_drop:+.4f})"),
           ("size", f"{_mb(result.size_bytes)} (fp32 {_mb(result.baseline_size_bytes)}, ratio {result.size_ratio:.3f})")]
    for bs, lat in result.latency_ms.items():
        q1, q3 = result.latency_ratio_iqr[bs]
        out.append((f"latency batch {bs}", f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f}, p99 {lat['p99']:.3f}; "
                                           f"ratio to fp32 {result.latency_ratio[bs]:.3f} (IQR {q1:.3f}-{q3:.3f}: "
                                           f"{result.latency_verdict[bs]})"))
    out.append(("fidelity to fp32", comparison(result.fidelity)))
    out.append(("parity to compressed torch model", comparison(result.parity)))
    out.append(("peak memory", _mb(result.peak_memory_bytes)))
    energy = result.energy_j_per_inference
    out.append(("energy", f"{energy:.3e} J/inference" if energy is not None else f"unavailable: {result.energy_note}"))
    out.append(("constraints", "met" if result.constraints_met else "; ".join(result.violations)))
    return out


def render(result: Result) -> str:
    lines = [f"# modelpress result: {result.task}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows(result)]
    if result.recipe:
        lines += ["", "## Steps", ""] + [f"- `{step}`" for step in result.recipe]
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
