"""`edgecat stream` with real OpenCV on generated videos and image folders.

Label/frame alignment is checked with :class:`ColourRuntime`, a tiny runtime of our own that reads
the synthetic pictures exactly (warm disc = cat, cool square = dog); the real ONNX Runtime path is
checked against the same frames run through the bundle's model directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import WAIT, ColourRuntime, read_jsonl

from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.stream import StreamConfig, Streamer, parse_source, run_stream
from edgecat.stream.capture import LatestFrame
from edgecat.stream.sink_registry import parse_sink
from edgecat.synthetic import CLASSES, make_dataset, make_video

LABELS = [0] * 6 + [1] * 8 + [0] * 5 + [1] * 5  # 24 frames, 3 label changes


class CountingRuntime(ColourRuntime):
    """ColourRuntime a test can wait on ("n frames inferred") instead of sleeping and hoping."""

    def _load(self) -> None:
        super()._load()
        self.frames = 0
        self._cond = threading.Condition()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        out = super()._run(batch)
        with self._cond:
            self.frames += len(batch)
            self._cond.notify_all()
        return out

    def wait_frames(self, n: int, timeout: float = 60.0) -> bool:
        """True once ``n`` frames (the warm-up batch included) went through the model; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.frames >= n, timeout)


class SlowRuntime(ColourRuntime):
    """Slower than the camera by construction, to show the capture thread drops instead of queueing:
    each model call returns only once the camera has delivered FRAMES_PER_CALL more frames (counted
    by the reader, so a loaded machine changes how long that takes, not how many frames it is)."""

    FRAMES_PER_CALL = 6

    def __init__(self, bundle: Bundle, reader: Callable[[], Any]) -> None:
        super().__init__(bundle)
        self.reader = reader

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.calls > 0:  # call 0 is the warm-up, before the camera starts
            reader = self.reader()
            with reader.cond:
                more = reader.read_count + self.FRAMES_PER_CALL
            assert reader.ended or reader.wait_for(more), "capture waited for the model (queueing) or stopped"
        return super()._run(batch)


def count_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", LABELS, size=(160, 120), fps=30)


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("uri, kind", [("0", "v4l2"), ("/dev/video2", "v4l2"), ("csi://0", "csi"),
                                       ("rtsp://cam.local/live", "network"), ("gst:videotestsrc ! appsink", "gst")])
def test_parse_source_kinds(uri, kind):
    spec = parse_source(uri)
    assert spec.kind == kind and spec.live


@pytest.mark.parametrize("uri, message", [("foo://x", "unsupported source"), ("/no/such.mp4", "source not found"),
                                          ("csi://front", "bad CSI source"), ("", "empty")])
def test_bad_source_is_one_line(uri, message):
    with pytest.raises(EdgecatError, match=message):
        parse_source(uri)


@pytest.mark.parametrize("uri, message", [("ftp://x", "unsupported sink"), ("out.txt", "unsupported sink"),
                                          ("http://:port", "bad http sink"), ("jsonl://", "needs a file")])
def test_bad_sink_is_one_line(uri, message):
    with pytest.raises(EdgecatError, match=message):
        parse_sink(uri)


def test_csi_without_gstreamer_says_so(colour_bundle, tmp_path):
    from edgecat.stream.readers import gstreamer_support

    if gstreamer_support():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(EdgecatError, match="needs OpenCV built with GStreamer"):
        run_stream(colour_bundle, StreamConfig(sources=["csi://0"]), runtime=ColourRuntime(colour_bundle))


