"""``http://:PORT``: a live view for headless devices, served by the stdlib ThreadingHTTPServer.

``/`` a small page (annotated MJPEG video, label, probability, FPS, latency), ``/stream.mjpg?source=N``
the MJPEG stream, ``/frame.jpg?source=N`` the latest frame, ``/stats.json`` the running statistics.
JPEGs are only encoded while someone is watching, at most ``max_fps`` per second.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.stream.overlay import Result
from edgecat.stream.sinks import Sink
from edgecat.stream.sources import Frame

log = logging.getLogger(__name__)

BOUNDARY = "edgecatframe"

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
<p>frames seen by this page: <span id="frames-seen">0</span> <span id="frame-size"></span></p>
<div id="stats">waiting for stats...</div>
<canvas id="probe" width="16" height="16" style="display:none"></canvas>
<script>
const probe = document.getElementById('probe').getContext('2d', {willReadFrequently: true});
let seen = 0, lastSig = null;
function checkVideo() {
  // count distinct pictures arriving in the MJPEG element (same origin: the canvas is readable)
  const img = document.getElementById('video-0');
  if (img && img.naturalWidth > 0) {
    probe.drawImage(img, 0, 0, 16, 16);
    const d = probe.getImageData(0, 0, 16, 16).data;
    let sig = 0; for (let i = 0; i < d.length; i += 7) sig = (sig * 31 + d[i]) >>> 0;
    if (sig !== lastSig) { lastSig = sig; seen++; }
    document.getElementById('frames-seen').textContent = seen;
    document.getElementById('frame-size').textContent = '(' + img.naturalWidth + 'x' + img.naturalHeight + ')';
  }
}
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
setInterval(checkVideo, 100); setInterval(poll, 500); poll();
</script></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, fmt: str, *args: Any) -> None:  # route access logs to logging, not stderr
        log.debug("http %s - %s", self.address_string(), fmt % args)

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        sink = self.server.sink
        url = urlparse(self.path)
        query = parse_qs(url.query)
        source = int((query.get("source") or ["0"])[0] or 0)
        if url.path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", sink.page().encode())
        elif url.path == "/stats.json":
            self._send(200, "application/json", json.dumps(sink.current_stats()).encode())
        elif url.path == "/frame.jpg":
            jpeg = sink.wait_jpeg(source, 0, timeout=5.0)[1]
            if jpeg is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", jpeg)
        elif url.path == "/stream.mjpg":
            self._stream(source)
        else:
            self._send(404, "text/plain", b"not found\n")

    def _stream(self, source: int) -> None:
        sink = self.server.sink
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        sink.watch(+1)
        seq = 0
        try:
            while not sink.closed:
                seq, jpeg = sink.wait_jpeg(source, seq, timeout=1.0)
                if jpeg is None:
                    continue
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode())
                self.wfile.write(jpeg)
                self.wfile.write(b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sink.watch(-1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: HttpSink


class HttpSink(Sink):
    """MJPEG + stats server; ``port`` 0 picks a free port (see :attr:`url` after ``open``)."""

    needs_images = True

    def __init__(self, host: str = "0.0.0.0", port: int = 8080, max_fps: float = 25.0, quality: int = 80) -> None:
        self.host, self.port = host, port
        self.uri = f"http://{host}:{port}"
        self.max_fps = max_fps
        self.quality = quality
        self.watchers = 0
        self.closed = False
        self._cond = threading.Condition()
        self._jpegs: dict[int, tuple[int, bytes]] = {}
        self._last_encode: dict[int, float] = {}
        self._stats: dict[str, Any] = {"frames": 0, "dropped": 0, "fps": 0.0, "latency_p50_ms": 0.0, "last": []}
        self._last: dict[int, dict[str, Any]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.title = "stream"
        self.sources = 1

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/"

    def open(self) -> None:
        try:
            self._server = _Server((self.host, self.port), _Handler)
        except OSError as exc:
            raise EdgecatError(f"cannot serve on {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._server.sink = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-sink", daemon=True)
        self._thread.start()
        log.info("live view: %s (listening on %s:%d)", self.url, self.host, self.port)

    def watch(self, delta: int) -> None:
        with self._cond:
            self.watchers += delta

    def page(self) -> str:
        srcs = "".join(
            f'<div class="src"><div class="label" id="label-{i}">-</div>'
            f'<img id="video-{i}" src="/stream.mjpg?source={i}" alt="source {i}"></div>'
            for i in range(self.sources)
        )
        return PAGE.replace("__TITLE__", self.title).replace("__SOURCES__", srcs)

    # -- pipeline side
    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        self._last[result.source] = {"source": result.source, "frame": result.index, "label": result.label,
                                     "probability": round(result.probability, 4),
                                     "latency_ms": round(result.latency_ms, 2)}
        now = time.monotonic()
        if now - self._last_encode.get(frame.source, 0.0) < 1.0 / self.max_fps:
            return
        if self.watchers <= 0 and frame.source in self._jpegs:
            return  # nobody watching: keep one recent frame for /frame.jpg, skip the encoding work
        import cv2

        ok, buf = cv2.imencode(".jpg", annotated if annotated is not None else frame.bgr(),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        self._last_encode[frame.source] = now
        with self._cond:
            seq = self._jpegs.get(frame.source, (0, b""))[0] + 1
            self._jpegs[frame.source] = (seq, buf.tobytes())
            self._cond.notify_all()

    def stats(self, stats: dict[str, Any]) -> None:
        self._stats = {**stats, "last": [self._last[k] for k in sorted(self._last)]}

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
