"""``http://:PORT``: a live view for headless devices, served by the stdlib ThreadingHTTPServer.

``/`` a small page (annotated MJPEG video, label, probability, FPS, latency), ``/stream.mjpg?source=N``
the MJPEG stream, ``/frame.jpg?source=N`` the latest frame, ``/stats.json`` the running statistics,
``/metrics`` Prometheus metrics (:mod:`edgecat.stream.metrics`); any other path is a 404.

A camera view is private, so the sink is closed by default:

- ``http://:PORT`` listens on loopback (127.0.0.1) only; another interface must be named
  (``http://0.0.0.0:PORT`` or ``http://192.168.1.20:PORT``) and then every request needs the access
  token: ``?token=...`` (the page keeps it as a cookie), ``Authorization: Bearer ...`` or
  ``X-Edgecat-Token``. The token comes from ``$EDGECAT_HTTP_TOKEN`` or is generated and shown once
  on the controlling terminal (never in the log, which may be a journal).
- At most ``max_viewers`` MJPEG streams at once (503 beyond) and ``max_connections`` connections in
  all; a client that stops reading is dropped after ``write_timeout`` seconds.
- JPEG encoding runs in its own thread, only while someone watches, at most ``max_fps`` per second:
  the pipeline only hands over the newest picture, so neither encoding nor a slow client slows
  inference.
"""

from __future__ import annotations

import contextlib
import hmac
import html
import ipaddress
import json
import logging
import os
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.redact import redact, register_secret
from edgecat.stream.base import Frame, Sink
from edgecat.stream.overlay import Result

log = logging.getLogger(__name__)

