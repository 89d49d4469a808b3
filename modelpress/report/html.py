"""``report.html`` for ``modelpress auto``: one self-contained file (inline CSS and SVG, no script, no
network) with the Pareto plots, the chosen recipe as YAML, per-layer information and every trial.

``render(summary)`` takes the summary that ``modelpress.search.summary.summarize`` builds.
"""
from __future__ import annotations

import json
from html import escape
from typing import Any

from .plots import scatter

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>modelpress auto: {task}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1240px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border: 1px solid #ddd; padding: 3px 6px; text-align: right; }}
td.text, th.text {{ text-align: left; }}
tr.chosen td {{ background: #efe7f7; font-weight: 600; }} tr.pareto td {{ background: #e8f6f1; }}
tr.infeasible td {{ color: #8a4b16; }} tr.failed td {{ color: #999; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 16px; }}
pre {{ background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; }}
.summary {{ font-size: 14px; line-height: 1.5; }}
</style></head><body>
<h1>modelpress auto: {task}</h1>
<div class="summary">{summary}</div>
{outcome}
<h2>Pareto plots</h2>
<div class="plots">{plot_latency}{plot_size}</div>
<h2>Pareto front</h2>
{pareto}
{layers}
<h2>Every trial</h2>
{trials}
{excluded}
{notes}
</body></html>
"""

COLUMNS = [("trial", "trial"), ("state", "state"), ("candidate", "candidate"), ("score", "score"),
           ("score_drop", "drop"), ("latency_ms", "latency ms"), ("latency_ms_batch1", "p50 ms @1"),
           ("size_bytes", "size bytes"), ("size_ratio", "× fp32 size"), ("violations", "constraints"),
           ("seconds", "seconds (est., limit)"), ("ended", "ended"), ("error", "error")]
TEXT = ("candidate", "state", "violations", "ended", "error")  # left-aligned columns


def seconds_cell(r: dict[str, Any]) -> str:
    """The trial's seconds, with the estimate made before it started and its time limit when known."""
    if r.get("seconds") is None:
        return "-"
    known = [f"{k} {r[f]:.0f}" for k, f in (("est.", "estimate_s"), ("limit", "limit_s")) if r.get(f) is not None]
    return f"{r['seconds']:.1f}" + (f" ({', '.join(known)})" if known else "")


def _cell(key: str, value: Any) -> str:
    if value is None or value == []:
        return "-"
    if key == "violations":
        return escape("; ".join(value))
    if key == "size_bytes":
        return f"{value:,}"
    if key == "score_drop":
        return f"{value:+.4f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(rows: list[dict[str, Any]], table_id: str) -> str:
    if not rows:
        return f'<p id="{table_id}">none yet</p>'
    head = "".join(f'<th class="{"text" if k in TEXT else ""}">{escape(t)}</th>' for k, t in COLUMNS)
    body = []
    for r in rows:
        cls = "chosen" if r["chosen"] else "pareto" if r["pareto"] else \
            "failed" if r["state"] in ("failed", "timeout", "skipped") else "infeasible" if not r["feasible"] else ""
        star = "★ " if r["chosen"] else ""
        cells = "".join(f'<td class="{"text" if k in TEXT else ""}">{star if k == "trial" else ""}'
                        f'{seconds_cell(r) if k == "seconds" else _cell(k, r.get(k))}</td>' for k, _ in COLUMNS)
        body.append(f'<tr class="{cls}" data-trial="{r["trial"]}">{cells}</tr>')
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _kind(r: dict[str, Any]) -> str:
    if r["chosen"]:
        return "chosen"
    if r["seed"] == "fp32":
        return "baseline"
    return "front" if r["pareto"] else "feasible" if r["feasible"] else "infeasible"


def plots(summary: dict[str, Any]) -> tuple[str, str]:
    measured = [r for r in summary["trials"] if r["state"] == "complete"]
    points = [{"trial": r["trial"], "label": r["candidate"], "kind": _kind(r), "y": r["score"]} for r in measured]
    limit = summary["constraints"].get("max_score_drop")
    base = summary.get("baseline_score")
    hline = (base - limit, f"score limit (fp32 − {limit:g})") if limit is not None and base is not None else None
    batch = summary["latency_batch_size"]
    lat = scatter("plot-latency", [{**p, "x": r["latency_ms"]} for p, r in zip(points, measured)],
                  f"latency ms at batch {batch} (lower is better)", "score", hline=hline)
    size = scatter("plot-size", [{**p, "x": r["size_bytes"]} for p, r in zip(points, measured)],
                   "artifact size, bytes (log scale)", "score", log_x=True, hline=hline)
    return lat, size


def _layers(summary: dict[str, Any]) -> str:
    layers = summary.get("chosen_layers") or []
    if not layers:
        return ""
    keys = ["layer", "type_before", "type_after", "params_before", "params_after", "zeros", "distinct_values"]
    facts = summary.get("chosen_facts") or {}
    names = {r["layer"] for r in layers}
    # facts a technique recorded per layer (a mapping keyed by layer names) become columns
    per_layer = {k: v for k, v in facts.items() if isinstance(v, dict) and v and set(v) & names}

    def fact(value: Any) -> str:
        if value is None:
            return "-"
        return escape((value if isinstance(value, str) else json.dumps(value, default=str, separators=(",", ":")))[:120])

    head = "".join(f"<th class='text'>{escape(k)}</th>" for k in (*keys, *per_layer))
    body = "".join("<tr>" + "".join(f"<td class='text'>{_cell(k, r.get(k))}</td>" for k in keys)
                   + "".join(f"<td class='text'>{fact(v.get(r['layer']))}</td>" for v in per_layer.values()) + "</tr>"
                   for r in layers)
    facts_html = (f"<h3>What the techniques recorded</h3><pre>{escape(json.dumps(facts, indent=1, default=str)[:20000])}</pre>"
                  if facts else "")
    return f'<h2>Per layer (chosen candidate)</h2><table id="layers"><tr>{head}</tr>{body}</table>{facts_html}'


def _outcome(summary: dict[str, Any]) -> str:
    if summary["chosen"]:
        c = summary["chosen"]
        return (f"<h2>Chosen: trial {c['trial']}</h2><p>{escape(c['candidate'])}. Reproduce it with "
                f"<code>modelpress run best/recipe.yaml</code>:</p><pre id='chosen-recipe'>{escape(summary['chosen_recipe'])}</pre>")
    missed = "".join(f"<li>{escape(k)}: the best trial ({v['trial']}) reached {v['best']:.4g}, short of the limit "
                     f"{v['limit']:.4g} by {v['short_by']:.4g}</li>" for k, v in summary["missed_by"].items())
    closest = "".join(f"<li>trial {r['trial']} {escape(r['candidate'])}: {escape('; '.join(r['violations']))}</li>"
                      for r in summary["closest"])
    return (f"<h2>Nothing meets the constraints yet</h2><ul id='missed'>{missed}</ul>"
            f"<p>Closest candidates:</p><ul id='closest'>{closest}</ul>")


def _excluded(summary: dict[str, Any]) -> str:
    """The techniques (or steps) the study left out after they failed on the model, and why."""
    items = [f"<li>{escape(str(e.get('text') or e.get('reason') or '-'))}</li>" for e in summary.get("excluded") or []]
    return f"<h2>Left out of this study</h2><ul id='excluded'>{''.join(items)}</ul>" if items else ""


def render(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    ended = {s: counts.get(s, 0) for s in ("complete", "pruned", "failed", "timeout", "skipped")}
    text = (f"Constraints: {escape(', '.join(f'{k} {v}' for k, v in summary['constraints'].items()) or 'none')}. "
            f"Objectives, minimised in this order: {escape(', '.join(summary['objectives']))}. "
            f"{sum(ended.values())} of {summary['trials_requested']} trials: "
            f"{ended['complete']} measured, {ended['pruned']} stopped early on a subset, {ended['failed']} failed, "
            f"{ended['timeout']} reached their time limit, {ended['skipped']} skipped; "
            f"{counts['feasible']} meet the constraints. Search space: {summary['space_size']:,} candidates over "
            f"{escape(', '.join(summary['techniques']) or 'no technique')}. Latency: paired ratio to fp32 at batch "
            f"{summary['latency_batch_size']} × the study's fp32 reference (ms).")
    notes = "".join(f"<li>{escape(n)}</li>" for n in summary.get("notes", []))
    lat, size = plots(summary)
    return PAGE.format(task=escape(summary["task"]), summary=text, outcome=_outcome(summary), plot_latency=lat,
                       plot_size=size, pareto=table(summary["pareto"], "pareto"), layers=_layers(summary),
                       trials=table(summary["trials"], "trials"), excluded=_excluded(summary),
                       notes=f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
