"""How a bundle is served by Triton: the model names ``edgecat export --triton`` writes and the
client derives (so a bench against a served bundle needs no mapping), and the server's URL."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edgecat import artifacts
from edgecat.bundle import Bundle

DEFAULT_URL = "localhost:8000"
URL_ENV = "EDGECAT_TRITON_URL"


def server_url(url: str | None = None) -> str:
    """host:port as tritonclient.http wants it (an http:// prefix is accepted and dropped, and so are
    credentials: see :func:`server_credentials`)."""
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            url = url[len(prefix):]
    return url.rpartition("@")[2].rstrip("/")


def server_credentials(url: str | None = None) -> tuple[str, str] | None:
    """(user, password) from ``http://user:password@host:8000`` (a server behind basic auth), or None.

    They go to the server as an HTTP basic-auth header only; every message shows the bare host:port.
    """
    url = url or os.environ.get(URL_ENV) or DEFAULT_URL
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def model_name(bundle: Bundle, artifact: str) -> str:
    """Triton model name for one artifact: ``<bundle name>-<artifact key>``, filesystem- and URL-safe.

    The Triton runtime derives the same name, so a bench against a served bundle needs no mapping.
    """
    raw = f"{bundle.name}-{artifact}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._") or "edgecat"


def is_engine(key: str, entry: dict[str, Any]) -> bool:
    """TensorRT engines are stored under ``trt-*`` keys (``.engine``/``.plan`` files)."""
    fmt = str(entry.get("format", "")).lower()
    suffix = Path(str(entry.get("file", ""))).suffix.lower()
    known = artifacts.ARTIFACTS.get(key)
    if known is not None:
        return known.format == "engine"
    return key.startswith("trt-") or fmt in {"tensorrt", "engine", "plan"} or suffix in {".engine", ".plan"}


def is_onnx(key: str, entry: dict[str, Any]) -> bool:
    return str(entry.get("format", "")).lower() == "onnx" or str(entry.get("file", "")).endswith(".onnx")


def servable_artifacts(bundle: Bundle) -> list[str]:
    """Artifact keys Triton can serve, ONNX first (portable) then TensorRT engines; a listed file
    that was deleted (``missing``) is left out rather than stopping the whole repository."""
    present = {k: e for k, e in bundle.artifacts.items() if bundle.has(k)}
    onnx = [k for k, e in present.items() if is_onnx(k, e) and not is_engine(k, e)]
    engines = [k for k, e in present.items() if is_engine(k, e)]
    return sorted(onnx) + sorted(engines)


def artifact_precision(key: str, entry: dict[str, Any]) -> str:
    """The entry's recorded precision, else the registry's for its key, else the one its key names."""
    prec = entry.get("precision") or (artifacts.ARTIFACTS[key].precision if key in artifacts.ARTIFACTS else None)
    if prec:
        return str(prec)
    for p in reversed(artifacts.PRECISIONS):
        if p in key:
            return p
    return "fp32"


__all__ = ["DEFAULT_URL", "URL_ENV", "artifact_precision", "is_engine", "is_onnx", "model_name",
           "servable_artifacts", "server_credentials", "server_url"]
