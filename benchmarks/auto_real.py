"""``modelpress auto`` on the reference real models (issue 20): one search per model within a time budget.

    python benchmarks/auto_real.py --json auto_real.json --markdown auto_real.md
    python benchmarks/auto_real.py --models minilm --budget 1200 --trial-limit 300 --json minilm.json
    python benchmarks/auto_real.py --render minilm.json cnns.json --markdown auto_real.md   # runs nothing

Per model, a recipe (written as OUT/<model>.yaml): ONNX export on ONNX Runtime (``--threads``, 2 by default),
the search's default space, objectives latency then size, latency at batch 8 (16 for MiniLM: ``latency_batch_size``,
with bench batch sizes 1 and that one, timed as benchmarks/real.py times; ``--quick``: few timing rounds), and
the constraint:

- ``minilm``: its score is the mean cosine of the embeddings to the fp32 model's (fp32: 1.0); at most 0.001 lost;
- ``efficientnet-lite2``, ``mobilenet-v2``: the score is top-1 agreement with the fp32 model (the photos have no
  ImageNet labels; fp32: 1.0), so ``max_score_drop: 0.05`` asks for at least 95% agreement.

``modelpress auto OUT/<model>.yaml -o OUT/<model> --timeout BUDGET --force`` runs in a child process (a fresh
study each time; its log in OUT/<model>.log) and is killed if it runs past BUDGET + SLACK + the trial limit
(600 s without one). The search's own ``result.json`` is then read: the chosen candidate, the Pareto front, each
trial's seconds, time limit, estimate and why it ended, and every single-technique default (the trials seeded
``default:<technique>``). ``--trial-limit S`` sets ``search.trial_timeout_s`` (default: the search's own, a
quarter of the budget). Latency ratios are those the
search measured at the latency batch: the row's ``latency_vs_deploy`` where the search reports it, else
``latency_ratio`` (to fp32 on the same runtime).

Targets, per model (printed as PASS / FAIL lines, also in the JSON and Markdown):

(a) the search ends within its budget: wall time of the child process <= budget + SLACK_S (loading the task
    and the fp32 model, and writing the last reports, come on top of ``--timeout``), with a choice that meets
    the constraint as the search decides it (validation data); a second line says whether the choice's test
    score meets it too;
(b) the choice's latency ratio is <= every single-technique default that meets the constraint, and <= 0.45x
    fp32, at the latency batch;
(c) no trial ran past its time limit by more than 10% (seconds <= 1.1 x limit_s, for trials whose limit is
    known; N/A when no trial recorded one).

After each search the choice's artifact (on its own runtime) is timed again at the latency batch against what
the row's ratio is to: a fresh fp32 export on the search's runtime when the ratio is to fp32 as deployed, else on
the artifact's own runtime setting (``latency_recheck``, beside the row's ``latency_reported``; ``recheck_ok``:
within ±15%), as the other benchmarks check their ratios.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import QUICK, emit, machine, markdown as rows_table, ort_args, ort_title, parser, recheck_artifact, tempdir
from real import FULL
from real_cells import big_batch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("minilm", "efficientnet-lite2", "mobilenet-v2")
MAX_SCORE_DROP = {"minilm": 0.001, "efficientnet-lite2": 0.05, "mobilenet-v2": 0.05}
METRIC = {"minilm": "mean cosine to the fp32 embeddings"}  # the classifiers: top-1 agreement with fp32
BUDGET_S = 1200.0  # 20 minutes per search
SLACK_S = 60.0  # what the wall time may add to the budget: start-up, task and fp32 model, last reports
MAX_RATIO = 0.45  # the choice's latency at the latency batch, x fp32
OVERRUN = 1.10  # a trial may end at most 10% past its time limit
TRIALS = 200  # more than fit in the budget: the budget ends the search
TRIAL_LIMIT_FIELD = "trial_timeout_s"  # the search setting --trial-limit sets (absent: the search decides)
COMMAND = [sys.executable, "-m", "modelpress", "auto"]


def metric(model: str) -> str:
    return METRIC.get(model, "top-1 agreement with fp32")


def recipe_for(model: str, args: Any) -> dict[str, Any]:
    """The recipe of one model's search: default space, ONNX Runtime, the model's constraint and batch."""
    batch, bench = big_batch(model), QUICK if args.quick else FULL
    search: dict[str, Any] = {"trials": args.trials, "objectives": ["latency", "size"], "latency_batch_size": batch}
    if args.trial_limit is not None:
        search[TRIAL_LIMIT_FIELD] = args.trial_limit
    return {"task": model, "steps": [], "export": {"format": "onnx"},
            "runtime": {"backend": "onnxruntime", "device": "cpu", "threads": args.threads, "streams": args.streams,
                        "spinning": args.spinning},
            "constraints": {"max_score_drop": MAX_SCORE_DROP[model]},
            "bench": {"batch_sizes": [1, batch], "warmup": bench.warmup, "rounds": bench.rounds,
                      "runs_per_round": bench.runs_per_round},
            "search": search}


def check_recipes(args: Any) -> None:
    """Parse every model's recipe as ``modelpress auto`` will (strictly) before the first 20-minute search."""
    from modelpress.errors import ModelpressError
    from modelpress.recipe import parse_recipe

    for model in args.models.split(","):
        if model not in MAX_SCORE_DROP:
            raise SystemExit(f"unknown model '{model}': the reference models are {', '.join(MODELS)}")
        try:
            parse_recipe(recipe_for(model, args))
        except ModelpressError as e:
            raise SystemExit(f"the recipe for {model} is refused: {e}") from None


