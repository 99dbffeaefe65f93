"""The http:// sink in a real headless Chromium: page loads, the video element gets frames, stats answer."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest

from edgecat.bundle import Bundle
from edgecat.stream import StreamConfig, Streamer
from edgecat.synthetic import CLASSES, make_video

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_stream(tmp_path):
    """A looping video streamed to http://127.0.0.1:<free port>, through ColourRuntime (see test_stream)."""
    from test_stream import ColourRuntime

    bundle = Bundle.create(tmp_path / "b", name="colour", backbone="none", input_size=(48, 48),
                           classes=list(CLASSES), preprocessing="none")
    video = make_video(tmp_path / "clip.mp4", [0] * 10 + [1] * 10, size=(320, 240), fps=30)
    streamer = Streamer(bundle, StreamConfig(sources=[str(video)], sinks=["http://127.0.0.1:0"], loop=True,
                                             realtime=True, duration=60), runtime=ColourRuntime(bundle))
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(summary=streamer.run()), daemon=True)
    thread.start()
    sink = streamer.sinks[0]
    # the sink is told the stream's figures after each processed frame: wait for the first ones
    # (the server is up by then) rather than for a fixed time
    assert sink.wait_for(lambda: sink.current_stats()["frames"] > 0 or sink.closed, 30), "no frame in 30 s"
    assert thread.is_alive() and not sink.closed, "stream ended before the server started"
    yield sink.url, streamer
    streamer.stop("test over")
    thread.join(10)
    assert result["summary"].frames > 0


def test_stats_endpoint_and_mjpeg_with_urllib(live_stream):
    url, _ = live_stream
    with urllib.request.urlopen(url + "stats.json", timeout=5) as r:
        stats = json.load(r)
    assert stats["frames"] > 0 and stats["last"][0]["label"] in CLASSES
    with urllib.request.urlopen(url + "stream.mjpg", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        chunk = r.read(40000)
    assert chunk.count(b"\xff\xd8") >= 2  # at least two JPEGs arrived on one connection


def test_page_in_headless_chromium(request, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _ = request.getfixturevalue("live_stream")  # only once the browser is known to be there
    shot = tmp_path / "live-view.png"
    with sync_api.sync_playwright() as p:
        # Playwright gives the browser its own temporary profile (it refuses --user-data-dir in args)
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(url, timeout=20000)
            assert "edgecat live" in page.title()
            # the page's own JS counts distinct pictures drawn from the MJPEG <img>
            page.wait_for_function("Number(document.getElementById('frames-seen').textContent) >= 5",
                                   timeout=20000)
            assert page.inner_text("#frame-size") == "(320x240)"
            page.wait_for_function("document.getElementById('stats').textContent.startsWith('frames ')",
                                   timeout=10000)
            assert page.inner_text("#label-0").split()[0] in CLASSES
            stats = page.evaluate("fetch('/stats.json').then(r => r.json())")
            assert stats["frames"] > 0
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 5000
