"""Where edgecat's messages go: log lines and progress bars share ONE rich console on stderr.

stdout carries only results (tables, ``--json``), so ``edgecat ... --json > out.json`` is pure
JSON; sharing the console is what keeps a progress bar and a log line from being drawn over each
other on a terminal. TensorFlow's C++ start-up lines (absl, cudart, oneDNN) are written to file
descriptor 2 while ``tensorflow`` is imported, past Python's logging and past TF_CPP_MIN_LOG_LEVEL,
so :func:`quiet_tensorflow_import` catches that one import at the descriptor level.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

_STDERR_CONSOLE: Any = None
_QUIET = False  # -q: no progress bars either

#: C++ log lines TensorFlow prints while it loads (absl prefix "I0000 00:00:..." and friends)
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|To enable the following instructions:"
    r"|E0000 |W0000 |I0000 )"
)


def stderr_console() -> Any:
    """The one rich Console on stderr that log lines and progress bars share."""
    global _STDERR_CONSOLE
    if _STDERR_CONSOLE is None:
        from rich.console import Console

        _STDERR_CONSOLE = Console(stderr=True)  # looks up sys.stderr on each write (test runners swap it)
    return _STDERR_CONSOLE


def progress(*columns: Any, **kwargs: Any) -> Any:
    """A rich Progress on the shared stderr console, transient, and silent when stderr is not a
    terminal or with -q."""
    from rich.progress import Progress

    console = stderr_console()
    kwargs.setdefault("transient", True)
    kwargs.setdefault("disable", _QUIET or not console.is_terminal)
    return Progress(*columns, console=console, **kwargs)


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Any]:
    """Yields ``advance(n)`` of a transient bar with ETA (nothing drawn off a terminal or with -q)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    with progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)


def setup_logging(verbosity: int = 1, quiet: bool = False) -> None:
    """Log to the shared stderr console. ``verbosity`` 0 warnings, 1 info, 2+ debug (with library
    chatter, warnings and TensorFlow's start-up lines let through)."""
    from rich.logging import RichHandler

    global _QUIET
    _QUIET = quiet
    level = logging.WARNING if quiet or verbosity < 1 else (logging.DEBUG if verbosity > 1 else logging.INFO)
    handler = RichHandler(console=stderr_console(), show_path=False, show_time=False, rich_tracebacks=False,
                          markup=False)
    from edgecat.redact import install as install_redaction

    install_redaction(handler)  # no camera password or access token in any log line
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    if verbosity < 2:
        # FFmpeg's "[tcp @ 0x...] Connection refused" and OpenCV's "[ WARN:0@...]" lines: edgecat
        # reports a source it cannot open in its own words
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        # Keras/TF UserWarnings (dataset shuffling hints, retracing) are noise for a CLI user.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quiet_tensorflow_import()
    else:  # -vv given after the subcommand: undo what the group's default set up
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbosity < 2 else logging.INFO)


@contextlib.contextmanager
def fd2_filtered(pattern: re.Pattern[str] = _TF_NOISE) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then replay every line that
    does not match ``pattern`` (so a real error printed meanwhile is still seen)."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to filter
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines(keepends=True)
                    if not pattern.match(ln)]
            if kept:
                with contextlib.suppress(Exception):
                    sys.stderr.write("".join(kept))
                    sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        with fd2_filtered():
            self.loader.exec_module(module)

    def __getattr__(self, name: str) -> Any:  # is_package, get_code, ... of the real loader
        return getattr(self.loader, name)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of the top-level ``tensorflow`` package; every other import is untouched."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_import() -> None:
    """Filter TensorFlow's C++ start-up lines from stderr when (and if) it is imported later."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())


__all__ = ["bar", "fd2_filtered", "progress", "quiet_tensorflow_import", "setup_logging", "stderr_console"]
