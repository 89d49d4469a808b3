"""The ``modelpress`` command line: run, bench, export, tasks, doctor."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from .errors import ModelpressError
from .terminal import console, show_messages


def result_table(result: Any) -> Any:
    from rich.table import Table

    from .report.markdown import rows

    table = Table(title=f"modelpress result: {result.task}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows(result):
        table.add_row(label, value)
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline import run
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.output or Path("runs") / Path(args.recipe).stem)
    con = console()
    show_messages(con)
    result = run(recipe, out, force=args.force)
    con.print(result_table(result))
    for note in result.notes:
        con.print(f"[yellow]note:[/yellow] {note}")
    con.print(f"wrote {out}/ (recipe.yaml, result.json, report.md, artifact/)")
    return 0


def _model_for(args: argparse.Namespace):
    from .task import load_task

    task = load_task(args.task)
    model = task.build_model()
    if args.model:
        from .load import load_into

        model = load_into(model, args.model, trust_pickle=args.trust_pickle)
    return task, model


def cmd_export(args: argparse.Namespace) -> int:
    import shutil

    from . import registry
    from .config import parse
    from .evaluate import compare, predict_fn, torch_predict
    from .report.markdown import comparison
    from .pipeline import check_finite, prepare_output, publish
    from .runtime import RuntimeConfig, open_session

    task, model = _model_for(args)
    check_finite(model)
    out = Path(args.output)
    stage = prepare_output(out, args.force)
    exporter = registry.module("export format", args.format)
    try:
        art = exporter.export(model, task, stage, parse(exporter.Config, {}, "export"))
        size_bytes, file = art.size_bytes, art.manifest["file"]
        backend = next((n for n in registry.RUNTIMES if args.format in registry.module("runtime", n).FORMATS
                        and registry.module("runtime", n).available()), None)
        par = None
        if backend:  # check the file against the torch model on real evaluation inputs before publishing it
            session = open_session(art, RuntimeConfig(backend=backend))
            par = compare(torch_predict(model, task), predict_fn(session), task.test_data, task.output_kinds,
                          task.output_names)
        publish(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    con = console()
    con.print(f"exported {task.name} as {args.format}: {out / file} ({size_bytes} bytes)")
    if par:
        samples = next(iter(par.values()))["samples"]
        con.print(f"parity on {backend} over {samples} test samples: {comparison(par)}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.table import Table

    from . import artifact as artifact_mod
    from . import bench, registry
    from .config import parse
    from .runtime import RuntimeConfig, open_session, setting_label

    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    config = bench.BenchConfig(batch_sizes=batch_sizes, rounds=args.rounds)
    runtime = RuntimeConfig(backend=args.runtime, threads=args.threads, streams=args.streams)
    con = console()
    with tempfile.TemporaryDirectory() as tmp:
        def artifact_for(target: str, folder: Path):
            if Path(target).is_dir():
                return artifact_mod.load(target)
            args.task = target
            task, model = _model_for(args)
            exporter = registry.module("export format", args.format)
            return exporter.export(model, task, folder, parse(exporter.Config, {}, "export"))

        first = artifact_for(args.target, Path(tmp) / "a")
        spec = first.manifest["inputs"]

        def example(bs: int):
            import numpy as np

            rng = np.random.default_rng(0)
            return {n: rng.random([bs, *v["shape"][1:]]).astype(v["dtype"]) for n, v in spec.items()}

        session, peak_bytes = bench.peak_memory(lambda: open_session(first, runtime),
                                                lambda sess: sess.run(example(max(batch_sizes))))

        table = Table(title=f"latency on {args.runtime} ({setting_label(args.threads, args.streams)})")
        for col in ("batch", "p50 ms", "p90 ms", "p99 ms", "throughput/s"):
            table.add_column(col, justify="right")
        if args.compare:
            other = open_session(artifact_for(args.compare, Path(tmp) / "b"), runtime)
            table.add_column("ratio to --compare", justify="right")
            with con.status("timing interleaved"):
                res = bench.compare(session.run, other.run, example, config)
            for bs, r in res.items():
                c = r["candidate"]
                table.add_row(str(bs), f"{c['p50']:.3f}", f"{c['p90']:.3f}", f"{c['p99']:.3f}",
                              f"{bs * 1e3 / c['p50']:.0f}", f"{r['paired_ratio']:.3f}")
        else:
            with con.status("timing"):
                res = bench.single(session.run, example, config)
            for bs, c in res.items():
                table.add_row(str(bs), f"{c['p50']:.3f}", f"{c['p90']:.3f}", f"{c['p99']:.3f}", f"{bs * 1e3 / c['p50']:.0f}")
        con.print(table)
        con.print(f"artifact size: {first.size_bytes} bytes; session peak memory: {peak_bytes / 1e6:.1f} MB")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .registry import TASKS

    table = Table(title="built-in tasks")
    table.add_column("name")
    table.add_column("factory")
    for name, target in TASKS.items():
        table.add_row(name, target)
    console().print(table)
    console().print("A task of your own: 'my_module:my_task' (a function returning modelpress.Task).")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from .doctor import report

    info = report()
    con = console()
    table = Table(title="runtimes")
    for col in ("runtime", "available", "version", "note"):
        table.add_column(col)
    for r in info["runtimes"]:
        table.add_row(r["name"], "yes" if r["available"] else "no", r["version"] or "-", escape(r["note"]))
    con.print(table)
    cpu = info["cpu"]
    con.print(f"CPU: {cpu['model']} ({cpu['cores']} cores)")
    con.print("ISA flags: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in cpu["flags"].items()))
    con.print(f"GPUs: {', '.join(info['gpus']) or 'none found'}")
    for device, meter in info["energy"].items():
        con.print(f"energy meter ({device}): {escape(meter)}")
    return 0


# Further commands, each in its own module with ``register(subparsers)`` that adds its parser and sets
# ``fn`` (args -> exit code). Imports inside those modules' command functions stay lazy.
COMMANDS: dict[str, str] = {
    "analyze": "modelpress.analyze.cli",
    "auto": "modelpress.search.cli",
    "package": "modelpress.package",
    "predict": "modelpress.package",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelpress", description="Compress, convert, accelerate and measure models.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe and write an output folder")
    r.add_argument("recipe")
    r.add_argument("-o", "--output", help="output folder (default runs/<recipe name>)")
    r.add_argument("--force", action="store_true", help="replace an existing output folder")
    r.set_defaults(fn=cmd_run)

    def model_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", help="weights to load into the task's model (.safetensors, .pt state dict)")
        q.add_argument("--trust-pickle", action="store_true",
                       help="allow unpickling a whole model file (runs code from the file: only for trusted files)")
        q.add_argument("--format", default="onnx", help="export format (default onnx)")

    e = sub.add_parser("export", help="export a task's model to a deployable artifact")
    e.add_argument("task")
    e.add_argument("output")
    e.add_argument("--force", action="store_true")
    model_args(e)
    e.set_defaults(fn=cmd_export)

    b = sub.add_parser("bench", help="latency of a task's model or an artifact folder on a runtime")
    b.add_argument("target", help="a task name or an artifact folder")
    b.add_argument("--compare", help="a second task or artifact, timed interleaved with the first")
    b.add_argument("--runtime", default="onnxruntime")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--streams", type=int, default=1,
                   help="split each batch across this many sessions run at once (ONNX Runtime; threads / streams each)")
    b.add_argument("--batch-sizes", default="1,32")
    b.add_argument("--rounds", type=int, default=15)
    model_args(b)
    b.set_defaults(fn=cmd_bench)

    sub.add_parser("tasks", help="list the built-in tasks").set_defaults(fn=cmd_tasks)
    sub.add_parser("doctor", help="installed runtimes, CPU features, GPUs").set_defaults(fn=cmd_doctor)
    for name, target in COMMANDS.items():
        importlib.import_module(target).register(sub)
    return p


def input_files(args: argparse.Namespace) -> list[Path]:
    """The files the user handed this command (recipe, weights, artifact folders): never to be changed."""
    files: list[Path] = []
    for attr in ("recipe", "model", "target", "compare"):
        value = getattr(args, attr, None)
        path = Path(value) if isinstance(value, str) else None
        if path is not None and path.is_file():
            files.append(path)
        elif path is not None and path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file())
    return files


def fingerprints(files: list[Path]) -> dict[Path, str]:
    from .artifact import sha256

    return {f: sha256(f) for f in files if f.exists()}


OS_HINTS = {errno.ENOSPC: "The disk is full: free some space or choose an output folder on another disk.",
            errno.EACCES: "Choose an output folder you can write to.",
            errno.EROFS: "The file system is read-only: choose an output folder on a writable disk.",
            errno.EPERM: "Choose an output folder you can write to.",
            errno.ENOTDIR: "A part of the output path is a file, not a folder: choose another output path.",
            errno.ENOENT: "The folder cannot be created there: choose another output path.",
            errno.EEXIST: "A part of the output path is a file, not a folder: choose another output path."}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    before = fingerprints(input_files(args))
    try:
        return args.fn(args)
    except ModelpressError as e:
        print(f"modelpress: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"modelpress: error: {e.strerror or e}{where}. {OS_HINTS.get(e.errno, '')} "
              f"Nothing partial was kept; finished outputs and your inputs are untouched.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("modelpress: interrupted; nothing partial was kept.", file=sys.stderr)
        return 130
    finally:
        changed = [str(f) for f, h in before.items() if fingerprints([f]).get(f) != h]
        if changed:  # a guard: modelpress never writes to its inputs
            print(f"modelpress: error: input files changed during the command: {changed}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
