"""What a search found, as plain data (``result.json``), Markdown (``report.md``) and a terminal table.

The summary is rebuilt from the study's records after every trial, so the folder always holds the
best candidate so far, the Pareto front and, when nothing meets the constraints, which constraint
failed by how much and the closest candidates.
"""
from __future__ import annotations

from typing import Any

import yaml

from ..constraints import LIMITS
from ..result import Result
from . import pareto


STATES = ("complete", "pruned", "failed", "timeout", "skipped")  # how a trial can end (row "state", counts)


def state_of(record: dict[str, Any]) -> str:
    """The record's state, or the outcome's when it says more (a timeout or a skipped trial is kept by
    the study as failed or pruned)."""
    status = (record.get("outcome") or {}).get("status")
    return status if status in ("timeout", "skipped") else record["state"]


def ended(outcome: dict[str, Any], state: str) -> str:
    """One short sentence on why the trial ended: the outcome's own ``ended``, or, for an outcome written
    before trials said so, one derived from its status, error and subset evaluation."""
    if outcome.get("ended"):
        return str(outcome["ended"])
    error = (str(outcome.get("error") or "").strip().splitlines() or [""])[0]
    subset = outcome.get("subset") or {}
    if state == "complete":
        return "measured"
    if state == "pruned":
        drop, threshold = subset.get("score_drop"), subset.get("threshold")
        return ("stopped early on the validation subset" +
                (f" (drop {drop:.4g} over {threshold:.4g})" if drop is not None and threshold is not None else ""))
    if state == "timeout":
        limit = outcome.get("limit_s")
        return f"time limit{f' of {limit:g} s' if limit is not None else ''} reached" + (f": {error}" if error else "")
    return f"{'skipped' if state == 'skipped' else 'failed'}" + (f": {error}" if error else "")


def row(record: dict[str, Any], constraints: Any, front_numbers: set[int], chosen: int | None,
        latency_vs_deploy: dict[str, float] | None = None) -> dict[str, Any]:
    """One trial as a flat row for tables (``latency_vs_deploy``: see ``vs_deploy``)."""
    outcome = record["outcome"]
    state = state_of(record)
    result = outcome.get("result") or {}
    subset = outcome.get("subset") or {}
    values = record["values"]
    missed = constraints.check(values)
    return {
        "trial": record["number"], "state": state, "candidate": record["label"],
        # reported: the test score of a measured trial; decided on: the validation drop (values)
        "score": result.get("score", subset.get("score")), "score_drop": result.get("score_drop", values.score_drop),
        "val_score_drop": values.score_drop,
        "score_on": "test" if result else (f"{subset.get('samples')} validation samples" if subset else None),
        "latency_ms": record["objectives"].get("latency"), "latency_ms_batch1": values.latency_ms_batch1,
        "latency_ratio": result.get("latency_ratio"), "latency_verdict": result.get("latency_verdict"),
        "latency_vs_deploy": latency_vs_deploy,
        "size_bytes": values.size_bytes, "size_ratio": result.get("size_ratio"), "energy_j": values.energy_j,
        "feasible": record["state"] == "complete" and not missed, "pareto": record["number"] in front_numbers,
        "chosen": record["number"] == chosen, "violations": [v.describe() for v in missed],
        "error": outcome.get("error"), "seconds": (outcome.get("seconds") or {}).get("total"),
        "limit_s": outcome.get("limit_s"), "estimate_s": outcome.get("estimate_s"), "ended": ended(outcome, state),
        "reused_steps": outcome.get("reused_steps", 0), "cached": record.get("cached", False),
        "seed": record.get("seed"), "run": record.get("run"),
    }


