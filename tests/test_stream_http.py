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
#: run in the page: counts the distinct pictures the first source's <img> shows (a same-origin image,
#: so a canvas may read its pixels), sampled every 100 ms into window.picturesSeen
COUNT_PICTURES = """() => {
  const img = document.getElementById('video-0');
  const ctx = document.createElement('canvas').getContext('2d', {willReadFrequently: true});
  let last = null;
  window.picturesSeen = 0;
  setInterval(() => {
    if (!img.naturalWidth) return;
    ctx.drawImage(img, 0, 0, 16, 16);
    const d = ctx.getImageData(0, 0, 16, 16).data;
    let sig = 0;
    for (let i = 0; i < d.length; i += 7) sig = (sig * 31 + d[i]) >>> 0;
    if (sig !== last) { last = sig; window.picturesSeen++; }
  }, 100);
}"""
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_stream(tmp_path):
    """A looping video streamed to http://127.0.0.1:<free port>, through conftest.ColourRuntime."""
    from conftest import ColourRuntime

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
            # distinct pictures arriving in the page's MJPEG <img>, read back through a canvas
            page.evaluate(COUNT_PICTURES)
            page.wait_for_function("window.picturesSeen >= 5", timeout=20000)
            size = page.evaluate("[document.getElementById('video-0').naturalWidth, "
                                 "document.getElementById('video-0').naturalHeight]")
            assert size == [320, 240]
            page.wait_for_function("document.getElementById('stats').textContent.startsWith('frames ')",
                                   timeout=10000)
            assert page.inner_text("#label-0").split()[0] in CLASSES
            stats = page.evaluate("fetch('/stats.json').then(r => r.json())")
            assert stats["frames"] > 0
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 5000