def test_unreadable_file_and_missing_camera(colour_bundle, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    rt = ColourRuntime(colour_bundle)
    with pytest.raises(EdgecatError, match="cannot open video file"):
        run_stream(colour_bundle, StreamConfig(sources=[str(bad)]), runtime=rt)
    with pytest.raises(EdgecatError, match="camera /dev/video63 not found"):
        run_stream(colour_bundle, StreamConfig(sources=["/dev/video63"]), runtime=rt)


# ------------------------------------------------------------------------------ files
def test_video_to_jsonl_and_video_labels_match_frames(colour_bundle, video, tmp_path):
    events, out = tmp_path / "events.jsonl", tmp_path / "annotated.mp4"
    summary = run_stream(colour_bundle, StreamConfig(sources=[str(video)], sinks=[f"jsonl://{events}", str(out)]),
                         runtime=ColourRuntime(colour_bundle))
    rows = read_jsonl(events)
    assert summary.frames == len(LABELS) and summary.dropped == 0
    assert [r["frame"] for r in rows] == list(range(len(LABELS)))
    assert [r["label"] for r in rows] == [CLASSES[i] for i in LABELS]
    assert all(0.5 <= r["probability"] <= 1.0 and r["latency_ms"] >= 0 and r["source"] == 0 for r in rows)
    assert count_frames(out) == len(LABELS)
    assert not list(tmp_path.glob(".annotated*"))  # the temporary file was renamed, not left behind


def test_jsonl_changes_only_and_smoothing(colour_bundle, video, tmp_path):
    events = tmp_path / "changes.jsonl"
    run_stream(colour_bundle, StreamConfig(sources=[str(video)], sinks=[f"jsonl://{events}"], jsonl_changes=True),
               runtime=ColourRuntime(colour_bundle))
    assert [(r["frame"], r["label"]) for r in read_jsonl(events)] == [(0, "cat"), (6, "dog"), (14, "cat"), (19, "dog")]
    smoothed = tmp_path / "smooth.jsonl"
    run_stream(colour_bundle, StreamConfig(sources=[str(video)], sinks=[f"jsonl://{smoothed}"], smooth=8),
               runtime=ColourRuntime(colour_bundle))
    rows = read_jsonl(smoothed)
    assert rows[6]["label"] == "cat"  # one dog frame after six cat frames does not flip the smoothed label
    assert rows[13]["label"] == "dog"


def test_image_folder_and_several_sources_batched(colour_bundle, video, tmp_path):
    folder = make_dataset(tmp_path / "imgs", per_class=5, size=64, layout="flat")
    events = tmp_path / "folder.jsonl"
    rt = ColourRuntime(colour_bundle)
    summary = run_stream(colour_bundle, StreamConfig(sources=[str(folder), str(video)], sinks=[f"jsonl://{events}"]),
                         runtime=rt)
    rows = read_jsonl(events)
    from_folder = [r for r in rows if r["source"] == 0]
    assert len(from_folder) == 10 and summary.frames == 10 + len(LABELS)
    assert all(r["label"] == Path(r["file"]).parent.name for r in from_folder)
    assert [r["label"] for r in rows if r["source"] == 1] == [CLASSES[i] for i in LABELS]
    assert rt.calls < summary.frames  # frames of both sources shared inference calls


def test_onnx_runtime_labels_match_the_model(tiny_bundle, video, tmp_path):
    """The real path: ONNX Runtime through open_runtime, same pixels as running the model directly."""
    import cv2

    from edgecat.imaging import bgr_to_rgb, resize
    from edgecat.runtime import open_runtime

    events = tmp_path / "onnx.jsonl"
    summary = run_stream(tiny_bundle, StreamConfig(sources=[str(video)], sinks=[f"jsonl://{events}"]))
    bundle = Bundle.open(tiny_bundle)
    cap, frames = cv2.VideoCapture(str(video)), []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(resize(bgr_to_rgb(f), bundle.input_size))
    with open_runtime(bundle, "onnxruntime") as rt:
        probs = rt.infer(np.stack(frames))
    rows = read_jsonl(events)
    assert summary.frames == len(frames) == len(rows)
    assert [r["label"] for r in rows] == bundle.labels_from_probs(probs)
    # the summary names what ran (auto's pick, an FP32 file: the only export), in strict JSON
    d = json.loads(json.dumps(summary.as_dict(), allow_nan=False))
    assert d["backend"] in ("onnxruntime", "openvino", "litert") and d["precision"] == "fp32"
    empty = dataclasses.replace(summary, frames=0, latency_p50_ms=float("nan"), inference_p50_ms=float("nan"))
    assert empty.as_dict()["latency_p50_ms"] is None and empty.as_dict()["inference_p50_ms"] is None
    want = [float(p[bundle.classes.index(r["label"])]) for p, r in zip(probs, rows, strict=True)]
    assert np.allclose([r["probability"] for r in rows], want, atol=1e-4)


# ------------------------------------------------------------------------------ live behaviour
def test_latest_frame_slot_drops_instead_of_queueing():
    slot = LatestFrame()
    for i in range(5):
        slot.put(i)  # type: ignore[arg-type]
    assert slot.get(0.1) == 4 and slot.dropped == 4
    assert slot.get(0.05) is None  # nothing new: no stale frames queued
    slot.close()
    assert slot.closed


def test_file_capture_hands_every_frame_in_order_and_the_end_once(video, readers):
    """A file source: frames already decoded are batched without waiting, in order, and the end met
    while batching is handed out by the next get(), once; a realtime file is a latest-frame source."""
    from edgecat.stream.capture import CaptureConfig, Ended, FileCapture, LiveCapture, SourceThread

    spec = parse_source(str(video))
    th = SourceThread(0, spec, CaptureConfig((48, 48), read_ahead=len(LABELS) + 1))
    assert isinstance(th, FileCapture)
    th.open()
    th.start()
    try:
        assert readers[0].wait_for(10**6), "the reader never reached the end of the file"
        first = th.get(timeout=WAIT)
        rest = th.get_ready(100)
        assert [f.index for f in [first, *rest]] == list(range(len(LABELS)))
        assert th.get_ready(100) == [] and th.get(0.01) is Ended and th.get(0.01) is Ended
        assert th.stats.read == len(LABELS) and th.dropped == 0
    finally:
        th.stop()
        th.join()
    assert isinstance(SourceThread(0, spec, CaptureConfig((48, 48), realtime=True)), LiveCapture)


def test_slow_inference_drops_frames_on_live_source(colour_bundle, readers, tmp_path):
    clip = make_video(tmp_path / "live.mp4", [0, 1] * 30, size=(160, 120), fps=30)  # 2 s at 30 FPS
    events = tmp_path / "live.jsonl"
    rt = SlowRuntime(colour_bundle, lambda: readers[0])
    summary = run_stream(colour_bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"], realtime=True),
                         runtime=rt)
    src = summary.sources[0]
    assert src["read"] == 60
    # at least FRAMES_PER_CALL camera frames pass during each model call: all but one of them dropped
    most = 60 // SlowRuntime.FRAMES_PER_CALL + 2
    assert summary.frames <= most and summary.dropped >= 60 - most, (summary.frames, summary.dropped)
    assert summary.frames + summary.dropped == src["read"]  # every frame either processed or counted as dropped
    rows = read_jsonl(events)
    assert len(rows) == summary.frames
    assert rows[-1]["frame"] >= 50  # it kept up with the newest frames instead of lagging behind


def test_network_source_that_disappears_reconnects_then_ends(colour_bundle, tmp_path):
    """Our own MJPEG server (the http sink) as the camera: stop it, restart it, stop it for good."""
    import cv2

    from edgecat.stream.http_sink import HttpSink
    from edgecat.stream.overlay import Result
    from edgecat.stream.base import Frame
    from edgecat.synthetic import make_image

    picture = cv2.cvtColor(make_image(1, 96, np.random.default_rng(1)), cv2.COLOR_RGB2BGR)
    rt = CountingRuntime(colour_bundle)
    up = threading.Event()
    served: list[bool] = []

    def serve(port: int, frames_seen: int) -> None:
        """Send frames at 30 FPS until the stream has inferred ``frames_seen`` of them (not for a
        fixed time: on a loaded box the stream may take longer to connect and to keep up)."""
        sink = HttpSink("127.0.0.1", port, max_fps=100)
        sink.open()
        up.set()
        sink.watchers = 1  # encode every frame
        i = 0
        end = time.monotonic() + 15  # a cap for a broken stream; a working one ends far sooner
        while rt.frames < frames_seen and time.monotonic() < end:
            frame = Frame(0, i, picture, picture, time.perf_counter())
            sink.write(frame, Result(0, i, "dog", 1.0, [0.0, 1.0], 0.0, 0.0, time.time()), 30.0, None)
            i += 1
            time.sleep(1 / 30)  # the camera's frame rate
        served.append(rt.frames >= frames_seen)
        sink.close()

    first = HttpSink("127.0.0.1", 0)
    first.open()
    port = first.port
    first.close()

    def camera() -> None:
        serve(port, 1 + 12)  # the warm-up batch, then 12 frames
        time.sleep(0.5)  # the outage: well inside reconnect_seconds
        serve(port, 1 + 24)

    server = threading.Thread(target=camera, daemon=True)
    server.start()
    assert up.wait(10), "the camera server did not start"
    events = tmp_path / "net.jsonl"
    summary = run_stream(colour_bundle, StreamConfig(sources=[f"http://127.0.0.1:{port}/stream.mjpg"],
                                                     sinks=[f"jsonl://{events}"], reconnect_seconds=2.5,
                                                     duration=40), runtime=rt)
    server.join(5)
    assert served == [True, True], "the stream did not read frames before and after the outage"
    src = summary.sources[0]
    assert src["reconnects"] >= 1
    assert src["ended"] == "lost" and summary.stopped_by == "end of input"
    rows = read_jsonl(events)
    assert len(rows) == summary.frames >= 24 and {r["label"] for r in rows} == {"dog"}


def test_display_without_gui_says_so_and_prints_results(monkeypatch, caplog):
    """pip's headless OpenCV (and a box without $DISPLAY): one clear line, then text, never a crash."""
    import logging

    from edgecat.stream.overlay import Result
    from edgecat.stream.sinks import DisplaySink
    from edgecat.stream.base import Frame

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    sink = parse_sink("display://")
    assert isinstance(sink, DisplaySink)
    with caplog.at_level(logging.INFO, logger="edgecat"):
        sink.open()
        img = np.zeros((48, 64, 3), np.uint8)
        sink.write(Frame(0, 7, img, img, time.perf_counter()), Result(0, 7, "dog", 0.9, [0.1, 0.9], 3.0, 1.0,
                                                                     time.time()), 30.0, None)
        sink.close()
    assert not sink.gui
    warn = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 1 and "display:// cannot open a window" in warn[0] and "http://" in warn[0]
    assert any("frame 7: dog 90.0%" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_leaves_complete_outputs(sig, tiny_bundle, video, tmp_path):
    events, out = tmp_path / "sig.jsonl", tmp_path / "sig.mp4"
    cmd = [sys.executable, "-m", "edgecat", "stream", str(tiny_bundle), "--source", str(video), "--loop",
           "--realtime", "--sink", f"jsonl://{events}", "--sink", str(out)]
    # display:// without a window logs "[source 0] frame N: ..." once a second, after the jsonl and
    # video sinks took that frame: the signal is sent on the second such line, not after a sleep
    cmd += ["--sink", "display://"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        progress = 0
        while progress < 2:
            line = lines.get(timeout=60)
            assert line is not None, "".join(output)  # the stream ended before the signal
            output.append(line)
            progress += bool(re.search(r"frame \d+: (cat|dog) ", line))
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    while (line := lines.get(timeout=30)) is not None:  # the rest, up to the pipe's end
        output.append(line)
    text = "".join(output)
    assert proc.returncode == 0, text
    assert "stream summary" in text and f"stopped by {sig.name}" in text
    rows = read_jsonl(events)  # every line parses: nothing half-written
    assert len(rows) >= 2
    assert count_frames(out) == len(rows)


def test_stream_stop_from_another_thread(colour_bundle, video, tmp_path):
    rt = CountingRuntime(colour_bundle)
    streamer = Streamer(colour_bundle, StreamConfig(sources=[str(video)], loop=True, realtime=True,
                                                    sinks=[f"jsonl://{tmp_path / 'x.jsonl'}"]), runtime=rt)

    def stop_after_frames() -> None:  # once frames went through, however long a loaded box takes
        rt.wait_frames(1 + 5)
        streamer.stop("test")

    threading.Thread(target=stop_after_frames, daemon=True).start()
    summary = streamer.run()
    assert summary.stopped_by == "test" and summary.frames >= 5
    assert len(read_jsonl(tmp_path / "x.jsonl")) == summary.frames


def test_cli_bad_uri_is_one_line(colour_bundle):
    from click.testing import CliRunner

    from edgecat.cli import main

    result = CliRunner().invoke(main, ["stream", str(colour_bundle.path), "--source", "bogus://cam"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unsupported source")


@pytest.mark.parametrize("size", [(160, 120), (320, 240), (640, 480), (1920, 1080)])
def test_overlay_text_scales_with_the_frame(size):
    """The label is readable at every frame size: its letters are >= 1/20 of the frame height
    (never under 12 px) and the panel stays inside the frame."""
    from edgecat.stream.overlay import Result, draw_overlay

    w, h = size
    out = draw_overlay(np.full((h, w, 3), 60, np.uint8), Result(0, 0, "dog", 0.93, [0.07, 0.93], 12.3, 1.0, 0.0), 29.7)
    green = np.where((out[:, :, 1] == 200) & (out[:, :, 0] == 80))[0]  # the probability bar
    white = np.where((out[: green.min()] > 180).all(axis=2).any(axis=1))[0]  # the label, above the bar
    label_px = white.max() - white.min() + 1
    assert label_px >= max(12, h / 20), label_px
    assert out.shape == (h, w, 3) and (out[h // 2:, w // 2:] == 60).all()  # the picture itself is untouched


# ------------------------------------------------------------------------------ the sink contract
def test_sinks_get_their_options_when_made_and_the_source_rate_when_opened(colour_bundle, tmp_path):
    """Options reach sinks through their constructors (no attribute set by the loop afterwards); a
    video sink without --output-fps plays at the first source's frame rate, handed to open()."""
    import cv2

    from edgecat.stream.base import Sink
    from edgecat.stream.http_sink import HttpSink
    from edgecat.stream.sinks import JsonlSink, VideoSink

    with pytest.raises(TypeError, match="write"):
        Sink()  # type: ignore[abstract]  # the loop calls write(): a sink without one is not a sink
    clip = make_video(tmp_path / "clip15.mp4", [0, 1] * 3, size=(64, 48), fps=15)
    cfg = StreamConfig(sources=[str(clip), str(clip)], jsonl_changes=True, http_token="t0ken",
                       sinks=["http://127.0.0.1:0", f"jsonl://{tmp_path / 'e.jsonl'}", str(tmp_path / "a.mp4")])
    streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
    http, jsonl, video, metrics = streamer.sinks  # the live view brings /metrics: a sink made by the stream
    assert metrics is streamer.metrics
    assert isinstance(http, HttpSink) and (http.sources, http.title, http.token) == (2, "colour", "t0ken")
    assert isinstance(jsonl, JsonlSink) and jsonl.changes_only
    assert isinstance(video, VideoSink) and video.fps is None  # not known until the sources are open
    streamer.run()
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(15.0)
    cap.release()
    fixed = Streamer(colour_bundle, StreamConfig(sources=[str(clip)], sinks=[str(tmp_path / "b.mp4")], output_fps=10),
                     runtime=ColourRuntime(colour_bundle))
    assert fixed.sinks[0].fps == 10.0  # type: ignore[attr-defined]


def test_stream_modules_do_not_import_each_other_in_a_circle():
    """sinks.py and http_sink.py both build on base.py; only the registry knows both."""
    import ast

    import edgecat.stream as pkg

    folder = Path(pkg.__file__).parent
    graph: dict[str, set[str]] = {}
    for f in folder.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgecat.stream."):
                deps.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.Import):
                deps |= {a.name.rsplit(".", 1)[1] for a in node.names if a.name.startswith("edgecat.stream.")}
        graph[f.stem] = deps
    assert "http_sink" not in graph["sinks"] and "sinks" not in graph["http_sink"]

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(d == goal or (d not in seen and reaches(d, goal, seen | {d})) for d in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m, set())], graph
