"""The search's summary, report.md and report.html on a fake study (no model, no search): how long each
trial took against its estimate and time limit, why it ended (also for outcomes written before trials
said so), the trials that reached their time limit or were skipped, and the techniques left out."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from modelpress.constraints import Constraints
from modelpress.report.html import render
from modelpress.search import pareto
from modelpress.search.summary import markdown, summarize

RECIPE = {"task": "digits", "steps": [], "export": {"format": "onnx"}, "runtime": {"backend": "onnxruntime"}}
EXCLUDED = [{"technique": "prune", "trial": 3, "reason": "failed on this model: AttributeError: no attribute 'x'"}]


def record(number: int, state: str, outcome: dict, seed: str | None = None, latency: float | None = None,
           label: str | None = None) -> dict:
    """A study record as ``study.records`` returns it (the optuna state, the outcome as the trial wrote it)."""
    return {"number": number, "state": state, "label": label or f"candidate {number}", "candidate": None,
            "recipe": RECIPE, "objectives": {"latency": latency, "size": 1000.0 - number} if latency else {},
            "values": pareto.values_of(outcome), "outcome": outcome, "seed": seed, "cached": False, "run": 1}


def measured(drop: float, seconds: float, **more) -> dict:
    return {"status": "complete", "subset": {"samples": 128, "score": 0.9, "score_drop": drop, "size_bytes": 900},
            "seconds": {"total": seconds}, **more}


def records() -> list[dict]:
    return [
        record(0, "complete", measured(0.0, 10.0), seed="fp32", latency=2.0),
        # written before trials said why they ended: derived from the status, subset and error
        record(1, "pruned", {"status": "pruned", "subset": {"samples": 128, "score_drop": 0.08, "threshold": 0.03},
                             "seconds": {"total": 4.0}}, seed="default:noise"),
        record(2, "failed", {"status": "failed", "error": "ValueError: bad shape\n  more lines", "seconds": {"total": 1.5}},
               seed="default:shrink"),
        # written by trials that say why they ended, how long they were allowed and what was expected
        record(3, "failed", {"status": "failed", "error": "AttributeError: no attribute 'x'", "seconds": {"total": 2.0},
                             "ended": "failed in prune: AttributeError: no attribute 'x'", "limit_s": 300.0,
                             "estimate_s": None}, seed="default:prune"),
        record(4, "failed", {"status": "timeout", "error": "time limit", "seconds": {"total": 312.4},
                             "ended": "time limit of 300 s reached while applying lowrank", "limit_s": 300.0,
                             "estimate_s": 120.0}),
        record(5, "pruned", {"status": "skipped", "seconds": {"total": 0.0}, "limit_s": None, "estimate_s": 80.0,
                             "ended": "skipped: prune failed on this model in trial 3"}),
        record(6, "complete", measured(0.004, 55.0, ended="measured", limit_s=300.0, estimate_s=60.0), latency=1.0,
               label="shrink(rank_ratio=0.5)"),
    ]


def summary_of(recs: list[dict], excluded: list[dict] | None = None) -> dict:
    recipe = SimpleNamespace(task="digits", constraints=Constraints(max_score_drop=0.01))
    config = SimpleNamespace(objectives=("latency", "size"), trials=8, tie_tolerance=0.03, keep_closest=3)
    space = SimpleNamespace(size=lambda: 12, techniques=["shrink", "noise", "prune"], notes=[],
                            runtimes=[{"backend": "onnxruntime"}], runtime_key=lambda r: r["backend"])
    extra = {"latency_batch_size": 8, "baseline_score": 0.95, "reference_ms": {}, "runs": 1, "final": True}
    if excluded is not None:
        extra["excluded"] = excluded
    return summarize(recs, recipe, config, space, extra)


@pytest.fixture
def summary() -> dict:
    return summary_of(records(), EXCLUDED)


def test_rows_say_why_each_trial_ended_and_how_long_it_took(summary):
    rows = {r["trial"]: r for r in summary["trials"]}
    assert rows[0]["ended"] == "measured" and rows[0]["limit_s"] is None and rows[0]["seconds"] == 10.0
    assert rows[1]["ended"] == "stopped early on the validation subset (drop 0.08 over 0.03)"
    assert rows[2]["ended"] == "failed: ValueError: bad shape"  # the error's first line
    assert rows[3]["ended"] == "failed in prune: AttributeError: no attribute 'x'"
    assert rows[4]["state"] == "timeout" and rows[4]["ended"].startswith("time limit of 300 s reached")
    assert (rows[4]["seconds"], rows[4]["limit_s"], rows[4]["estimate_s"]) == (312.4, 300.0, 120.0)
    assert rows[5]["state"] == "skipped" and rows[5]["estimate_s"] == 80.0 and not rows[5]["feasible"]
    assert rows[6]["feasible"] and summary["chosen"]["trial"] == 6
    assert summary["counts"] == {"complete": 2, "pruned": 1, "failed": 2, "timeout": 1, "skipped": 1,
                                 "repeats": 0, "feasible": 2}


@pytest.mark.parametrize("outcome, state, text", [
    ({"status": "failed"}, "failed", "failed"),
    ({"status": "timeout", "limit_s": 60.0}, "failed", "time limit of 60 s reached"),
    ({"status": "skipped", "error": "prune failed in trial 2"}, "pruned", "skipped: prune failed in trial 2"),
    ({"status": "pruned", "subset": {}}, "pruned", "stopped early on the validation subset"),
])
def test_ended_is_derived_for_outcomes_that_do_not_say(outcome, state, text):
    (row,) = summary_of([record(0, state, outcome)])["trials"]
    assert row["ended"] == text


def test_markdown_lists_time_and_ended_per_trial_and_what_was_left_out(summary):
    md = markdown(summary)
    assert ("Trials: 7 of 8 (2 measured, 1 stopped early, 2 failed, 1 reached its time limit, 1 skipped; "
            "2 meet the constraints") in md
    every = md.split("## Every trial")[1].split("##")[0]
    assert "| time (s) | ended |" in every
    line = next(r for r in every.splitlines() if r.startswith("| 4 |"))
    assert line.endswith("| timeout | 312 (est. 120, limit 300) | time limit of 300 s reached while applying lowrank |")
    assert next(r for r in every.splitlines() if r.startswith("| 0 |")).endswith("| complete | 10 | measured |")
    front = md.split("## Pareto front")[1].split("##")[0]
    assert "ended" not in front  # the front keeps its columns
    assert "## Left out of this study\n\n- prune (trial 3): failed on this model: AttributeError" in md


def test_markdown_of_a_study_without_exclusions_has_no_such_section():
    md = markdown(summary_of(records()[:3]))
    assert "Left out" not in md and "| 1 | candidate 1 |" in md


def test_html_shows_time_limit_estimate_ended_and_excluded(summary):
    html = render(summary)
    trials = html.split('<table id="trials">')[1].split("</table>")[0]
    timeout = trials.split('data-trial="4">')[1].split("</tr>")[0]
    assert "312.4 (est. 120, limit 300)" in timeout and "time limit of 300 s reached while applying lowrank" in timeout
    assert '<tr class="failed" data-trial="4">' in trials and '<tr class="failed" data-trial="5">' in trials
    skipped = trials.split('data-trial="5">')[1].split("</tr>")[0]
    assert "0.0 (est. 80)" in skipped and "skipped: prune failed on this model in trial 3" in skipped
    assert "stopped early on the validation subset (drop 0.08 over 0.03)" in trials
    assert "<th class=\"text\">ended</th>" in html and "seconds (est., limit)" in html
    assert "1 reached their time limit, 1 skipped" in html and "7 of 8 trials" in html
    excluded = html.split("<h2>Left out of this study</h2>")[1]
    assert excluded.startswith("<ul id='excluded'><li>prune (trial 3): failed on this model: AttributeError: "
                               "no attribute &#x27;x&#x27;</li></ul>")


def test_html_of_an_older_summary_still_renders(summary):
    old = {**summary, "counts": {k: summary["counts"][k] for k in ("complete", "pruned", "failed", "feasible")}}
    old["trials"] = [{k: v for k, v in r.items() if k not in ("ended", "limit_s", "estimate_s")} for r in summary["trials"]]
    del old["excluded"]
    html = render(old)
    assert "Left out" not in html and "0 reached their time limit, 0 skipped" in html
    row = html.split('<table id="trials">')[1].split('data-trial="0">')[1].split("</tr>")[0]
    assert "<td class=\"\">10.0</td>" in row
    assert "Trials: 5 of 8" in markdown(old)
