"""A new bundle swapped into a running stream: between two batches, whole, and never a dropped frame."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecat.bundle import MANIFEST, Bundle
from edgecat.stream import StreamConfig, Streamer
from edgecat.synthetic import CLASSES, make_video

from test_stream import ColourRuntime, read_jsonl

LABELS = ([0] * 9 + [1] * 11) * 15  # 300 frames
WAIT = 30.0


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("swap-video") / "clip.mp4", LABELS, size=(48, 36), fps=30)


def _bundle(path: Path, name: str = "gen0") -> Bundle:
    return Bundle.create(path, name=name, backbone="none", input_size=(48, 48), classes=list(CLASSES),
                         preprocessing="none")


def _rename(path: Path, name: str) -> None:
    """A new bundle at the same path (what a fleet push does), told apart by its name."""
    b = Bundle.open(path)
    b.manifest["name"] = name
    b.save()


class GenRuntime(ColourRuntime):
    """ColourRuntime that loads slowly and records, for every model call, whether loading had finished,
    whether it was closed, and which thread called (the swap thread warms up, the stream infers)."""

    LOAD_SECONDS = 0.2
    made: list[GenRuntime] = []
    pause_after: int | None = None  # frames after which a stream call waits for the next model to be ready
    next_ready: threading.Event | None = None
    reached: threading.Event | None = None

    def _load(self) -> None:
        super()._load()
        self.loaded = False
        self.closed = False
        self.calls_log: list[tuple[str, bool, bool]] = []
        self.frames_inferred = 0
        GenRuntime.made.append(self)
        for _ in range(10):  # a load in steps: a model handed over now would be half-loaded
            time.sleep(self.LOAD_SECONDS / 10)
        self.loaded = True

    def _run(self, batch: np.ndarray) -> np.ndarray:
        name = threading.current_thread().name
        self.calls_log.append((name, self.loaded, self.closed))
        if name != "model-swap" and self.calls > 0:
            self.frames_inferred += len(batch)
            if self.pause_after is not None and self.frames_inferred >= self.pause_after and self.reached:
                # a busy model: the test pushes a new bundle meanwhile; return once it is ready
                self.pause_after = None
                self.reached.set()
                assert self.next_ready is not None and self.next_ready.wait(WAIT)
        return super()._run(batch)

    def close(self) -> None:
        self.closed = True
        super().close()


def test_five_swaps_at_full_speed_lose_no_frame_and_use_only_whole_models(tmp_path, video, readers):
    path = tmp_path / "current"
    bundle = _bundle(path)
    events = tmp_path / "events.jsonl"
    GenRuntime.made = []
    first = GenRuntime(bundle)
    cfg = StreamConfig(sources=[str(video)], sinks=[f"jsonl://{events}"], metrics=":0")
    streamer = Streamer(bundle, cfg, runtime=first)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(streamer.run()), daemon=True)

    swapped: list[str] = []

    def arm(rt: GenRuntime) -> None:
        rt.pause_after, rt.reached, rt.next_ready = 40, threading.Event(), threading.Event()

    arm(first)
    thread.start()
    try:
        for gen in range(1, 6):
            current = GenRuntime.made[-1]
            assert current.reached.wait(WAIT), f"generation {gen - 1} never reached its pause"
            _rename(path, f"gen{gen}")
            before = len(GenRuntime.made)
            streamer.swapper.request()
            assert streamer.swapper.wait_attempts(gen, WAIT) and streamer.swapper.swaps == gen, \
                streamer.swapper.last_error
            new = GenRuntime.made[before]
            if gen < 5:
                arm(new)  # armed before it runs any frame of the stream
            swapped.append(new.bundle.name)
            current.next_ready.set()
    finally:
        thread.join(WAIT * 2)
    summary = result[0]
    rows = read_jsonl(events)
    # frames in == frames out, each once, each labelled right
    assert readers[0].read_count - 10**6 == len(LABELS)  # read every frame, then the end of the file
    assert summary.frames == len(rows) == len(LABELS) and summary.dropped == 0
    assert [r["frame"] for r in rows] == list(range(len(LABELS)))
    assert [r["label"] for r in rows] == [CLASSES[i] for i in LABELS]
    # six models ran, each whole: no stream call before loading finished or after closing
    assert swapped == [f"gen{i}" for i in range(1, 6)]
    assert [rt.bundle.name for rt in GenRuntime.made] == [f"gen{i}" for i in range(6)]
    assert sum(rt.frames_inferred for rt in GenRuntime.made) == len(LABELS)
    assert all(rt.frames_inferred >= 40 for rt in GenRuntime.made[:-1])
    for rt in GenRuntime.made:
        assert all(loaded and not closed for _, loaded, closed in rt.calls_log), rt.calls_log
        if rt is not first:  # warmed up by the swap thread before the stream's first call
            assert rt.calls_log[0][0] == "model-swap"
    assert all(rt.closed for rt in GenRuntime.made[1:-1])  # replaced ones released (the first is the caller's)
    text = streamer.metrics.text()[0].decode()
    assert 'edgecat_model_swaps_total{result="ok"} 5.0' in text
    assert 'model="gen5"' in text and 'model="gen0"' not in text


def test_a_bad_bundle_is_refused_and_the_running_model_goes_on(tmp_path, video, caplog):
    path = tmp_path / "current"
    bundle = _bundle(path)
    cfg = StreamConfig(sources=[str(video)], sinks=[], loop=True, max_fps=200, metrics=":0")
    streamer = Streamer(bundle, cfg, runtime=ColourRuntime(bundle))
    thread = threading.Thread(target=streamer.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: streamer.swapper is not None)
        (path / MANIFEST).write_text("{ not json")
        streamer.swapper.request()
        assert streamer.swapper.wait_attempts(1, WAIT)
        other = _bundle(tmp_path / "other", "three")  # different classes: the sinks were made for two
        manifest = dict(other.manifest)
        manifest["classes"] = ["cat", "dog", "fox"]
        manifest["output"]["shape"] = [3]
        (path / MANIFEST).write_text(json.dumps(manifest))
        streamer.swapper.request()
        assert streamer.swapper.wait_attempts(2, WAIT)
        frames = streamer.metrics.frames.labels("0")._value.get()
        assert _wait(lambda: streamer.metrics.frames.labels("0")._value.get() > frames + 5)  # still running
    finally:
        streamer.stop()
        thread.join(WAIT)
    assert streamer.swapper.refused == 2 and streamer.swapper.swaps == 0
    assert streamer.bundle.name == "gen0"
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 2 and all("\n" not in m for m in refusals)
    assert "corrupt bundle manifest" in refusals[0] and "classes" in refusals[1]
    assert 'edgecat_model_swaps_total{result="refused"} 2.0' in streamer.metrics.text()[0].decode()


def test_watch_picks_up_a_signed_bundle_and_refuses_a_tampered_one(tmp_path, video):
    from edgecat.signing import keygen, sign_bundle

    key, pub = keygen(tmp_path / "keys")
    path = tmp_path / "current"
    bundle = _bundle(path)
    (path / "model.bin").write_bytes(b"weights v0")
    bundle.add_artifact("onnx", path / "model.bin", format="onnx", precision="fp32")
    sign_bundle(path, key)
    cfg = StreamConfig(sources=[str(video)], sinks=[], loop=True, max_fps=200, watch=True,
                       trusted_keys=[str(pub)])
    streamer = Streamer(path, cfg, runtime=ColourRuntime(Bundle.open(path)))
    thread = threading.Thread(target=streamer.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: streamer.swapper is not None)
        _rename(path, "v1")
        sign_bundle(path, key)  # a signed new bundle: --watch finds it by itself
        assert _wait(lambda: streamer.bundle.name == "v1")
        (path / "model.bin").write_bytes(b"an attacker's weights")  # changed after signing
        b = Bundle.open(path)
        b.add_artifact("onnx", path / "model.bin", format="onnx", precision="fp32")
        assert _wait(lambda: streamer.swapper.refused >= 1)
        assert "changed after signing" in streamer.swapper.last_error
        assert streamer.bundle.name == "v1"
    finally:
        streamer.stop()
        thread.join(WAIT)


def test_sighup_swaps(tmp_path, video):
    """SIGHUP asks for the bundle at the path again (the stream runs in the main thread, as the CLI)."""
    path = tmp_path / "current"
    bundle = _bundle(path)

    class HupRuntime(ColourRuntime):
        def _run(self, batch):
            if self.calls == 20 and threading.current_thread() is threading.main_thread():
                _rename(path, "after-hup")
                os.kill(os.getpid(), signal.SIGHUP)
            return super()._run(batch)

    cfg = StreamConfig(sources=[str(video)], sinks=[], max_fps=300)
    streamer = Streamer(bundle, cfg, runtime=HupRuntime(bundle))
    summary = streamer.run()
    assert summary.frames == len(LABELS)
    assert streamer.swapper.swaps == 1 and streamer.bundle.name == "after-hup"
    assert signal.getsignal(signal.SIGHUP) is not None  # handler restored after the run


def _wait(cond, timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_recorded_figures_are_judged_by_autos_bounds(tmp_path):
    """A swapped-in INT8 file is held to the bounds --backend auto applies, on the figures its export
    recorded; an older export's bare label agreement still has to reach 99.5%."""
    from edgecat.errors import EdgecatError
    from edgecat.stream.swap import check_recorded_figures

    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(32, 32), classes=list(CLASSES),
                      preprocessing="mobilenet_v2")
    fid = {"images": 1000, "agreement": 0.99, "confident": 900, "confident_flips": 1, "confident_flip_rate": 1 / 900,
           "accuracy_fp32": 0.99, "accuracy": 0.989, "accuracy_drop": 0.001}
    b.artifacts["onnx-int8"] = {"file": "model.int8.onnx", "parity": {"label_agreement": 0.9375},
                                "accuracy": {"fidelity": fid}}
    check_recorded_figures(b, "onnx-int8")  # within the bounds: the parity images' 93.75% does not decide
    b.artifacts["onnx-int8"]["accuracy"]["fidelity"] = {**fid, "confident_flips": 9, "confident_flip_rate": 0.01}
    with pytest.raises(EdgecatError, match=r"model.int8.onnx: .*confident_flips: 9 of 900"):
        check_recorded_figures(b, "onnx-int8")
    b.manifest["int8_guard"] = {"max_confident_flips": 0.02}  # the bundle's own, looser bound
    check_recorded_figures(b, "onnx-int8")
    del b.artifacts["onnx-int8"]["accuracy"]
    with pytest.raises(EdgecatError, match=r"recorded label agreement 93.75% is below 99.5%"):
        check_recorded_figures(b, "onnx-int8")
