"""Where edgecat's messages go: log lines and progress bars share ONE rich console on stderr.

stdout carries only results (tables, ``--json``), so ``edgecat ... --json > out.json`` is pure
JSON; sharing the console is what keeps a progress bar and a log line from being drawn over each
other on a terminal.

Off a terminal (a file, a pipe, the journal of a systemd unit, cron's mail) the output is read by
programs and grep: a log record is ONE plain line (``WARNING  skipped /path: not an image``), never
cut, wrapped or padded to a width, and a table is printed at its natural width, never with a cell
cut short, whatever COLUMNS says. :func:`make_console` and the log handler decide this per write,
from whether the stream is a terminal now.

Third-party noise is kept out of a user's stderr in three ways: native (C++) lines written straight to
file descriptor 2 are filtered by :func:`quiet_native_stderr` (:data:`NATIVE_NOISE`: TensorFlow's
absl lines, LiteRT's XNNPACK notice, the TFLite converter's settings dump), TensorFlow's start-up
lines by :func:`quiet_tensorflow_import`, library Python warnings by :func:`quiet_library_warnings`,
and library INFO records sent to the root logger (ONNX Runtime's quantizer) by the handler's
:class:`LibraryChatterFilter`. ``-vv`` lets all of it through. The Python API gets the same quiet
behaviour from :func:`setup_api_logging` without its user's logging set-up being touched.
"""

from __future__ import annotations

import contextlib
import functools
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
_API_READY = False

#: the width a console uses off a terminal: wide enough that no table cell or line is ever cut
#: (nothing edgecat prints expands to the full width, so this is a ceiling, not a padding)
UNLIMITED_WIDTH = 100_000

#: loggers whose INFO/DEBUG records are edgecat's own; any other logger (the root logger included,
#: where ONNX Runtime's quantizer logs "Increased scale[...]") reaches the user from WARNING up
OWN_LOGGERS = ("edgecat", "__main__")

#: C++ log lines TensorFlow prints while it loads (absl prefix "I0000 00:00:..." and friends): every
#: info and warning line, and the error-level lines a machine without CUDA always gets (no driver,
#: factories registered twice); any other error-level line is a real error and gets through
_TF_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    r"|E\d{4} [\d:.]+\s+\d+ \S+:\d+\] (failed call to cuInit|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|.*computation placer already registered|.*could not retrieve CUDA device count)"
    r"|To enable the following instructions:"
    r"|W0000 |I0000 )"
)

#: every native line a library writes to file descriptor 2 that tells a user nothing: TensorFlow's
#: absl lines (``E0000 ... cuInit``), LiteRT's notices when an interpreter is made, and the TFLite
#: converter's settings dump (``fully_quantize: 0, inference_type: 6, ...``) and op count. Anything
#: else printed meanwhile (a real error) is replayed.
NATIVE_NOISE = re.compile(
    _TF_NOISE.pattern
    + r"|^(INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|INFO: Initialized TensorFlow Lite runtime\."
    r"|fully_quantize: \d+, inference_type: \d+"
    r"|Estimated count of arithmetic ops: )"
)

#: Python warnings libraries raise about their own business (category, module regex, message regex):
#: Keras/TensorFlow hints about datasets and retracing, tf2onnx and ONNX Runtime deprecations, and
#: PIL's DecompressionBombWarning for a large photo edgecat reads on purpose (a real bomb, twice
#: the limit, is an error PIL raises and edgecat reports as a skipped image).
LIBRARY_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    (UserWarning, r"(keras|tensorflow|tf_keras|tf2onnx|onnx|onnxruntime|h5py|absl|edgecat)(\.|$)", ""),
    (DeprecationWarning, r"(keras|tensorflow|tf_keras|tf2onnx|onnx|onnxruntime|h5py|absl|google|edgecat)(\.|$)", ""),
    (FutureWarning, r"(keras|tensorflow|tf_keras|tf2onnx|onnx|onnxruntime|h5py|absl|edgecat)(\.|$)", ""),
    (RuntimeWarning, r"", r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels"),  # PIL's bomb warning
)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is a terminal right now (FORCE_COLOR may colour a pipe, but a pipe still
    has no width to fit)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed, or a stream without isatty
        return False