BOUNDARY = "edgecatframe"
TOKEN_ENV = "EDGECAT_HTTP_TOKEN"
COOKIE = "edgecat_token"
PATHS = ("/", "/index.html", "/stats.json", "/frame.jpg", "/stream.mjpg", "/metrics")
MAX_VIEWERS = 4
MAX_CONNECTIONS = 16  # viewers + page and stats requests; beyond this a connection gets 503 at once
WRITE_TIMEOUT = 5.0
SEND_BUFFER = 256 * 1024

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>edgecat live</title>
<style>
 body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:1em}
 .src{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
 img{width:640px;max-width:100%;background:#000;display:block}
 #stats{font-family:monospace;white-space:pre}
 .label{font-size:1.6em;font-weight:bold}
</style></head>
<body>
<h1>edgecat live: __TITLE__</h1>
<div id="sources">__SOURCES__</div>
<div id="stats">waiting for stats...</div>
<script>
// the token came in the address (?token=...): the page now holds it as a cookie, take it out of sight
if (location.search.includes('token=')) history.replaceState(null, '', location.pathname);
async function poll() {
  try {
    const s = await (await fetch('/stats.json', {cache: 'no-store'})).json();
    const lines = [`frames ${s.frames}  dropped ${s.dropped}  ${s.fps.toFixed(1)} FPS  latency p50 ${s.latency_p50_ms.toFixed(1)} ms`];
    for (const r of s.last) {
      lines.push(`source ${r.source}: ${r.label} ${(100 * r.probability).toFixed(1)}%  frame ${r.frame}`);
      const el = document.getElementById('label-' + r.source);
      if (el) el.textContent = `${r.label} ${(100 * r.probability).toFixed(0)}%`;
    }
    document.getElementById('stats').textContent = lines.join('\\n');
  } catch (e) { document.getElementById('stats').textContent = 'stream ended'; }
}
setInterval(poll, 500); poll();
</script></body></html>
"""


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and 'localhost'; any other name or address reaches beyond this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def show_on_terminal(text: str) -> bool:
    """Write ``text`` to the controlling terminal only (not stdout/stderr, which may be a journal)."""
    try:
        with open("/dev/tty", "w", encoding="utf-8") as tty:
            tty.write(text + "\n")
        return True
    except OSError:
        return False


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.timeout = self.server.sink.write_timeout  # reads and writes: a stalled client is dropped
        super().setup()
        # a bounded kernel buffer per client (no autotuning to megabytes): a viewer that stops reading
        # is found within a few frames, and memory stays bounded; plenty for a LAN
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def log_message(self, fmt: str, *args: Any) -> None:  # route access logs to logging, not stderr
        log.debug("http %s - %s", self.address_string(), redact(fmt % args))

    def _send(self, code: int, ctype: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _offered_token(self, query: dict[str, list[str]]) -> tuple[str | None, bool]:
        """(token the client offers, whether it came in the query string)."""
        if query.get("token"):
            return query["token"][0], True
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        if self.headers.get("X-Edgecat-Token"):
            return self.headers["X-Edgecat-Token"].strip(), False
        cookie = SimpleCookie()
        try:
            cookie.load(self.headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
            return None, False
        return (cookie[COOKIE].value if COOKIE in cookie else None), False

    def do_GET(self) -> None:  # http.server's naming
        sink = self.server.sink
        url = urlparse(self.path)
        if url.path not in PATHS:
            self._send(404, "text/plain", b"not found\n")
            return
        query = parse_qs(url.query)
        offered, in_query = self._offered_token(query)
        if not sink.authorised(offered):
            self._send(401, "text/plain", b"access token required: open the address edgecat printed "
                       b"(.../?token=...)\n", {"WWW-Authenticate": 'Bearer realm="edgecat"'})
            return
        try:
            source = int((query.get("source") or ["0"])[0] or 0)
        except ValueError:
            source = -1
        if not 0 <= source < max(1, sink.sources):
            self._send(404, "text/plain", b"no such source\n")
            return
        if url.path in ("/", "/index.html"):
            cookie = {}
            if in_query and sink.token:  # the page's <img> and fetch() then carry it by themselves
                cookie = {"Set-Cookie": f"{COOKIE}={sink.token}; HttpOnly; SameSite=Strict; Path=/"}
            self._send(200, "text/html; charset=utf-8", sink.page().encode(), cookie)
        elif url.path == "/metrics":  # Prometheus text (edgecat.stream.metrics), under the same token
            if sink.metrics is None:
                self._send(404, "text/plain", b"no metrics in this stream\n")
            else:
                body, ctype = sink.metrics()
                self._send(200, ctype, body)
        elif url.path == "/stats.json":
            self._send(200, "application/json", json.dumps(sink.current_stats()).encode())
        elif url.path == "/frame.jpg":
            jpeg = sink.wait_jpeg(source, 0, timeout=5.0)[1]
            if jpeg is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", jpeg)
        else:
            self._stream(source)

    def _stream(self, source: int) -> None:
        sink = self.server.sink
        if not sink.add_viewer():
            self._send(503, "text/plain", f"too many viewers (at most {sink.max_viewers})\n".encode(),
                       {"Retry-After": "5"})
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            while not sink.closed:
                seq, jpeg = sink.wait_jpeg(source, seq, timeout=1.0)
                if jpeg is None:
                    if self._client_gone():  # no frames to write: notice a closed viewer anyway
                        break
                    continue
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except TimeoutError:
            sink.client_dropped(self.address_string())
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sink.remove_viewer()

    def _client_gone(self) -> bool:
        """Whether the viewer closed its end (readable with nothing to read), so its slot frees."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class _Server(ThreadingHTTPServer):
    """Bounded: past ``max_connections`` open connections, a new one gets 503 without a thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sink: HttpSink) -> None:
        self.sink = sink
        self.active = 0
        self._count_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            full = self.active >= self.sink.max_connections
            if not full:
                self.active += 1
        if full:
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                                b"Content-Length: 17\r\nRetry-After: 5\r\n\r\ntoo many clients\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self.active -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that misbehaves is not worth a traceback on the device's console
        log.debug("http: error serving %s", client_address[0] if client_address else "?", exc_info=True)


class HttpSink(Sink):
    """MJPEG + stats server; ``port`` 0 picks a free port (see :attr:`url` after ``open``).

    ``token``: the access token (default ``$EDGECAT_HTTP_TOKEN``); required, and generated when
    absent, on any interface but loopback. When given it is checked on loopback too.
    """

    needs_images = True

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, max_fps: float = 25.0, quality: int = 80,
                 token: str | None = None, max_viewers: int = MAX_VIEWERS, max_connections: int = MAX_CONNECTIONS,
                 write_timeout: float = WRITE_TIMEOUT, sources: int = 1, title: str = "stream") -> None:
        self.host, self.port = host or "127.0.0.1", port
        self.uri = f"http://{self.host}:{port}"
        self.remote = not is_loopback(self.host)
        self.token = token or os.environ.get(TOKEN_ENV) or None
        register_secret(self.token)
        self.max_fps, self.quality = max_fps, quality
        self.max_viewers, self.max_connections = max_viewers, max(max_connections, max_viewers + 2)
        self.write_timeout = write_timeout
        self.watchers = 0
        self.dropped_clients = 0
        self.closed = False
        self._cond = threading.Condition()
        self._jpegs: dict[int, tuple[int, bytes]] = {}
        self._pending: dict[int, np.ndarray] = {}
        self._last_submit: dict[int, float] = {}
        self._stats: dict[str, Any] = {"frames": 0, "dropped": 0, "fps": 0.0, "latency_p50_ms": 0.0, "last": []}
        self._last: dict[int, dict[str, Any]] = {}
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self.title = title  # the page's heading: the bundle's name
        self.sources = sources  # one picture per source on the page
        self.metrics: Callable[[], tuple[bytes, str]] | None = None  # set by the stream: (body, content type)

    @property
    def url(self) -> str:
        """The address to open on this machine (loopback when listening on all interfaces)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def _ensure_token(self) -> None:
        """Off loopback a token is mandatory: generate one and show it once, on the terminal only."""
        if not self.remote or self.token:
            return
        token = secrets.token_urlsafe(24)
        host = socket.gethostname() if self.host == "0.0.0.0" else self.host
        shown = show_on_terminal(f"live view (all interfaces; token shown once, not logged): "
                                 f"http://{host}:{self.port}/?token={token}")
        if not shown:
            raise EdgecatError(
                f"the live view on {self.host} needs an access token and there is no terminal to show a "
                f"generated one on (output goes to a log): set {TOKEN_ENV} (e.g. in the service's 0600 "
                "env file), or listen on this machine only with http://:PORT")
        self.token = token
        register_secret(token)

    def open(self, source_fps: float | None = None) -> None:
        try:
            self._server = _Server((self.host, self.port), self)
        except OSError as exc:
            raise EdgecatError(f"cannot serve on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self.port = self._server.server_address[1]
        try:
            self._ensure_token()  # bound but not serving yet: nothing is answered without a token
        except EdgecatError:
            self._server.server_close()
            self._server = None
            raise
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="http-sink",
                             daemon=True),
            threading.Thread(target=self._encode_loop, name="http-sink-encoder", daemon=True),
        ]
        for t in self._threads:
            t.start()
        log.info("live view: %s (listening on %s:%d%s)", self.url, self.host, self.port,
                 ", access token required" if self.token else ", this machine only")

    # -- access
    def authorised(self, offered: str | None) -> bool:
        if not self.token:
            return True
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def add_viewer(self) -> bool:
        with self._cond:
            if self.watchers >= self.max_viewers:
                return False
            self.watchers += 1
            return True

    def remove_viewer(self) -> None:
        with self._cond:
            self.watchers -= 1
            self._cond.notify_all()

    def client_dropped(self, who: str) -> None:
        log.info("live view: dropped %s (it stopped reading for %.0f s)", who, self.write_timeout)
        with self._cond:
            self.dropped_clients += 1
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (checked on every viewer/frame event) holds; False on timeout."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def page(self) -> str:
        srcs = "".join(
            f'<div class="src"><div class="label" id="label-{i}">-</div>'
            f'<img id="video-{i}" src="/stream.mjpg?source={i}" alt="source {i}"></div>'
            for i in range(self.sources)
        )
        # the title is the bundle's name, from a manifest that may come from anyone: escape it
        return PAGE.replace("__TITLE__", html.escape(self.title)).replace("__SOURCES__", srcs)

    # -- pipeline side: never waits for encoding or for a client
    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        self._last[result.source] = {"source": result.source, "frame": result.index, "label": result.label,
                                     "probability": round(result.probability, 4),
                                     "latency_ms": round(result.latency_ms, 2)}
        now = time.monotonic()
        if now - self._last_submit.get(frame.source, 0.0) < 1.0 / self.max_fps:
            return
        if self.watchers <= 0 and frame.source in self._jpegs:
            return  # nobody watching: keep one recent frame for /frame.jpg, skip the encoding work
        self._last_submit[frame.source] = now
        with self._cond:
            self._pending[frame.source] = annotated if annotated is not None else frame.bgr()
            self._cond.notify_all()

    def _encode_loop(self) -> None:
        import cv2

        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self.closed)
                if self.closed:
                    return
                pending, self._pending = self._pending, {}
            for source, image in pending.items():
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    continue
                with self._cond:
                    seq = self._jpegs.get(source, (0, b""))[0] + 1
                    self._jpegs[source] = (seq, buf.tobytes())
                    self._cond.notify_all()

    def stats(self, stats: dict[str, Any]) -> None:
        with self._cond:
            self._stats = {**stats, "last": [self._last[k] for k in sorted(self._last)]}
            self._cond.notify_all()

    def current_stats(self) -> dict[str, Any]:
        return {**self._stats, "watchers": self.watchers, "closed": self.closed}

    def wait_jpeg(self, source: int, after: int, timeout: float) -> tuple[int, bytes | None]:
        """The newest JPEG of ``source`` with a sequence number above ``after`` (or None on timeout)."""
        end = time.monotonic() + timeout
        with self._cond:
            while not self.closed:
                seq, jpeg = self._jpegs.get(source, (0, b""))
                if seq > after and jpeg:
                    return seq, jpeg
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        return after, None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for t in self._threads:
            t.join(5.0)
