"""Prometheus metrics of a stream (prometheus-client): ``/metrics`` on the live view, or alone with
``--metrics [HOST]:PORT``.

A fleet is watched by Prometheus, as Triton's and most servers' metrics are. Exposed, all prefixed
``edgecat_``:

- ``frames_total{source}``, ``predictions_total{source,label}`` (per-class counts),
  ``dropped_frames_total{source}`` (a live camera's frames overwritten before inference took them),
  ``source_reconnects_total{source}``, ``sink_dropped_messages_total{sink}`` and
  ``sink_reconnects_total{sink}`` (an MQTT broker that went away);
- ``fps`` (frames per second over the last ~2 s);
- histograms ``latency_seconds`` (capture to result, per frame) and ``inference_seconds`` (one model
  call, per batch);
- ``model_info{model,bundle,backend,precision}`` = 1 for the model running now, and
  ``model_swaps_total{result}`` (``--watch`` / SIGHUP).

Access follows the live view's rules: on loopback (the default) anyone on this machine may read;
on another interface a token is required (``$EDGECAT_HTTP_TOKEN``, sent as ``Authorization: Bearer``,
``X-Edgecat-Token`` or ``?token=``), which Prometheus sends with ``authorization: credentials_file``.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.redact import register_secret
from edgecat.stream.base import Sink
from edgecat.stream.overlay import Result
from edgecat.stream.base import Frame

log = logging.getLogger(__name__)

TOKEN_ENV = "EDGECAT_HTTP_TOKEN"
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
INFERENCE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.033, 0.05, 0.1, 0.25, 0.5, 1.0)


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise MissingDependencyError("metrics need prometheus-client: pip install prometheus-client") from None
    return prometheus_client


class StreamMetrics(Sink):
    """Collects a stream's figures as a sink (every frame, the model info) plus a per-batch hook for
    inference time; counters kept by others (sources, other sinks) are read when scraped."""

    needs_images = False
    uri = "metrics"

    def __init__(self) -> None:
        pc = _client()
        self.registry = pc.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = pc.Counter("edgecat_frames", "Frames processed", ["source"], registry=r)
        self.predictions = pc.Counter("edgecat_predictions", "Frames per decided label", ["source", "label"],
                                      registry=r)
        self.fps = pc.Gauge("edgecat_fps", "Frames per second over the last ~2 s", registry=r)
        self.latency = pc.Histogram("edgecat_latency_seconds", "Capture to result, per frame",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference = pc.Histogram("edgecat_inference_seconds", "One model call (a batch)",
                                      buckets=INFERENCE_BUCKETS, registry=r)
        self.info = pc.Gauge("edgecat_model_info", "The model running now (1)",
                             ["model", "bundle", "backend", "precision"], registry=r)
        self.swaps = pc.Counter("edgecat_model_swaps", "Bundles swapped in (ok) or refused (refused)", ["result"],
                                registry=r)
        self._live: Callable[[], dict[str, Any]] | None = None
        self._info_labels: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        r.register(_LiveCollector(self))

    def watch(self, live: Callable[[], dict[str, Any]]) -> None:
        """``live()`` -> {"sources": [(name, dropped, reconnects)], "sinks": [(uri, dropped, reconnects)]},
        read at every scrape."""
        self._live = live

    # -- sink side
    def model(self, info: dict[str, Any]) -> None:
        labels = tuple(str(info.get(k, "")) for k in ("model", "bundle", "backend", "precision"))
        with self._lock:
            if self._info_labels is not None and self._info_labels != labels:
                self.info.remove(*self._info_labels)
            self._info_labels = labels
            self.info.labels(*labels).set(1)

    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        src = str(result.source)
        self.frames.labels(src).inc()
        self.predictions.labels(src, result.label).inc()
        self.latency.observe(result.latency_ms / 1000.0)
        self.fps.set(fps)

    def batch(self, frames: int, inference_ms: float) -> None:
        """Called by the stream after every model call."""
        self.inference.observe(inference_ms / 1000.0)

    def swapped(self, ok: bool) -> None:
        self.swaps.labels("ok" if ok else "refused").inc()

    def text(self) -> tuple[bytes, str]:
        """(body, content type) in Prometheus' text format."""
        pc = _client()
        return pc.generate_latest(self.registry), pc.CONTENT_TYPE_LATEST


