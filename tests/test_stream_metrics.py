"""Prometheus metrics of a stream, read back with prometheus_client's own text parser."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecat.errors import EdgecatError
from edgecat.stream import StreamConfig, Streamer
from edgecat.stream.metrics import MetricsServer, StreamMetrics
from edgecat.synthetic import CLASSES, make_video

from test_stream import ColourRuntime

LABELS = [0] * 5 + [1] * 7 + [0] * 4  # 16 frames
WAIT = 30.0


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("metrics-video") / "clip.mp4", LABELS, size=(64, 48), fps=30)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from the text format, via the library's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(parsed, name: str, **labels: str) -> float:
    return parsed[(name, tuple(sorted(labels.items())))]


def get(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_figures_match_the_stream(colour_bundle, video, tmp_path):
    # serial: a batch of 4 decoded frames per model call whatever the machine's speed (overlap batches
    # only frames already waiting, which a fast model never leaves)
    cfg = StreamConfig(sources=[str(video)], sinks=[f"jsonl://{tmp_path / 'e.jsonl'}"], metrics=":0", batch=4,
                       pipeline="serial")
    streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
    summary = streamer.run()
    parsed = samples(streamer.metrics.text()[0].decode())
    n = len(LABELS)
    assert summary.frames == n
    assert value(parsed, "edgecat_frames_total", source="0") == n
    assert value(parsed, "edgecat_predictions_total", source="0", label=CLASSES[0]) == LABELS.count(0)
    assert value(parsed, "edgecat_predictions_total", source="0", label=CLASSES[1]) == LABELS.count(1)
    assert value(parsed, "edgecat_latency_seconds_count") == n
    assert value(parsed, "edgecat_inference_seconds_count") == summary.batches < n  # one per model call
    assert value(parsed, "edgecat_latency_seconds_bucket", le="+Inf") == n
    info = [k for k in parsed if k[0] == "edgecat_model_info"]
    assert len(info) == 1 and dict(info[0][1])["model"] == "colour" and dict(info[0][1])["backend"] == "colour"
    assert len(dict(info[0][1])["bundle"]) == 64
    assert value(parsed, "edgecat_dropped_frames_total", source="0") == 0
    assert value(parsed, "edgecat_source_reconnects_total", source="0") == 0


def _running(streamer: Streamer) -> threading.Thread:
    t = threading.Thread(target=streamer.run, daemon=True)
    t.start()
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        m = streamer.metrics
        if m is not None and m.frames.labels("0")._value.get() >= 5:
            return t
        time.sleep(0.05)
    raise AssertionError("the stream did not start")


def test_metrics_on_the_live_view_follow_its_token(colour_bundle, video):
    cfg = StreamConfig(sources=[str(video)], sinks=["http://127.0.0.1:0"], http_token="s3cret-token",
                       loop=True, max_fps=60)
    streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
    thread = _running(streamer)
    try:
        base = streamer.sinks[0].url
        assert get(base + "metrics")[0] == 401
        status, text = get(base + "metrics", "s3cret-token")
        assert status == 200
        parsed = samples(text)
        assert value(parsed, "edgecat_frames_total", source="0") >= 5
        assert value(parsed, "edgecat_fps") > 0
    finally:
        streamer.stop()
        thread.join(WAIT)


def test_metrics_alone_on_loopback(colour_bundle, video):
    cfg = StreamConfig(sources=[str(video)], sinks=[], metrics="127.0.0.1:0", loop=True, max_fps=60)
    streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
    thread = _running(streamer)
    try:
        status, text = get(streamer.metrics_server.url)
        assert status == 200 and value(samples(text), "edgecat_frames_total", source="0") >= 5
        assert get(streamer.metrics_server.url.replace("/metrics", "/other"))[0] == 404
    finally:
        streamer.stop()
        thread.join(WAIT)


def test_metrics_off_loopback_need_a_token(monkeypatch):
    monkeypatch.delenv("EDGECAT_HTTP_TOKEN", raising=False)
    with pytest.raises(EdgecatError, match="needs an access token"):
        MetricsServer("0.0.0.0:9100", StreamMetrics())
    with pytest.raises(EdgecatError, match="bad --metrics"):
        MetricsServer("9100", StreamMetrics())
    server = MetricsServer("0.0.0.0:0", StreamMetrics(), token="tok-1234")
    server.start()
    try:
        assert get(server.url)[0] == 401
        assert get(server.url, "wrong-one")[0] == 401
        assert get(server.url, "tok-1234")[0] == 200
    finally:
        server.stop()
