"""``report.md``: the result of one run as a Markdown table a person can read."""
from __future__ import annotations

from typing import Any

from ..runtime import setting_label


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB"


def rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs shared by the Markdown report and the CLI table."""
    setting = f", {setting_label(result['threads'], result.get('streams') or 1)}" if result.get("threads") else ""
    out = [("task", result["task"]), ("runtime", f"{result['runtime']} ({result['device']}{setting})"),
           ("score", f"{result['score']:.4f} (fp32 {result['baseline_score']:.4f}, drop {result['score_drop']:+.4f})"),
           ("size", f"{_mb(result['size_bytes'])} (fp32 {_mb(result['baseline_size_bytes'])}, "
                    f"ratio {result['size_ratio']:.3f})")]
    for bs, lat in result["latency_ms"].items():
        out.append((f"latency batch {bs}", f"p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f}, p99 {lat['p99']:.3f}; "
                                           f"ratio to fp32 {result['latency_ratio'][bs]:.3f}"))
    par = result["parity"]
    out.append(("parity", f"max |diff| {par['max_abs_diff']:.2e}, top-1 agreement {par['agreement']:.4f}"))
    out.append(("peak memory", _mb(result["peak_memory_bytes"])))
    energy = result.get("energy_j_per_inference")
    out.append(("energy", f"{energy:.3e} J/inference" if energy is not None else f"unavailable: {result.get('energy_note')}"))
    out.append(("constraints", "met" if result.get("constraints_met") else "; ".join(result.get("violations", []))))
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"# modelpress result: {result['task']}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows(result)]
    if result.get("recipe"):
        lines += ["", "## Steps", ""] + [f"- `{step}`" for step in result["recipe"]]
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"
