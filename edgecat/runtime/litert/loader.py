"""Opening a bundle's .tflite file with LiteRT (ai-edge-litert), XNNPACK on by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError, MissingDependencyError, first_line
from edgecat.runtime.base import physical_cores


def make_interpreter(path: str | Path, threads: int | None = None, xnnpack: bool = True) -> Any:
    """An interpreter with XNNPACK (LiteRT's default CPU delegate) and ``threads`` threads."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as exc:
        raise MissingDependencyError("ai-edge-litert is not installed: pip install 'edgecat[litert]'") from exc
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        return Interpreter(model_path=str(path), num_threads=int(threads or physical_cores()),
                           experimental_op_resolver_type=resolver)
    except Exception as exc:  # LiteRT raises plain exceptions for a bad file
        raise EdgecatError(f"cannot open {path} with LiteRT: {first_line(exc)[:200]}") from exc


__all__ = ["make_interpreter"]