def run_search(model: str, args: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``modelpress auto`` on one model in a child process; returns its summary (None when it wrote none) and
    how the process went (wall seconds, exit)."""
    out = args.out / model
    recipe_path = args.out / f"{model}.yaml"
    args.out.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(yaml.safe_dump(recipe_for(model, args), sort_keys=False))
    (out / "result.json").unlink(missing_ok=True)  # an earlier run's, never read as this one's
    cmd = [*COMMAND, str(recipe_path), "-o", str(out), "--timeout", f"{args.budget:g}", "--force"]
    kill_after = args.budget + args.slack + (args.trial_limit or 600.0)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}  # torch's threads in the trials, as the runtime's
    started = time.perf_counter()
    with open(args.out / f"{model}.log", "w") as log:
        child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                 cwd=ROOT)
        try:
            code = child.wait(timeout=kill_after)
            exit_ = "ok" if code == 0 else f"exit status {code}"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            exit_ = f"killed after {kill_after:.0f} s"
    run = {"wall_s": round(time.perf_counter() - started, 1), "exit": exit_, "output": str(out),
           "command": " ".join(cmd), "log": str(args.out / f"{model}.log")}
    path = out / "result.json"
    return (json.loads(path.read_text()) if path.exists() else None), run


def ratio_at(row: dict[str, Any], batch: str) -> tuple[float | None, str]:
    """The row's latency ratio at ``batch`` and what it is to: ``latency_vs_deploy`` when the search reports
    it (a mapping batch -> ratio, or one ratio at the latency batch), else ``latency_ratio`` (to fp32)."""
    deploy = row.get("latency_vs_deploy")
    if isinstance(deploy, dict):
        deploy = deploy.get(batch)
    if isinstance(deploy, (int, float)):
        return float(deploy), "deploy"
    return (row.get("latency_ratio") or {}).get(batch), "fp32"


def bench_row(model: str, r: dict[str, Any], batch: str, limit: float | None, kind: str) -> dict[str, Any]:
    """A summary row in the benchmark row convention (common.py), with what the targets read."""
    ratio, versus = ratio_at(r, batch)
    technique = str(r.get("seed") or "").partition("default:")[2] or None
    label = (f"auto: {r['candidate']}" if kind == "auto" else
             f"{technique} only (defaults): {r['candidate']}" if kind == "default" else r["candidate"])
    test_drop = r.get("score_drop") if r.get("score_on") == "test" else None
    return {"model": model, "candidate": label, "score": r.get("score"), "score_drop": r.get("score_drop"),
            "size_ratio": r.get("size_ratio"), "latency_ratio": {batch: ratio} if ratio is not None else {},
            "kind": kind, "technique": technique, "trial": r["trial"], "state": r["state"], "feasible": r["feasible"],
            "meets": "yes" if r["feasible"] else "no", "val_score_drop": r.get("val_score_drop"),
            "meets_on_test": None if test_drop is None or limit is None else test_drop <= limit,
            "latency_vs": versus, "ended": r.get("ended")}


def timing(r: dict[str, Any]) -> dict[str, Any]:
    """One trial's time against its limit and estimate, and why it ended."""
    return {k: r.get(k) for k in ("trial", "candidate", "seed", "state", "seconds", "limit_s", "estimate_s", "ended",
                                  "cached")}


def rows_of(model: str, summary: dict[str, Any] | None, run: dict[str, Any], args: Any) -> list[dict[str, Any]]:
    """The benchmark rows of one search: the choice (carrying the search's facts) then each default."""
    search = {**run, "budget_s": args.budget, "slack_s": args.slack, "trial_limit_s": args.trial_limit,
              "onnxruntime": ort_title(args), "timing": "quick" if args.quick else "full", "max_score_drop": MAX_SCORE_DROP.get(model), "metric": metric(model)}
    if summary is None:
        return [{"model": model, "candidate": "auto: no result.json", "score": None, "score_drop": None,
                 "size_ratio": None, "latency_ratio": {}, "kind": "auto", "trial": None, "feasible": False,
                 "search": {**search, "batch": str(big_batch(model))}}]
    batch, limit = str(summary["latency_batch_size"]), summary["constraints"].get("max_score_drop")
    search.update(batch=batch, counts=summary["counts"], excluded=summary.get("excluded") or [],
                  constraints=summary["constraints"], pareto=[bench_row(model, r, batch, limit, "front")
                                                              for r in summary["pareto"]],
                  trials=[timing(r) for r in summary["trials"]])
    chosen = summary["chosen"]
    if chosen:
        auto = bench_row(model, chosen, batch, limit, "auto")
    else:
        auto = {"model": model, "candidate": "auto: nothing meets the constraint", "score": None, "score_drop": None,
                "size_ratio": None, "latency_ratio": {}, "kind": "auto", "trial": None, "feasible": False,
                "missed_by": summary.get("missed_by")}
    defaults = [bench_row(model, r, batch, limit, "default") for r in summary["trials"]
                if str(r.get("seed") or "").startswith("default:") and not r.get("cached")]
    return [{**auto, "search": search}, *defaults]


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets for one model's rows (the choice first): name, PASS / FAIL / N/A, and the numbers."""
    auto, defaults = rows[0], [r for r in rows[1:] if r.get("kind") == "default"]
    s, model = auto["search"], auto["model"]
    batch, has_choice = s["batch"], auto.get("trial") is not None
    out = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        out.append({"model": model, "target": name, "status": "N/A" if ok is None else "PASS" if ok else "FAIL",
                    "detail": detail})

    in_time = s["wall_s"] <= s["budget_s"] + s["slack_s"]
    add("(a) within budget, choice meets the constraint", in_time and has_choice and auto["feasible"],
        f"wall {s['wall_s']:.0f} s {'<=' if in_time else '>'} {s['budget_s']:.0f} + {s['slack_s']:.0f} s ({s['exit']}); "
        + (f"trial {auto['trial']}, validation drop {auto['val_score_drop']:.4g} vs max {s['max_score_drop']:g} "
           f"({s['metric']})" if has_choice else "no choice"))
    test_drop = auto.get("score_drop") if has_choice else None
    add("(a) the choice's test score meets it too", bool(auto.get("meets_on_test")),
        "no test score" if test_drop is None else f"test drop {test_drop:.4g} vs max {s['max_score_drop']:g}")
    ratio = (auto.get("latency_ratio") or {}).get(batch)
    feasible = [d for d in defaults if d["feasible"]]
    slower = [d for d in feasible if ratio is None or (d["latency_ratio"] or {}).get(batch) is None
              or ratio > d["latency_ratio"][batch]]
    compared = ", ".join(f"{d['technique']} {_ratio(d, batch)}" for d in feasible) or "no default meets the constraint"
    add(f"(b) at least as fast as every feasible default and <= {MAX_RATIO}x fp32 @{batch}",
        ratio is not None and not slower and ratio <= MAX_RATIO,
        f"choice {_ratio(auto, batch)} (vs {auto.get('latency_vs', 'fp32')}); feasible defaults: {compared}"
        + (f"; faster or unmeasured: {', '.join(d['technique'] for d in slower)}" if slower else ""))
    limited = [t for t in s.get("trials", []) if t.get("limit_s") is not None and t.get("seconds") is not None
               and not t.get("cached")]
    over = [t for t in limited if t["seconds"] > OVERRUN * t["limit_s"]]
    add(f"(c) no trial past its time limit by more than {OVERRUN - 1:.0%}", None if not limited else not over,
        f"{len(limited)} trials with a known limit" + "".join(
            f"; trial {t['trial']} took {t['seconds']:.0f} s, limit {t['limit_s']:.0f} s" for t in over)
        if limited else "no trial recorded a time limit")
    return out


def _ratio(row: dict[str, Any], batch: str) -> str:
    value = (row.get("latency_ratio") or {}).get(batch)
    return "unmeasured" if value is None else f"{value:.3f}x"


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Every model's targets, one 'PASS (a) ...: numbers' line each."""
    return [f"{t['status']} {t['model']} {t['target']}: {t['detail']}" for t in all_targets(rows)]


def all_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    return [t for model_rows in by_model.values() for t in targets(model_rows)]


def trials_table(rows: list[dict[str, Any]]) -> str:
    """Per model: each trial's seconds against its estimate and limit, and why it ended."""
    head = ["model", "trial", "candidate", "state", "seconds", "estimate s", "limit s", "ended"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    num = lambda v: "–" if v is None else f"{v:.0f}"  # noqa: E731
    for auto in (r for r in rows if r.get("kind") == "auto"):
        for t in auto["search"].get("trials", []):
            cells = [auto["model"], str(t["trial"]), t["candidate"], t["state"] + (" (cached)" if t.get("cached") else ""),
                     num(t.get("seconds")), num(t.get("estimate_s")), num(t.get("limit_s")), t.get("ended") or "–"]
            lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def search_line(auto: dict[str, Any]) -> str:
    s = auto["search"]
    counts = s.get("counts") or {}
    ended = ", ".join(f"{counts.get(k, 0)} {w}" for k, w in (("complete", "measured"), ("pruned", "stopped early"),
                      ("failed", "failed"), ("timeout", "at their time limit"), ("skipped", "skipped")))
    excluded = "; ".join(e.get("text") or f"{e.get('technique')} (trial {e.get('trial')}): {e.get('reason')}"
                         for e in s.get("excluded") or []) or "nothing"
    missed = "; ".join(f"nothing met {k}: best {v['best']:.4g} (trial {v['trial']}), limit {v['limit']:.4g}"
                       for k, v in (auto.get("missed_by") or {}).items())
    return (f"- {auto['model']}: {s['wall_s']:.0f} s wall ({s['exit']}), budget {s['budget_s']:.0f} s, trial limit "
            f"{'search default' if s.get('trial_limit_s') is None else format(s['trial_limit_s'], 'g') + ' s'}; "
            f"max_score_drop {s['max_score_drop']:g} ({s['metric']}), latency at batch {s['batch']}; trials: {ended}"
            f"{'; ' + str(counts.get('feasible', 0)) + ' meet the constraint' if counts else ''}; left out: {excluded}"
            f"{'; ' + missed if missed else ''}.")


def render(rows: list[dict[str, Any]], title: str) -> str:
    """The whole benchmark as BENCHMARKS.md prints it: choices and defaults, fronts, targets, trial times."""
    autos = [r for r in rows if r.get("kind") == "auto"]
    batches = sorted({a["search"]["batch"] for a in autos}, key=int)
    fronts = [f for a in autos for f in a["search"].get("pareto", [])]
    extra = ("trial", "state", "meets")
    return "\n".join([
        f"**{title} — {machine()}**", "", rows_table(rows, batches, extra),
        "Searches:", "", *[search_line(a) for a in autos], "",
        "Pareto fronts:", "", rows_table(fronts, batches, extra) if fronts else "none\n",
        "Targets:", "", *[f"- {line}" for line in target_lines(rows)], "",
        "Trials:", "", trials_table(rows)])


def title(rows: list[dict[str, Any]]) -> str:
    """The table's title, from the searches the rows hold (also when rendering saved rows); without the machine,
    which ``emit`` and ``render`` add."""
    searches = [r["search"] for r in rows if r.get("kind") == "auto"]
    budgets = "/".join(dict.fromkeys(f"{s['budget_s']:g}" for s in searches)) or "–"
    settings = "; ".join(dict.fromkeys(s.get("onnxruntime", "?") for s in searches)) or "–"
    return (f"modelpress auto on the reference models: budget {budgets} s per model, ONNX Runtime ({settings}); "
            f"latency × = the search's paired ratio at the latency batch (to fp32 as deployed where the search "
            f"reports it, else to fp32 on the same runtime); drop (pts) = 100 × the test score drop in the model's "
            f"metric{' (--quick timing)' if any(s.get('timing') == 'quick' for s in searches) else ''}")


def recheck_choice(model: str, args: Any, row: dict[str, Any]) -> dict[str, Any]:
    """The chosen artifact (``OUT/<model>/best``, on its own runtime) timed again at the latency batch against
    what the choice's row ratio is to: a fresh fp32 export on the search's runtime (``latency_vs`` "deploy"),
    or on the artifact's own runtime setting ("fp32"); {} when the search chose nothing."""
    from modelpress.recipe import load_recipe, parse_recipe
    from modelpress.task import load_task

    best = args.out / model / "best"
    reported = {b: r for b, r in (row.get("latency_ratio") or {}).items() if r is not None}
    if not (best / "artifact").is_dir() or not reported:
        return {}
    task = load_task(model)
    baseline = parse_recipe(recipe_for(model, args)) if row.get("latency_vs") == "deploy" else None
    with tempdir() as tmp:
        again = recheck_artifact(reported, best / "artifact", task.build_model(), task,
                                 load_recipe(best / "recipe.yaml"), Path(tmp) / "fp32", baseline_recipe=baseline)
    return {"latency_reported": reported, **again}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser(__doc__.splitlines()[0])
    ort_args(p)
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated tasks (default {','.join(MODELS)})")
    p.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds per search (--timeout; default {BUDGET_S:g})")
    p.add_argument("--trial-limit", type=float, help=f"seconds per trial (search.{TRIAL_LIMIT_FIELD}; default: "
                   "the search's own)")
    p.add_argument("--trials", type=int, default=TRIALS, help=f"search.trials (default {TRIALS}: the budget ends it)")
    p.add_argument("--slack", type=float, default=SLACK_S, help=f"seconds a search may take past its budget "
                   f"(default {SLACK_S:g})")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-auto-real", help="recipes, logs and studies")
    p.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                   help="run nothing: the tables and targets of rows saved by earlier --json runs")
    args = p.parse_args(argv)
    rows = [r for path in args.render or () for r in json.loads(path.read_text())]
    if not args.render:
        check_recipes(args)
    for model in ([] if args.render else args.models.split(",")):
        print(f"searching {model}: budget {args.budget:g} s, logging to {args.out / (model + '.log')}", flush=True)
        summary, run = run_search(model, args)
        found = rows_of(model, summary, run, args)
        found[0].update(recheck_choice(model, args, found[0]))  # the choice's row
        rows += found
        print(f"    {run['exit']} after {run['wall_s']:.0f} s", flush=True)
        if args.json:  # written after each search, so a stopped run keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2, default=str))
    emit(rows, argparse_view(args), title(rows), ("trial", "state", "meets"))
    for line in target_lines(rows):
        print(line)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render(rows, title(rows)))
        print(f"wrote {args.markdown}")
    return rows


def argparse_view(args: Any) -> Any:
    """``args`` for common.emit: it writes the JSON (not in --render mode); the Markdown is this script's own."""
    import argparse

    return argparse.Namespace(json=None if args.render else args.json, markdown=None)


if __name__ == "__main__":
    main()
