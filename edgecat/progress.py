"""Progress bars that share the log handler's console, so bars and log lines never interleave.

A bar is drawn only on a terminal; piped or captured output gets the log lines alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

from rich.console import Console


def log_console() -> Console:
    """The console the root logger's rich handler writes to (stderr when there is none)."""
    for handler in logging.getLogger().handlers:
        console = getattr(handler, "console", None)
        if isinstance(console, Console):
            return console
    return Console(stderr=True)


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``; a transient bar with ETA on a terminal, nothing otherwise."""
    console = log_console()
    if not console.is_terminal or logging.getLogger().getEffectiveLevel() > logging.INFO:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