class _LiveCollector:
    """Counters that live elsewhere (capture threads, other sinks), read at scrape time."""

    def __init__(self, metrics: StreamMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        live = self.m._live() if self.m._live else {"sources": [], "sinks": []}
        dropped = CounterMetricFamily("edgecat_dropped_frames", "Live-source frames overwritten before inference",
                                      labels=["source"])
        recon = CounterMetricFamily("edgecat_source_reconnects", "Reconnections of a lost live source",
                                    labels=["source"])
        for name, d, rc in live.get("sources", []):
            dropped.add_metric([str(name)], d)
            recon.add_metric([str(name)], rc)
        sdrop = CounterMetricFamily("edgecat_sink_dropped_messages", "Messages a sink could not deliver",
                                    labels=["sink"])
        srecon = CounterMetricFamily("edgecat_sink_reconnects", "Reconnections of a sink (MQTT broker)",
                                     labels=["sink"])
        for uri, d, rc in live.get("sinks", []):
            sdrop.add_metric([uri], d)
            srecon.add_metric([uri], rc)
        yield from (dropped, recon, sdrop, srecon)


def offered_token(headers: Any, query: dict[str, list[str]]) -> str | None:
    """The token a request offers (Bearer, X-Edgecat-Token or ?token=)."""
    if query.get("token"):
        return query["token"][0]
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return (headers.get("X-Edgecat-Token") or "").strip() or None


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("metrics %s - %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        srv = self.server
        if url.path != "/metrics":
            code, ctype, body = 404, "text/plain", b"not found (try /metrics)\n"
        elif srv.token and not _same(offered_token(self.headers, parse_qs(url.query)), srv.token):
            code, ctype, body = 401, "text/plain", b"access token required\n"
        else:
            body, ctype = srv.metrics.text()
            code = 200
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="edgecat"')
        self.end_headers()
        self.wfile.write(body)


def _same(offered: str | None, token: str) -> bool:
    return offered is not None and hmac.compare_digest(offered.encode(), token.encode())


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: StreamMetrics, token: str | None) -> None:
        self.metrics, self.token = metrics, token
        super().__init__(address, _Handler)


def parse_address(text: str) -> tuple[str, int]:
    """``:PORT`` (loopback), ``HOST:PORT``; one line for anything else."""
    m = re.fullmatch(r"\[?([^\]]*?)\]?:(\d+)", text.strip())
    if not m or not 0 <= int(m.group(2)) <= 65535:
        raise EdgecatError(f"bad --metrics '{text}': expected :PORT (this machine only) or HOST:PORT "
                           "(e.g. 0.0.0.0:9100, with $EDGECAT_HTTP_TOKEN)")
    return m.group(1) or "127.0.0.1", int(m.group(2))


class MetricsServer:
    """``--metrics [HOST]:PORT``: /metrics alone, for a stream without the live view."""

    def __init__(self, address: str, metrics: StreamMetrics, token: str | None = None) -> None:
        from edgecat.stream.http_sink import is_loopback

        self.host, self.port = parse_address(address)
        self.metrics = metrics
        self.token = token or os.environ.get(TOKEN_ENV) or None
        register_secret(self.token)
        if not is_loopback(self.host) and not self.token:
            raise EdgecatError(f"--metrics on {self.host} reaches beyond this machine and needs an access token: "
                               f"set {TOKEN_ENV} (e.g. in the service's 0600 env file), or use :{self.port}")
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        try:
            self._server = _MetricsServer((self.host, self.port), self.metrics, self.token)
        except OSError as exc:
            raise EdgecatError(f"cannot serve metrics on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics: %s%s", self.url, " (access token required)" if self.token else " (this machine only)")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
