"""``modelpress analyze TASK``: the layer table, the ONNX Runtime profile, per-layer sensitivity and advice,
printed and written to ``-o DIR`` (default ``runs/analyze-<task>``) as ``analysis.json`` and SVG plots."""
from __future__ import annotations

import argparse
import re
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    a = subparsers.add_parser("analyze", help="where a model spends size and time, layer sensitivity, advice")
    a.add_argument("task", help="a built-in task or 'my_module:my_task'")
    a.add_argument("-o", "--output", help="output folder (default runs/analyze-<task>)")
    a.add_argument("--model", help="weights to load into the task's model (.safetensors, .pt state dict)")
    a.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a whole model file (runs code from the file: only for trusted files)")
    a.add_argument("--samples", type=int, default=1000, help="evaluation samples per sensitivity score (default 1000)")
    a.add_argument("--probes", default="int8,int4,prune30,prune50,lowrank",
                   help="sensitivity probes, comma-separated (default: all)")
    a.add_argument("--tolerance", type=float, default=0.005,
                   help="score drop a layer may lose to a probe and still count as tolerant (default 0.005)")
    a.add_argument("--batch-sizes", default="1,32", help="profiled batch sizes (default 1,32)")
    a.add_argument("--threads", type=int, default=2)
    a.add_argument("--no-profile", action="store_true", help="skip the ONNX Runtime profile")
    a.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity")
    a.set_defaults(fn=cmd_analyze)


def default_output(task: str) -> Path:
    return Path("runs") / ("analyze-" + re.sub(r"[^A-Za-z0-9._-]+", "-", task).strip("-"))


def _ints(text: str, what: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--{what} must be comma-separated whole numbers (e.g. 1,32), got '{text}'.") from None


def cmd_analyze(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from ..progress import progress_bar

    from . import AnalyzeConfig, analyze, write
    from .render import print_analysis
    from ..task import load_task

    started = time.perf_counter()
    config = AnalyzeConfig(samples=args.samples, probes=tuple(p.strip() for p in args.probes.split(",") if p.strip()),
                           tolerance=args.tolerance, batch_sizes=_ints(args.batch_sizes, "batch-sizes"),
                           threads=args.threads, profile=not args.no_profile, sensitivity=not args.no_sensitivity)
    out = Path(args.output) if args.output else default_output(args.task)
    con = Console()
    task = load_task(args.task)
    model = task.build_model()
    if args.model:
        from ..load import load_into

        model = load_into(model, args.model, trust_pickle=args.trust_pickle)
    with progress_bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        job = bar.add_task("analyzing", total=None)

        def stage(message: str) -> None:
            bar.update(job, description=message, total=None, completed=0)

        def step(done: int, total: int, message: str) -> None:
            bar.update(job, description=f"sensitivity: {message}", total=total, completed=done)

        result = analyze(task, model, config, stage, step)
    print_analysis(con, result)
    paths = write(result, out)
    con.print(f"wrote {out}/ ({', '.join(p.name for p in paths)}) in {time.perf_counter() - started:.1f} s")
    return 0
