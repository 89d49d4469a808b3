"""The terminal side of the command line, shared by every command module: the console, plain printing of
user strings, the renderer of the library's messages, and the arguments that load a task's model."""
from __future__ import annotations

import argparse
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
    text (a task name or path is never read as markup), and show progress bars on a terminal."""
    import logging

    from .progress import enable_bars, log

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
    enable_bars()


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