def summarize(records: list[dict[str, Any]], recipe: Any, config: Any, space: Any, extra: dict[str, Any]) -> dict[str, Any]:
    from ..config import to_dict

    constraints = recipe.constraints
    measured = [r for r in records if not r.get("cached")]  # a repeat is the same measurement again
    ok = [r for r in measured if pareto.feasible(r, constraints)]
    front = sorted(pareto.front(ok, config.objectives), key=lambda r: tuple(r["objectives"][o] for o in config.objectives))
    defaults = [r for r in ok if str(r.get("seed") or "").startswith("default:")]
    chosen = pareto.choose(front, config.objectives, config.tie_tolerance, defaults)
    front_numbers = {r["number"] for r in front}
    number = chosen["number"] if chosen else None
    deploy = space.runtime_key(space.runtimes[0])
    refs = extra.get("reference_ms") or {}
    rows = [row(r, constraints, front_numbers, number, vs_deploy(r, space, refs, deploy)) for r in records]
    by_number = {r["trial"]: r for r in rows}
    counts = {s: sum(1 for r in measured if state_of(r) == s) for s in STATES}
    counts["repeats"] = len(records) - len(measured)
    summary: dict[str, Any] = {
        "task": recipe.task, "constraints": {k: v for k, v in to_dict(constraints).items() if v is not None},
        "objectives": list(config.objectives), "trials_requested": config.trials, "counts": {**counts, "feasible": len(ok)},
        "space_size": space.size(), "techniques": list(space.techniques), "deploy_runtime": deploy,
        "chosen": by_number[number] if chosen else None,
        "chosen_recipe": yaml.safe_dump(chosen["recipe"], sort_keys=False) if chosen else None,
        "chosen_layers": (chosen["outcome"].get("layers") or []) if chosen else [],
        "chosen_facts": _facts(chosen["outcome"].get("result") or {}) if chosen else {},
        "pareto": [by_number[r["number"]] for r in front],
        "closest": [] if ok else [by_number[r["number"]] for r in pareto.closest(measured, constraints, config.keep_closest)],
        "missed_by": {} if ok else missed_by(measured, constraints),
        "trials": rows, "notes": list(space.notes), **extra,
    }
    summary["excluded"] = [{**e, "text": excluded_text(e)} for e in summary.get("excluded") or []]
    return summary


def vs_deploy(record: dict[str, Any], space: Any, reference_ms: dict[str, dict[str, float]],
              deploy: str) -> dict[str, float] | None:
    """Per batch size: the candidate's latency over the fp32 model's on the deploy runtime setting ``deploy``
    (the recipe's runtime). The candidate's latency is its paired ratio to fp32 on its own runtime setting
    times that setting's fp32 reference, as in the latency objective; on the deploy setting this is the
    paired ratio itself. Between runtimes the two references were timed in different trials, not
    interleaved. None without a measured result or before both references exist."""
    ratios = ((record["outcome"] or {}).get("result") or {}).get("latency_ratio") or {}
    if not ratios or not record.get("candidate"):
        return None
    from .space import Candidate

    key = space.runtime_key(Candidate.from_json(record["candidate"]).runtime)
    if key == deploy:
        return {b: r for b, r in ratios.items() if r is not None}
    own, base = reference_ms.get(key) or {}, reference_ms.get(deploy) or {}
    out = {b: r * own[b] / base[b] for b, r in ratios.items() if r is not None and own.get(b) and base.get(b)}
    return out or None


def _facts(result: dict[str, Any]) -> dict[str, Any]:
    """What the techniques, exporter and storage reported for the chosen candidate (per-layer facts among them)."""
    return dict(Result.from_json(result).facts) if result else {}


def missed_by(records: list[dict[str, Any]], constraints: Any) -> dict[str, dict[str, Any]]:
    """Per constraint that no trial met: the best value any measured trial reached, and the gap."""
    out = {}
    for name, quantity in LIMITS.items():
        limit = getattr(constraints, name)
        measured = [(getattr(r["values"], quantity), r["number"]) for r in records
                    if r["state"] in ("complete", "pruned") and getattr(r["values"], quantity) is not None]
        if limit is None or not measured:
            continue
        floor = name.startswith("min_")  # a floor's best is the highest value, a ceiling's the lowest
        best, number = max(measured) if floor else min(measured)
        if (best < limit) if floor else (best > limit):
            out[name] = {"limit": limit, "best": best, "trial": number, "short_by": abs(best - limit)}
    return out


def excluded_text(e: dict[str, Any]) -> str:
    """One entry of ``summary["excluded"]``: 'prune (trial 3): ...', 'lowrank on tflite (trial 9): ...',
    'everything on executorch (trial 2): ...'."""
    settings = e.get("settings")
    technique = e.get("technique") and e["technique"] + (f"({', '.join(f'{k}={v}' for k, v in settings.items())})"
                                                         if settings else "")
    what = " on ".join(x for x in (technique or ("everything" if e.get("runtime") else "?"), e.get("runtime")) if x)
    return what + (f" (trial {e['trial']})" if e.get("trial") is not None else "") + f": {e.get('reason') or '-'}"


