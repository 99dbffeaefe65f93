"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations


class EdgecatError(Exception):
    """An error the user can fix (bad path, bad file, missing runtime); shown without a traceback."""

    exit_code = 2


class MissingDependencyError(EdgecatError):
    """An optional runtime or extra is not installed."""

    exit_code = 3


def require_tensorflow() -> None:
    """Fail with an install hint when the training extra is missing."""
    try:
        import tensorflow  # noqa: F401
        import keras  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in an env without TF
        raise MissingDependencyError(
            f"TensorFlow/Keras is not installed ({exc.name}); install the training extra: "
            "pip install 'edgecat[train]'"
        ) from exc


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message ('' when it has none): library errors
    often carry pages of context that do not belong in a one-line error."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return ""