@functools.cache
def _console_class() -> type:
    from rich.console import Console, ConsoleDimensions

    class EdgecatConsole(Console):
        """A Console that fits a terminal and, off one, prints at natural width with no padding."""

        @property
        def size(self) -> Any:
            dims = Console.size.fget(self)  # type: ignore[attr-defined]
            if is_terminal(self.file):
                return dims
            return ConsoleDimensions(UNLIMITED_WIDTH, dims.height)

        @size.setter
        def size(self, new_size: Any) -> None:
            Console.size.fset(self, new_size)  # type: ignore[attr-defined]

        def _render_buffer(self, buffer: Any) -> str:
            text = super()._render_buffer(buffer)
            if not is_terminal(self.file):  # a table's last cell is padded to its column: not in a file
                text = _TRAILING_SPACES.sub("\n", text)
            return text

    return EdgecatConsole


_TRAILING_SPACES = re.compile(r"[ \t]+\n")


def make_console(stderr: bool = False) -> Any:
    """A rich Console for stdout (or stderr): on a terminal it fits the terminal as usual; written to
    a file or a pipe it never cuts, wraps or pads a line or a table cell, whatever COLUMNS says. It
    looks up sys.stdout/sys.stderr on each write (test runners swap them)."""
    return _console_class()(stderr=stderr)


def stderr_console() -> Any:
    """The one rich Console on stderr that log lines and progress bars share."""
    global _STDERR_CONSOLE
    if _STDERR_CONSOLE is None:
        _STDERR_CONSOLE = make_console(stderr=True)
    return _STDERR_CONSOLE


def progress(*columns: Any, **kwargs: Any) -> Any:
    """A rich Progress on the shared stderr console, transient, and silent when stderr is not a
    terminal or with -q."""
    from rich.progress import Progress

    console = stderr_console()
    kwargs.setdefault("transient", True)
    kwargs.setdefault("disable", _QUIET or not console.is_terminal or not is_terminal(console.file))
    return Progress(*columns, console=console, **kwargs)


