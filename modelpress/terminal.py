"""The terminal side of the command line, shared by every command module: the console and the renderer
of the library's messages."""
from __future__ import annotations

from typing import Any


def console() -> Any:
    from rich.console import Console

    return Console(stderr=False)


def show_messages(con: Any) -> None:
    """Print the library's messages (the ``modelpress`` logger) on ``con`` as '· message' lines, as plain
    text (a task name or path is never read as markup), and show progress bars on a terminal."""
    import logging

    from .progress import enable_bars, log

    class ConsoleLines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            from rich.text import Text

            warning = record.levelno >= logging.WARNING
            con.print(Text("warning: " if warning else "· ", style="yellow" if warning else "dim")
                      + Text(record.getMessage()))

    for handler in [h for h in log.handlers if type(h).__name__ == "ConsoleLines"]:
        log.removeHandler(handler)  # one renderer: the latest console
    log.addHandler(ConsoleLines())
    log.setLevel(logging.INFO)
    enable_bars()
