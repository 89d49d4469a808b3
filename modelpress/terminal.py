"""The terminal side of the command line, shared by every command module: the console, plain printing of
user strings, the renderer of the library's messages, and the arguments that load a task's model."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def console() -> Any:
    from rich.console import Console

    return Console(stderr=False)


def plain(text: str) -> Any:
    """``text`` as printed: no rich markup read from it, no highlighting (user strings hold anything)."""
    from rich.text import Text

    return Text(text)


def show_messages(con: Any) -> None:
    """Print the library's messages (the ``modelpress`` logger) on ``con`` as '· message' lines, as plain
    text (a task name or path is never read as markup)."""
    import logging

    from .progress import log

    class ConsoleLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            from rich.text import Text

            from .errors import shown

            warning = record.levelno >= logging.WARNING
            con.print(Text("warning: " if warning else "· ", style="yellow" if warning else "dim")
                      + Text(shown(record.getMessage(), 300)))

    for handler in [h for h in log.handlers if type(h).__name__ == "ConsoleLines"]:
        log.removeHandler(handler)  # one renderer: the latest console
    log.addHandler(ConsoleLines())
    log.setLevel(logging.INFO)
    log.propagate = False  # another library's logging.basicConfig must not print them a second time


def model_for(args: argparse.Namespace) -> tuple[Any, Any]:
    """The task named by ``args.task`` and its model, with ``--model`` weights loaded safely when given."""
    from .task import load_task

    task = load_task(args.task)
    model = task.build_model()
    if args.model:
        from .load import load_into

        model = load_into(model, args.model, trust_pickle=args.trust_pickle)
    return task, model


def model_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--model", help="weights to load into the task's model (.safetensors, .pt state dict)")
    q.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling a whole model file (runs code from the file: only for trusted files)")
    q.add_argument("--format", default="onnx", help="export format (default onnx)")


def foreign_log() -> Path:
    """Where a command's foreign output goes: ``<cache>/logs/last-command.log`` (the latest command's)."""
    from .cache import cache_dir

    return cache_dir() / "logs" / "last-command.log"


@contextlib.contextmanager
def quiet_foreign_output(path: Path | None = None) -> Iterator[Path | None]:
    """Route what other libraries write to standard error (their warnings, C++ logs, progress bars) to a log
    file, so the terminal shows modelpress's own messages only. modelpress's messages and progress bars keep
    the terminal (stdout, and the original stderr for bars); errors print after the block, on the restored
    stderr. ``MODELPRESS_VERBOSE=1`` turns the routing off. Yields the log file (None when not routed)."""
    from .progress import enable_bars

    target = None
    if os.environ.get("MODELPRESS_VERBOSE") != "1":
        path = path or foreign_log()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            target = open(path, "wb")
        except OSError:  # an unwritable cache: stay as we are rather than fail the command
            target = None
    if target is None:
        enable_bars()
        try:
            yield None
        finally:
            enable_bars(None)
        return
    for name, value in (("TRANSFORMERS_VERBOSITY", "error"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")):
        os.environ.setdefault(name, value)  # libraries imported later read these
    sys.stderr.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1)
    os.dup2(target.fileno(), 2)
    enable_bars(terminal)
    try:
        yield path
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        target.close()
        enable_bars(None)
        terminal.close()