@contextlib.contextmanager
def bar(description: str, total: int | None) -> Iterator[Any]:
    """Yields ``advance(n)`` of a transient bar with ETA (nothing drawn off a terminal or with -q)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    with progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn()) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n: prog.advance(task, n)


class LibraryChatterFilter(logging.Filter):
    """A handler filter: INFO and DEBUG records reach the user only from edgecat's own loggers
    (``verbosity`` 2, -vv, lets every library's through)."""

    def __init__(self, verbosity: int = 1) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or self.verbosity >= 2:
            return True
        return any(record.name == own or record.name.startswith(own + ".") for own in OWN_LOGGERS)


def one_line(message: str) -> str:
    """A log message as one line for a journal: its line breaks become `` | ``."""
    if "\n" not in message and "\r" not in message:
        return message
    return " | ".join(part.strip() for part in message.replace("\r", "\n").split("\n") if part.strip())


def make_handler(verbosity: int = 1) -> logging.Handler:
    """The log handler of the CLI and the Python API: on a terminal rich's look (level column, wrapped
    to fit); off one (file, pipe, journal) each record is one plain line ``LEVEL    message``.
    Secrets are masked and library chatter below WARNING is dropped on both."""
    from rich.logging import RichHandler

    from edgecat.redact import install as install_redaction

    class EdgecatHandler(RichHandler):
        def emit(self, record: logging.LogRecord) -> None:
            if is_terminal(self.console.file):
                super().emit(record)
                return
            try:
                message = one_line(self.format_message(record))
                line = f"{record.levelname:<8} {message}\n"
                if record.exc_info and record.exc_info[1] is not None:  # -vv's tracebacks keep their lines
                    line += logging.Formatter().formatException(record.exc_info) + "\n"
                file = self.console.file
                with getattr(self.console, "_lock", None) or contextlib.nullcontext():  # as rich's own writes
                    file.write(line)
                    file.flush()
            except Exception:  # noqa: BLE001 - logging must never take the program down
                self.handleError(record)

        def format_message(self, record: logging.LogRecord) -> str:
            return record.getMessage()

    handler = EdgecatHandler(console=stderr_console(), show_path=False, show_time=False, rich_tracebacks=False,
                             markup=False)
    handler.addFilter(LibraryChatterFilter(verbosity))
    install_redaction(handler)  # no camera password or access token in any log line
    return handler


def quiet_library_warnings() -> None:
    """Ignore the library warnings of :data:`LIBRARY_WARNINGS` (narrow filters: a warning raised from
    a user's own module, or any other category, still shows)."""
    for category, module, message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def quiet_native_env(verbosity: int = 1) -> None:
    """Environment variables that keep native libraries quiet; read when each library loads, so set
    before TensorFlow or OpenCV is imported (a value the user set wins)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    if verbosity < 2:
        # FFmpeg's "[tcp @ 0x...] Connection refused" and OpenCV's "[ WARN:0@...]" lines: edgecat
        # reports a source it cannot open in its own words
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def setup_logging(verbosity: int = 1, quiet: bool = False) -> None:
    """Log to the shared stderr console. ``verbosity`` 0 warnings, 1 info, 2+ debug (with library
    chatter, warnings and TensorFlow's start-up lines let through)."""
    global _QUIET
    _QUIET = quiet
    level = logging.WARNING if quiet or verbosity < 1 else (logging.DEBUG if verbosity > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", handlers=[make_handler(verbosity)], force=True)
    quiet_native_env(verbosity)
    if verbosity < 2:
        # Keras/TF UserWarnings (dataset shuffling hints, retracing) are noise for a CLI user.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        quiet_library_warnings()
        quiet_tensorflow_import()
    else:  # -vv given after the subcommand: undo what the group's default set up
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbosity < 2 else logging.INFO)


def setup_api_logging() -> None:
    """What the Python API calls before its work (once per process is enough; later calls are free):
    the CLI's quiet (native lines, library warnings, TensorFlow's start-up lines) and edgecat's
    INFO lines on stderr, unless the program has set up logging itself (then its handlers decide).
    The user's own loggers, handlers and warning filters are not touched."""
    global _API_READY
    if _API_READY:
        return
    _API_READY = True
    quiet_native_env()
    quiet_library_warnings()
    quiet_tensorflow_import()
    for noisy in ("tensorflow", "absl", "tf2onnx", "h5py"):
        logger = logging.getLogger(noisy)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    if logging.getLogger().handlers or logging.getLogger("edgecat").handlers:
        return
    handler = make_handler()
    handler.addFilter(_NoRootHandlers())
    logger = logging.getLogger("edgecat")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


class _NoRootHandlers(logging.Filter):
    """Steps aside once the program gives the root logger handlers of its own (no line twice)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


@contextlib.contextmanager
def quiet_native_stderr(pattern: re.Pattern[str] = NATIVE_NOISE) -> Iterator[None]:
    """Around a call into a native library that writes its own chatter to file descriptor 2
    (the TFLite converter, a LiteRT interpreter, TensorFlow's first GPU probe): those lines are
    dropped, anything else is replayed when the block ends. With -vv everything shows."""
    if logging.getLogger().level and logging.getLogger().level <= logging.DEBUG:
        yield
        return
    with fd2_filtered(pattern):
        yield


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


__all__ = ["LIBRARY_WARNINGS", "NATIVE_NOISE", "UNLIMITED_WIDTH", "LibraryChatterFilter", "bar", "fd2_filtered",
           "is_terminal", "make_console", "make_handler", "one_line", "progress", "quiet_library_warnings",
           "quiet_native_env", "quiet_native_stderr", "quiet_tensorflow_import", "setup_api_logging",
           "setup_logging", "stderr_console"]
