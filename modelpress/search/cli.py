"""``modelpress auto RECIPE|TASK``: search compression pipelines and runtimes under constraints.

    modelpress auto digits -o runs/auto-digits
    modelpress auto recipes/auto_fashion.yaml --trials 40 --workers 2
    modelpress auto recipes/auto_digits.yaml --ray 10.0.0.5:6379

Running the same command again continues the study in the output folder.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_MAX_SCORE_DROP = 0.01  # one point of accuracy when no constraint is given


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("auto", help="search techniques, settings and runtimes under constraints")
    p.add_argument("target", help="a recipe file with an optional 'search' block, or a task name")
    p.add_argument("-o", "--output", help="output folder (default runs/auto-<name>); the same folder continues a study")
    p.add_argument("--trials", type=int, help="finished trials the study ends with (overrides search.trials)")
    p.add_argument("--workers", type=int, help="parallel worker processes (overrides search.workers)")
    p.add_argument("--timeout", type=float, help="time limit in seconds: start a trial only if it is expected to end in time")
    p.add_argument("--trial-timeout", type=float, help="time limit of one trial in seconds: a trial still running is "
                                                       "stopped and recorded as such (default: a quarter of --timeout)")
    p.add_argument("--ray", metavar="ADDRESS", help="run trials on the Ray cluster at HOST:PORT ('auto', 'local')")
    p.add_argument("--force", action="store_true", help="discard the study in the output folder and start over")
    p.set_defaults(fn=cmd_auto)


def load_target(target: str) -> tuple[Any, str]:
    """A recipe from a file, or a default recipe for a task name; and a name for the output folder."""
    from ..recipe import load_recipe, parse_recipe

    path = Path(target)
    if path.suffix in (".yaml", ".yml") or path.exists():
        recipe = load_recipe(path)
        name = path.stem
    else:
        recipe = parse_recipe({"task": target, "search": {}})
        name = target.replace(":", "-")
    if all(v is None for v in (recipe.constraints.max_score_drop, recipe.constraints.max_latency_ms,
                               recipe.constraints.max_size_bytes, recipe.constraints.max_energy_j)):
        import dataclasses

        recipe = dataclasses.replace(recipe, constraints=dataclasses.replace(
            recipe.constraints, max_score_drop=DEFAULT_MAX_SCORE_DROP))
    return recipe, name


def pareto_table(summary: dict[str, Any]) -> Any:
    from rich.table import Table

    from ..terminal import plain
    from ..errors import shown
    from .summary import headers, table_rows

    batch = str(summary["latency_batch_size"])
    rows = summary["pareto"] or summary["closest"]
    title = "Pareto front (★ chosen)" if summary["pareto"] else "Nothing meets the constraints: closest candidates"
    table = Table(title=plain(f"{title}: {shown(summary['task'])}"))
    for h in headers(batch, summary.get("deploy_runtime")):
        table.add_column(h, justify="left" if h == "candidate" else "right")
    for cells in table_rows(rows, batch):
        table.add_row(*(plain(str(c)) for c in cells))
    return table


def cmd_auto(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from ..outdir import check_inputs
    from ..terminal import plain, show_messages
    from .loop import auto

    recipe, name = load_target(args.target)
    out = Path(args.output or Path("runs") / f"auto-{name}")
    if Path(args.target).exists():
        check_inputs(out, [args.target])  # the study folder never holds the recipe it runs
    con = Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes get the whole table
    show_messages(con)
    con.print("[dim]·[/dim] constraints: " + ", ".join(
        f"{k} {v:g}" for k, v in vars(recipe.constraints).items() if v is not None))

    def on_trial(r: dict[str, Any]) -> None:
        if r["state"] == "complete":
            what = (f"score {r['score']:.4f} (drop {r['score_drop']:+.4f}), latency {r['latency_ms']:.4f} ms, "
                    f"size {r['size_bytes']:,} B" + ("" if r["feasible"] else f"; misses: {'; '.join(r['violations'])}"))
        elif r["state"] == "pruned":
            what = f"stopped early: drop {r['score_drop']:+.4f} on {r['score_on']}"
        else:  # failed, reached its time limit, or skipped
            what = r.get("ended") or f"failed: {r['error']}"
        cached = " (cached)" if r["cached"] else ""
        con.print(plain(f"· trial {r['trial']} [{r['finished']}/{r['of']}]{cached} {r['candidate']}: {what}"))

    try:
        summary = auto(recipe, out, trials=args.trials, workers=args.workers, timeout_s=args.timeout, trial_timeout_s=args.trial_timeout,
                       ray_address=args.ray, force=args.force, on_trial=on_trial)
    except KeyboardInterrupt:
        con.print(plain(f"interrupted: finished trials are kept in {out}; run the same command to continue."))
        return 130
    con.print(pareto_table(summary))
    if summary["chosen"]:
        con.print(f"chosen: trial {summary['chosen']['trial']}: {summary['chosen']['candidate']}")
    else:
        for k, v in summary["missed_by"].items():
            con.print(f"[yellow]no candidate meets {k}:[/yellow] the best reached {v['best']:.4g}, short of "
                      f"{v['limit']:.4g} by {v['short_by']:.4g} (trial {v['trial']})")
    for note in summary["notes"]:
        con.print(plain(f"note: {note}"))
    con.print(plain(f"report: {out / 'report.html'} (also report.md, result.json; best/recipe.yaml reproduces the choice)"))
    return 0
