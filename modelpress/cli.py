"""The ``modelpress`` command line: run, export, tasks, doctor, and the commands of :data:`COMMANDS`."""
from __future__ import annotations

import argparse
import errno
import importlib
import sys
from pathlib import Path
from typing import Any

from .errors import ModelpressError, shown
from .terminal import console, model_args, model_for, plain, quiet_foreign_output, show_messages


def result_table(result: Any) -> Any:
    from rich.table import Table

    from .report.markdown import rows

    table = Table(title=plain(f"modelpress result: {shown(result.task)}"), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows(result):
        table.add_row(plain(str(label)), plain(shown(value, 300)))
    return table


def cmd_run(args: argparse.Namespace) -> int:
    from .outdir import check_target
    from .pipeline import run
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.output or Path("runs") / Path(args.recipe).stem)
    check_target(out, args.force, inputs=[args.recipe])  # before any work; checked again under the lock
    con = console()
    show_messages(con)
    result = run(recipe, out, force=args.force)
    con.print(result_table(result))
    for note in result.notes:
        line = plain(f"note: {note}")
        line.stylize("yellow", 0, 5)
        con.print(line)
    con.print(plain(f"wrote {out}/ (recipe.yaml, result.json, report.md, artifact/)"))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import registry
    from .config import parse
    from .evaluate import compare, predict_fn, torch_predict
    from .outdir import check_target, discard, prepare_output, publish
    from .pipeline import check_finite
    from .report.markdown import comparison
    from .runtime import RuntimeConfig, open_session

    out = Path(args.output)
    inputs = [args.model] if args.model else []
    check_target(out, args.force, inputs)  # before any work; checked again under the lock
    task, model = model_for(args)
    check_finite(model)
    stage = prepare_output(out, args.force, inputs)
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
        discard(stage)
    con = console()
    con.print(plain(f"exported {shown(task.name)} as {args.format}: {out / file} ({size_bytes} bytes)"))
    if par:
        samples = next(iter(par.values()))["samples"]
        con.print(plain(f"parity on {backend} over {samples} test samples: {comparison(par)}"))
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
    "bench": "modelpress.bench_cli",
    "analyze": "modelpress.analyze.cli",
    "auto": "modelpress.search.cli",
    "package": "modelpress.package",
    "predict": "modelpress.predict",
}



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelpress", description="Compress, convert, accelerate and measure models.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe and write an output folder")
    r.add_argument("recipe")
    r.add_argument("-o", "--output", help="output folder (default runs/<recipe name>)")
    r.add_argument("--force", action="store_true", help="replace an output folder modelpress made earlier")
    r.set_defaults(fn=cmd_run)

    e = sub.add_parser("export", help="export a task's model to a deployable artifact")
    e.add_argument("task")
    e.add_argument("output")
    e.add_argument("--force", action="store_true")
    model_args(e)
    e.set_defaults(fn=cmd_export)

    sub.add_parser("tasks", help="list the built-in tasks").set_defaults(fn=cmd_tasks)
    sub.add_parser("doctor", help="installed runtimes, CPU features, GPUs").set_defaults(fn=cmd_doctor)
    for name, target in COMMANDS.items():
        importlib.import_module(target).register(sub)
    return p


def input_files(args: argparse.Namespace) -> list[Path]:
    """The files the user handed this command (recipe, weights, artifact folders): never to be changed."""
    files: list[Path] = []
    for attr in ("recipe", "model", "target", "compare", "run_folder", "bundle", "input"):
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
    from .locks import scratch

    args = build_parser().parse_args(argv)
    before = fingerprints(input_files(args))
    try:
        # every temporary file of the command, removed at its end (or by the next command); other libraries'
        # stderr noise goes to a log file, modelpress's own messages to the terminal
        with scratch(), quiet_foreign_output():
            return args.fn(args)
    except ModelpressError as e:
        print(f"modelpress: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f" ({shown(e.filename)})" if e.filename else ""
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
