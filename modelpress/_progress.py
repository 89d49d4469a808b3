"""Progress bars for long work: on the terminal (stderr), transient, and off when stderr is not a terminal
(a log file, a search worker), where a bar would only leave blank lines behind."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress_bar(*columns: Any, **kwargs: Any) -> Any:
    """A ``rich.progress.Progress`` (default columns unless given) that shows only on an interactive stderr."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    kwargs.setdefault("transient", True)
    return Progress(*columns, console=console, disable=not console.is_terminal, **kwargs)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar."""
    with progress_bar() as bar:
        yield from bar.track(items, total=total, description=description)
