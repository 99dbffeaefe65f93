"""Secure by default on the device: no password leaves the process, the live view answers
its owner only and cannot be tied up, and slow viewers never slow inference.

Everything here connects to 127.0.0.1 only (a server may *bind* 0.0.0.0 to show the token rule).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from edgecat.bundle import Bundle
from edgecat.cli import main
from edgecat.errors import EdgecatError
from edgecat.redact import RedactingFilter, redact
from edgecat.stream import StreamConfig, Streamer
from edgecat.stream.http_sink import HttpSink
from edgecat.stream.overlay import Result
from edgecat.stream.base import Sink
from edgecat.stream.sink_registry import parse_sink
from edgecat.stream.base import Frame
from edgecat.stream.uri import parse_source
from edgecat.synthetic import CLASSES, make_image, make_video

PASSWORD = "s3cret-Pa55"
UNREACHABLE = f"rtsp://admin:{PASSWORD}@127.0.0.1:1/cam"


@pytest.fixture
def bundle(tmp_path) -> Bundle:
    return Bundle.create(tmp_path / "b", name="colour", backbone="none", input_size=(48, 48),
                         classes=list(CLASSES), preprocessing="none")


# ------------------------------------------------------------------------------ redaction
@pytest.mark.parametrize("text, want", [
    (UNREACHABLE, "rtsp://admin:***@127.0.0.1:1/cam"),
    ("open rtsp://u:p@ss@cam:554/a failed", "open rtsp://u:***@cam:554/a failed"),
    ("http://cam/video?user=admin&password=x1&ch=1", "http://cam/video?user=admin&password=***&ch=1"),
    ("GET /stream.mjpg?source=0&token=abcdef HTTP/1.1", "GET /stream.mjpg?source=0&token=*** HTTP/1.1"),
    ("http://127.0.0.1:8080/stream.mjpg", "http://127.0.0.1:8080/stream.mjpg"),
    ("rtsp://cam.local/live", "rtsp://cam.local/live"),
])
def test_redact(text, want):
    assert redact(text) == want


def test_credentials_from_environment_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECAT_RTSP_USER", "admin")
    monkeypatch.setenv("EDGECAT_RTSP_PASSWORD", "p@ss word")
    spec = parse_source("rtsp://cam.local:554/live")
    assert spec.target == "rtsp://admin:p%40ss%20word@cam.local:554/live"
    assert spec.uri == "rtsp://cam.local:554/live" and "word" not in repr(spec)
    creds = tmp_path / "cameras"
    creds.write_text(f"machine cam2.local login viewer password {PASSWORD}\n")
    creds.chmod(0o644)
    with pytest.raises(EdgecatError, match="chmod 600"):
        parse_source("rtsp://cam2.local/live", str(creds))
    creds.chmod(0o600)
    monkeypatch.setenv("EDGECAT_CREDENTIALS", str(creds))
    assert parse_source("rtsp://cam2.local/live").target == f"rtsp://viewer:{PASSWORD}@cam2.local/live"
    assert parse_source("rtsp://other:pw@cam2.local/live").target == "rtsp://other:pw@cam2.local/live"


def test_unreachable_camera_error_is_one_redacted_line_without_ffmpeg_chatter(bundle, tmp_path):
    """Through the real CLI in a subprocess: FFmpeg writes to file descriptor 2 itself."""
    events = tmp_path / "e.jsonl"
    cmd = [sys.executable, "-m", "edgecat", "stream", str(bundle.path), "--source", UNREACHABLE,
           "--sink", f"jsonl://{events}"]
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert PASSWORD not in out and "[tcp @" not in out and "WARN" not in out, out
    assert out.strip().splitlines() == ["error: cannot open stream rtsp://admin:***@127.0.0.1:1/cam "
                                        "(unreachable, wrong path or credentials)"]
    # Click's runner: the same line, from the EdgecatError itself
    result = CliRunner().invoke(main, ["stream", str(bundle.path), "--source", UNREACHABLE])
    assert result.exit_code == 2 and PASSWORD not in result.output and "admin:***@" in result.output


def test_logging_filter_redacts_any_logger():
    record = logging.LogRecord("somelib", logging.INFO, __file__, 1, "connecting to %s", (UNREACHABLE,), None)
    RedactingFilter().filter(record)
    assert record.getMessage() == "connecting to rtsp://admin:***@127.0.0.1:1/cam"


def _camera(stop: threading.Event) -> HttpSink:
    """Our own MJPEG server as a password-protected network camera (it ignores the password)."""
    import cv2

    cam = HttpSink("127.0.0.1", 0, max_fps=100)
    cam.open()
    cam.watchers = 1  # encode every frame
    picture = cv2.cvtColor(make_image(1, 96, np.random.default_rng(1)), cv2.COLOR_RGB2BGR)

    def feed() -> None:
        i = 0
        while not stop.wait(1 / 30):
            cam.write(Frame(0, i, picture, picture, time.perf_counter()),
                      Result(0, i, "dog", 1.0, [0.0, 1.0], 0.0, 0.0, time.time()), 30.0, None)
            i += 1
        cam.close()

    threading.Thread(target=feed, daemon=True).start()
    return cam


def test_password_in_no_output_channel(bundle, tmp_path, caplog):
    """Logs, JSONL, summary (and its JSON), stats, the live page: a stream from a camera whose URI
    carries a password, that is lost and reconnected, shows the URI only as admin:***@."""
    from conftest import ColourRuntime

    stop = threading.Event()
    cam = _camera(stop)
    source = f"http://admin:{PASSWORD}@127.0.0.1:{cam.port}/stream.mjpg"
    events, summary_json = tmp_path / "events.jsonl", tmp_path / "summary.json"
    streamer = Streamer(bundle, StreamConfig(sources=[source], sinks=[f"jsonl://{events}", "http://127.0.0.1:0"],
                                             reconnect_seconds=0.5, duration=30), runtime=ColourRuntime(bundle))
    view: HttpSink = streamer.sinks[1]  # type: ignore[assignment]
    result: dict = {}
    with caplog.at_level(logging.DEBUG, logger="edgecat"):
        thread = threading.Thread(target=lambda: result.update(summary=streamer.run()), daemon=True)
        thread.start()
        assert view.wait_for(lambda: view._stats.get("frames", 0) >= 5 or view.closed, 20), "no frames"
        pages = []
        for path in ("", "stats.json", "frame.jpg"):
            with urllib.request.urlopen(view.url + path, timeout=5) as r:
                pages.append(r.read())
        stop.set()  # the camera goes away: lost, reconnect attempts, end
        thread.join(30)
    summary = result["summary"]
    from edgecat.fsutil import write_json

    write_json(summary_json, summary.as_dict())
    channels = {"logs": caplog.text, "jsonl": events.read_text(), "summary": summary.line(),
                "summary.json": summary_json.read_text(), "page": pages[0].decode(), "stats": pages[1].decode()}
    for name, text in channels.items():
        assert PASSWORD not in text, name
    assert json.loads(pages[1])["sources"] == [f"http://admin:***@127.0.0.1:{cam.port}/stream.mjpg"]
    assert summary.sources[0]["uri"] == f"http://admin:***@127.0.0.1:{cam.port}/stream.mjpg"
    assert "admin:***@" in caplog.text and "lost; reconnecting" in caplog.text
    assert summary.frames >= 5 and len(events.read_text().splitlines()) == summary.frames


def test_triton_url_password_stays_out_of_errors(bundle):
    pytest.importorskip("tritonclient.http")
    from edgecat.runtime.triton.runner import TritonRuntime

    with pytest.raises(EdgecatError) as err:
        TritonRuntime(bundle, "fp32", url=f"http://admin:{PASSWORD}@127.0.0.1:1", timeout=2)
    assert PASSWORD not in str(err.value) and "127.0.0.1:1" in str(err.value)


# ------------------------------------------------------------------------------ live view
def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, (r.read(200) if "mjpg" in url else r.read()), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_http_sink_defaults_to_loopback():
    sink = parse_sink("http://:8080")
    assert isinstance(sink, HttpSink) and sink.host == "127.0.0.1" and not sink.remote
    assert parse_sink("http://0.0.0.0:8080").remote  # naming an interface is how it is opened up


def test_beyond_loopback_every_path_needs_the_token(monkeypatch):
    monkeypatch.delenv("EDGECAT_HTTP_TOKEN", raising=False)
    token = "t0ken-for-this-test-only"
    sink = HttpSink("0.0.0.0", 0, token=token)
    sink.open()
    try:
        img = np.zeros((48, 64, 3), np.uint8)
        sink.write(Frame(0, 0, img, img, time.perf_counter()), Result(0, 0, "cat", 0.9, [0.9, 0.1], 1, 1, 0), 1, None)
        base = f"http://127.0.0.1:{sink.port}"
        for path in ("/", "/stats.json", "/stream.mjpg", "/frame.jpg"):
            assert _get(base + path)[0] == 401, path
            assert _get(base + path + "?token=wrong")[0] == 401, path
            assert _get(base + path, {"Authorization": "Bearer wrong"})[0] == 401, path
        code, body, headers = _get(f"{base}/?token={token}")
        assert code == 200 and b"edgecat live" in body and token not in body.decode()
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"]
        assert _get(base + "/stats.json", {"Cookie": cookie})[0] == 200  # what the page's fetch() sends
        assert _get(base + "/stream.mjpg", {"Authorization": f"Bearer {token}"})[0] == 200
        assert _get(base + "/frame.jpg", {"X-Edgecat-Token": token})[0] == 200
        for path in ("/etc/passwd", "/../edgecat.json", "/stats.json/x", "/favicon.ico"):
            assert _get(f"{base}{path}?token={token}")[0] == 404, path
        assert _get(f"{base}/stream.mjpg?source=7&token={token}")[0] == 404
        assert _get(f"{base}/stream.mjpg?source=x&token={token}")[0] == 404
    finally:
        sink.close()


def test_beyond_loopback_without_a_terminal_asks_for_the_token_variable(monkeypatch, caplog):
    import edgecat.stream.http_sink as http_sink

    monkeypatch.delenv("EDGECAT_HTTP_TOKEN", raising=False)
    monkeypatch.setattr(http_sink, "show_on_terminal", lambda text: False)  # a service: output is a journal
    with pytest.raises(EdgecatError, match="EDGECAT_HTTP_TOKEN"):
        HttpSink("0.0.0.0", 0).open()
    shown: list[str] = []
    monkeypatch.setattr(http_sink, "show_on_terminal", lambda text: shown.append(text) or True)
    sink = HttpSink("0.0.0.0", 0)
    with caplog.at_level(logging.DEBUG, logger="edgecat"):
        sink.open()
        sink.close()
    assert sink.token and len(sink.token) >= 32 and shown == [shown[0]] and sink.token in shown[0]
    assert sink.token not in caplog.text and "access token required" in caplog.text


def _open_stream(port: int) -> tuple[socket.socket, str]:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    status = s.makefile("rb").readline().decode()
    return s, status


def test_fifth_viewer_gets_503(monkeypatch):
    monkeypatch.delenv("EDGECAT_HTTP_TOKEN", raising=False)
    sink = HttpSink("127.0.0.1", 0)
    sink.open()
    viewers: list[socket.socket] = []
    try:
        for _ in range(4):
            s, status = _open_stream(sink.port)
            viewers.append(s)
            assert " 200 " in status
        s, status = _open_stream(sink.port)
        s.close()
        assert " 503 " in status and sink.watchers == 4
        viewers.pop().close()
        assert sink.wait_for(lambda: sink.watchers == 3, 10)  # a freed slot is given back
        s, status = _open_stream(sink.port)
        viewers.append(s)
        assert " 200 " in status
    finally:
        for s in viewers:
            s.close()
        sink.close()


class _Times(Sink):
    """Records when the pipeline hands each result to its sinks."""

    needs_images = False

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cond = threading.Condition()

    def write(self, frame, result, fps, annotated) -> None:
        with self.cond:
            self.times.append(time.perf_counter())
            self.cond.notify_all()

    def wait_count(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.times) >= n, timeout)


def test_stalled_viewer_is_dropped_without_slowing_the_pipeline(bundle, tmp_path, monkeypatch):
    """A client that never reads: the server drops it after the write timeout while the pipeline keeps
    the camera's 30 FPS (realtime playback), with no gap as long as the timeout."""
    from conftest import ColourRuntime

    monkeypatch.delenv("EDGECAT_HTTP_TOKEN", raising=False)
    video = make_video(tmp_path / "clip.mp4", [0, 1] * 15, size=(320, 240), fps=30)
    streamer = Streamer(bundle, StreamConfig(sources=[str(video)], sinks=["http://127.0.0.1:0"], loop=True,
                                             realtime=True, duration=60), runtime=ColourRuntime(bundle))
    view: HttpSink = streamer.sinks[0]  # type: ignore[assignment]
    view.write_timeout = 1.0
    times = _Times()
    streamer.sinks.append(times)
    thread = threading.Thread(target=streamer.run, daemon=True)
    thread.start()
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        assert times.wait_count(30, 20), "stream did not start"
        t_base = time.perf_counter()
        assert times.wait_count(60, 20)
        base_rate = 30 / (time.perf_counter() - t_base)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills after a few JPEGs
        stalled.connect(("127.0.0.1", view.port))
        t0 = time.perf_counter()
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        assert view.wait_for(lambda: view.dropped_clients >= 1, 30), "the stalled client was never dropped"
        t1 = time.perf_counter()
    finally:
        stalled.close()
        streamer.stop("test over")
        thread.join(15)
    during = [t for t in times.times if t0 <= t <= t1]
    gaps = np.diff([t0, *during, t1])
    assert t1 - t0 >= view.write_timeout
    assert len(during) / (t1 - t0) >= 0.7 * base_rate, (len(during), t1 - t0, base_rate)
    assert gaps.max() < 0.5 * view.write_timeout, gaps.max()
    assert view.watchers == 0


def test_bench_report_keeps_no_password() -> None:
    """`bench --backend triton --url http://user:pw@host` writes its options into the JSON report."""
    from edgecat.bench import BenchReport

    report = BenchReport(bundle={"path": "b"}, machine={}, config={"options": {"url": f"http://admin:{PASSWORD}@127.0.0.1:8000"}},
                         results=[])
    text = json.dumps(report.to_dict())
    assert PASSWORD not in text and "admin:***@127.0.0.1:8000" in text