def _num(x: Any, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def table_rows(rows: list[dict[str, Any]], batch: str) -> list[list[str]]:
    out = []
    for r in rows:
        ratio = (r.get("latency_vs_deploy") or {}).get(batch)
        out.append([("★ " if r["chosen"] else "") + str(r["trial"]), r["candidate"], _num(r["score"]),
                    _num(r["score_drop"], "+.4f"), _num(r["latency_ms"], ".4f"), _num(ratio, ".3f"),
                    _num(r["size_bytes"], ",d") if r["size_bytes"] is not None else "-", _num(r["size_ratio"], ".3f")])
    return out


def headers(batch: str, deploy: str | None = None) -> list[str]:
    """``deploy``: the deploy runtime setting, which the "× fp32" latency column is against."""
    return ["trial", "candidate", "score", "drop", f"latency ms @{batch}", f"× fp32 on {deploy or 'deploy'} @{batch}",
            "size bytes", "× fp32 size"]


def time_text(r: dict[str, Any]) -> str:
    """A trial's seconds, with its estimate and time limit when known: '41 (est. 35, limit 300)'."""
    known = [f"{k} {r[f]:.0f}" for k, f in (("est.", "estimate_s"), ("limit", "limit_s")) if r.get(f) is not None]
    return _num(r.get("seconds"), ".0f") + (f" ({', '.join(known)})" if known else "")


def counts_text(counts: dict[str, int]) -> str:
    """'12 of 30 trials (8 measured, 2 stopped early, 1 failed, 1 reached its time limit, 0 skipped; ...'"""
    parts = [f"{counts.get(s, 0)} {w}" for s, w in (("complete", "measured"), ("pruned", "stopped early"),
             ("failed", "failed"), ("timeout", "reached its time limit"), ("skipped", "skipped"))]
    return (f"{', '.join(parts)}; {counts['feasible']} meet the constraints; "
            f"{counts.get('repeats', 0)} repeated proposals answered from the cache")


def markdown(summary: dict[str, Any]) -> str:
    batch = str(summary["latency_batch_size"])
    counts = summary["counts"]
    lines = [f"# modelpress auto: {summary['task']}", "",
             f"Constraints: {', '.join(f'{k} {v}' for k, v in summary['constraints'].items()) or 'none'}. "
             f"Objectives (minimised, in this order): {', '.join(summary['objectives'])}. "
             f"Trials: {sum(counts.get(s, 0) for s in STATES)} of {summary['trials_requested']} "
             f"({counts_text(counts)}). "
             f"Latency is at batch {batch}: the paired ratio to fp32 times the study's fp32 reference on the "
             f"candidate's runtime; '× fp32 on {summary.get('deploy_runtime')}' is that latency over the fp32 model's "
             f"on the deploy runtime (the recipe's), so a faster runtime counts as a gain.", ""]
    if summary["chosen"]:
        lines += ["## Chosen", "", f"Trial {summary['chosen']['trial']}: {summary['chosen']['candidate']}. "
                  f"Reproduce it with `modelpress run best/recipe.yaml`.", "", "```yaml", summary["chosen_recipe"].rstrip(), "```", ""]
    else:
        lines += ["## Nothing meets the constraints", ""]
        lines += [f"- {k}: the best trial ({v['trial']}) reached {v['best']:.4g}, short of {v['limit']:.4g} by "
                  f"{v['short_by']:.4g}" for k, v in summary["missed_by"].items()]
        lines += ["", "Closest candidates:", ""]
        lines += [f"- trial {r['trial']} {r['candidate']}: {'; '.join(r['violations'])}" for r in summary["closest"]]
        lines.append("")
    for title, rows in (("Pareto front", summary["pareto"]), ("Every trial", summary["trials"])):
        every = title == "Every trial"  # which also says how long each trial took and why it ended
        head = headers(batch, summary.get("deploy_runtime")) + ["state"] + (["time (s)", "ended"] if every else [])
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r, cells in zip(rows, table_rows(rows, batch)):
            state = r["state"] + ("" if r["feasible"] or r["state"] != "complete" else " (misses constraints)")
            cells = cells + [state] + ([time_text(r), r.get("ended") or "-"] if every else [])
            lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
        lines.append("")
    if summary.get("excluded"):
        lines += ["## Left out of this study", ""] + [f"- {e.get('text') or excluded_text(e)}" for e in summary["excluded"]] + [""]
    if summary["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    return "\n".join(lines)
