"""What the library says while it works: messages through ``logging`` (the ``modelpress`` logger), and
progress bars for long loops.

A library user routes or silences the messages like any logger's (``logging.getLogger("modelpress")``);
the command line attaches its terminal renderer (:func:`modelpress.terminal.show_messages`). Progress bars
show only when something turned them on (:func:`enable_bars`, the command line does) and stderr is a
terminal, so a library call, a log file or a search worker never gets them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("modelpress")
log.addHandler(logging.NullHandler())  # a library logs; the application decides where it goes
_BARS: dict[str, Any] = {"on": False, "stream": None}


def enable_bars(stream: Any = "stderr") -> None:
    """Show progress bars on ``stream`` when it is a terminal ("stderr": the process's standard error; None
    turns them off). The command line turns them on."""
    _BARS["on"], _BARS["stream"] = stream is not None, None if stream == "stderr" else stream


def progress_bar(*columns: Any, **kwargs: Any) -> Any:
    """A ``rich.progress.Progress`` (default columns unless given), shown only when bars are on and stderr
    is a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=_BARS["stream"]) if _BARS["stream"] is not None else Console(stderr=True)
    kwargs.setdefault("transient", True)
    return Progress(*columns, console=console, disable=not (_BARS["on"] and console.is_terminal), **kwargs)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar."""
    with progress_bar() as bar:
        yield from bar.track(items, total=total, description=description)
