"""The stream picks its shape by the machine: on a long enough video file read by a CPU model, the
fastest of the candidate shapes (and runtimes) measured on the file's first frames; otherwise serial (one thread) when
the model's threads fill the cores and the source is a file, overlap when not. The serial shape loses
no frame and keeps latency."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_stream import ColourRuntime, read_jsonl

from edgecat.errors import EdgecatError
from edgecat.stream import StreamConfig
from edgecat.stream.loop import Streamer
from edgecat.stream.serial import choose_pipeline, usable_cores
from edgecat.synthetic import CLASSES, make_video

LABELS = [0] * 5 + [1] * 7 + [0] * 6 + [1] * 4  # 22 frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("pipeline") / "clip.mp4", LABELS, size=(160, 120), fps=30)


@pytest.mark.parametrize(("cores", "threads", "live", "sources", "on_cpu", "want"), [
    (2, 2, False, 1, True, "serial"),    # the model fills both cores: a capture thread would only compete
    (1, 2, False, 1, True, "serial"),    # more threads than cores (taskset to one core)
    (8, 8, False, 1, True, "serial"),
    (2, 1, False, 1, True, "overlap"),   # a core to spare: decode beside the model
    (4, 2, False, 1, True, "overlap"),
    (8, 7, False, 1, True, "overlap"),
    (2, 2, True, 1, True, "overlap"),    # live / --realtime keep their capture thread
    (2, 2, False, 2, True, "overlap"),   # several sources are read in parallel
    (2, 2, False, 1, False, "overlap"),  # a GPU model leaves the CPU to decoding
    (2, 0, False, 1, True, "overlap"),
])
def test_choose_pipeline(cores, threads, live, sources, on_cpu, want):
    assert choose_pipeline(cores, threads, live, sources, model_on_cpu=on_cpu) == want


def test_usable_cores_follows_the_affinity_mask_and_cpu_quota():
    import os

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this OS")
    from edgecat.machine import cpu_quota

    quota = cpu_quota()
    want = len(os.sched_getaffinity(0)) if quota is None else min(len(os.sched_getaffinity(0)), math.ceil(quota))
    assert usable_cores() == max(1, want) >= 1


class RecordingColour(ColourRuntime):
    """Records the size of each model call after the warm-up."""

    def _load(self) -> None:
        super()._load()
        self.sizes: list[int] = []

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.calls > 0:
            self.sizes.append(len(batch))
        return super()._run(batch)


@pytest.mark.parametrize("batch", [1, 4])
def test_serial_pipeline_delivers_every_frame_in_order_with_latency(colour_bundle, clip, tmp_path, batch):
    import threading

    events = tmp_path / "e.jsonl"
    rt = RecordingColour(colour_bundle)
    def working() -> int:  # the model-swap thread sleeps until a reload is asked for: not a pipeline stage
        return sum(t.name != "model-swap" for t in threading.enumerate())

    before = working()
    seen: list[int] = []  # threads alive during each model call
    orig = rt._run

    def run(b: np.ndarray) -> np.ndarray:
        seen.append(working())
        return orig(b)

    rt._run = run  # type: ignore[method-assign]
    cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"], pipeline="serial", batch=batch)
    summary = Streamer(colour_bundle, cfg, rt).run()
    rows = read_jsonl(events)
    assert summary.pipeline == "serial" and summary.frames == len(LABELS) and summary.dropped == 0
    assert [r["frame"] for r in rows] == list(range(len(LABELS)))
    assert [r["label"] for r in rows] == [CLASSES[i] for i in LABELS]
    assert all(r["latency_ms"] > 0 for r in rows) and summary.latency_p50_ms > 0
    assert summary.sources[0]["read"] == len(LABELS) and summary.sources[0]["ended"] == "end of file"
    assert sum(rt.sizes) == len(LABELS) and max(rt.sizes) == batch
    assert max(seen) <= before  # no capture or output thread was started


def test_serial_and_overlap_give_the_same_results(colour_bundle, clip, tmp_path):
    out = {}
    for shape in ("serial", "overlap"):
        events = tmp_path / f"{shape}.jsonl"
        cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"], pipeline=shape)
        summary = Streamer(colour_bundle, cfg, ColourRuntime(colour_bundle)).run()
        assert summary.pipeline == shape
        out[shape] = [(r["frame"], r["label"], r["probability"]) for r in read_jsonl(events)]
    assert out["serial"] == out["overlap"] and len(out["serial"]) == len(LABELS)


def test_serial_loop_and_stop_by_duration(colour_bundle, clip, tmp_path):
    cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'e.jsonl'}"], pipeline="serial",
                       loop=True, duration=1.0)
    summary = Streamer(colour_bundle, cfg, ColourRuntime(colour_bundle)).run()
    assert summary.stopped_by == "--duration" and summary.frames > len(LABELS)  # rewound at least once


def test_serial_refuses_a_live_style_source(colour_bundle, clip, tmp_path):
    cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'e.jsonl'}"], pipeline="serial",
                       realtime=True)
    with pytest.raises(EdgecatError, match="--pipeline serial takes one video file"):
        Streamer(colour_bundle, cfg, ColourRuntime(colour_bundle)).run()
    with pytest.raises(EdgecatError, match="unknown --pipeline"):
        Streamer(colour_bundle, StreamConfig(sources=[str(clip)], pipeline="fast"))


def test_auto_picks_by_the_real_runtimes_threads(tiny_bundle, clip, tmp_path):
    """A real ONNX Runtime model: as many threads as usable cores -> serial; fewer -> overlap."""
    pytest.importorskip("onnxruntime")
    from edgecat.runtime import open_runtime

    cores = usable_cores()
    cases = [(cores, "serial")] + ([(cores - 1, "overlap")] if cores > 1 else [])
    for threads, want in cases:
        with open_runtime(tiny_bundle, "onnxruntime", "fp32", threads=threads) as rt:
            cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'e.jsonl'}"])
            summary = Streamer(tiny_bundle, cfg, rt).run()
        assert summary.pipeline == want and summary.frames == len(LABELS)


def test_serial_decodes_with_ffmpegs_threads_and_overlap_with_its_own(colour_bundle, clip, tmp_path):
    """In the serial shape FFmpeg's frame threads decode ahead while the model runs (one core: one
    thread, nothing runs beside); a capture thread (overlap) already does that and keeps its one
    decoder thread. Same frames either way."""
    from edgecat.stream.readers import FILE_DECODE_THREADS
    from edgecat.stream.serial import serial_decode_threads

    assert serial_decode_threads(2) is None and serial_decode_threads(8) is None
    assert serial_decode_threads(1) == FILE_DECODE_THREADS == 1
    got = {}
    for shape, threads in (("serial", serial_decode_threads(usable_cores())), ("overlap", FILE_DECODE_THREADS)):
        events = tmp_path / f"{shape}.jsonl"
        cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"], pipeline=shape)
        streamer = Streamer(colour_bundle, cfg, ColourRuntime(colour_bundle))
        summary = streamer.run()
        assert streamer.threads[0].reader.decode_threads == threads, shape
        assert summary.frames == len(LABELS)
        got[shape] = [(r["frame"], r["label"], r["probability"]) for r in read_jsonl(events)]
    assert got["serial"] == got["overlap"]


def test_stream_opens_onnxruntime_with_workers_that_stop_spinning(tiny_bundle, clip, tmp_path):
    """Workers spinning between runs would take the cores the next frame's decoding needs; a caller's
    own setting wins."""
    pytest.importorskip("onnxruntime")
    for given, want in (({}, "1"), ({"stop_spinning": False}, None)):
        cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'e.jsonl'}"], backend="onnxruntime",
                           precision="fp32", runtime_options=given)
        streamer = Streamer(tiny_bundle, cfg)
        assert streamer.run().frames == len(LABELS)
        opts = streamer._runtime.session.get_session_options()
        try:
            entry = opts.get_session_config_entry("session.force_spinning_stop")
        except RuntimeError:  # ORT raises for a key that was never set
            entry = None
        assert entry == want, given


class ShapeBound(ColourRuntime):
    """A CPU model (so the stream's rule applies) that runs slower in one shape: with a capture thread
    beside it (``slow_in="overlap"``) or without one (``"serial"``), as runtimes differ in how they
    share the cores with a decoder. Counts its calls to tell a trial from a remembered choice."""

    backend = "onnxruntime"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import threading
        import time

        overlapped = any(t.name.startswith("capture-") for t in threading.enumerate())
        if overlapped == (self.options["slow_in"] == "overlap"):
            time.sleep(0.01)
        return super()._run(batch)


@pytest.fixture
def short_trial(monkeypatch):
    """A trial that fits the 22-frame clip (the product measures on files of 300 frames or more),
    without the batched candidate unless a test puts it back (it has a test of its own)."""
    from edgecat.stream import shape_trial

    monkeypatch.setattr(shape_trial, "TRIAL_BATCH", 1)
    monkeypatch.setattr(shape_trial, "TRIAL_MIN_FRAMES", len(LABELS))
    monkeypatch.setattr(shape_trial, "WARMUP_FRAMES", 2)
    monkeypatch.setattr(shape_trial, "BLOCK_FRAMES", 6)
    monkeypatch.setattr(shape_trial, "BLOCK_SECONDS", 30.0)
    return shape_trial


def _fresh_colour_bundle(folder: Path):
    from edgecat.bundle import Bundle

    return Bundle.create(folder, name="colour", backbone="none", input_size=(48, 48), classes=list(CLASSES),
                         preprocessing="none")


@pytest.mark.parametrize("slow_in", ["serial", "overlap"])
def test_auto_times_both_shapes_on_the_file_and_remembers_the_faster(short_trial, clip, tmp_path, slow_in, caplog):
    """Core counts alone would say serial here (the model's threads fill the cores); the trial runs
    the shape that was faster on the file's first frames, every frame is still delivered once and in
    order from frame 0, and the next run reuses the measurement instead of timing again."""
    from edgecat.bundle import Bundle
    from edgecat.select import MANIFEST_KEY

    want = "overlap" if slow_in == "serial" else "serial"
    bundle = _fresh_colour_bundle(tmp_path / "b")
    calls = []
    for run in range(2):
        events = tmp_path / f"e{run}.jsonl"
        rt = ShapeBound(bundle, threads=usable_cores(), slow_in=slow_in)
        caplog.clear()
        with caplog.at_level("INFO", logger="edgecat.stream.loop"):
            summary = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"]), rt).run()
        calls.append(rt.calls)
        rows = read_jsonl(events)
        assert summary.pipeline == want and summary.frames == len(LABELS)
        assert [r["frame"] for r in rows] == list(range(len(LABELS)))
        assert [r["label"] for r in rows] == [CLASSES[i] for i in LABELS]
        line = next(r.message for r in caplog.records if r.message.startswith("pipeline:"))
        assert ("measured:" in line) == (run == 0) and ("measured earlier" in line) == (run == 1), line
    cores = usable_cores()
    cands = short_trial.candidates(cores, lean=False)  # the caller's runtime: its threads are not the stream's to change
    assert [c.label for c in cands] == [f"serial t{cores}", f"overlap t{cores}"]
    trial_frames = len(short_trial.blocks(cands)) * (short_trial.WARMUP_FRAMES + short_trial.BLOCK_FRAMES)
    assert calls == [1 + trial_frames + len(LABELS), 1 + len(LABELS)]  # warm-up, trial, the stream
    records = {k: v for k, v in Bundle.open(bundle.path).manifest[MANIFEST_KEY].items()
               if k.startswith(short_trial.SLOT_PREFIX)}
    assert len(records) == 1
    (key, record), = records.items()
    assert record["pipeline"] == want and record["threads"] == cores
    assert record["fps"][f"{want} t{cores}"] > record["fps"][f"{slow_in} t{cores}"] > 0
    assert "cpus=" in key and "onnxruntime/fp32" in key and "frame=160x120" in key and "threads fixed" in key


def test_a_remembered_shape_is_validated_and_short_files_keep_the_rule(short_trial, clip, tmp_path, monkeypatch):
    """A copied bundle's record is input: an unknown shape in it is ignored (measured again); a file
    shorter than the trial needs is not timed at all (the rule: serial when the threads fill the cores)."""
    from edgecat.select import MANIFEST_KEY

    bundle = _fresh_colour_bundle(tmp_path / "b")
    rt = ShapeBound(bundle, threads=usable_cores(), slow_in="serial")
    Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'a.jsonl'}"]), rt).run()
    section = bundle.manifest[MANIFEST_KEY]
    key = next(k for k in section if k.startswith(short_trial.SLOT_PREFIX))
    cores = usable_cores()
    assert short_trial.recall(bundle, key, cores) == short_trial.Candidate("overlap", cores)
    for bad in (0, cores + 1, True, "1", 1.0):  # threads outside 1..cores, or not a whole number
        section[key]["threads"] = bad
        assert short_trial.recall(bundle, key, cores) is None, bad
    section[key]["threads"] = cores
    monkeypatch.setattr(short_trial, "TRIAL_BATCH", 2)
    for bad in (0, 3, 64, True, "2", 2.5, None):  # a batch the trial never times; none: an older record
        section[key]["batch"] = bad
        assert short_trial.recall(bundle, key, cores) is None, bad
    section[key]["batch"] = 2
    assert short_trial.recall(bundle, key, cores) == short_trial.Candidate("overlap", cores, 2)
    section[key]["pipeline"] = "serial"  # the serial shape reads no frames ahead to batch
    assert short_trial.recall(bundle, key, cores) is None
    section[key]["batch"] = 1
    section[key]["pipeline"] = "$(reboot)"
    assert short_trial.recall(bundle, key, cores) is None
    section[key] = "overlap"
    assert short_trial.recall(bundle, key, cores) is None

    monkeypatch.setattr(short_trial, "TRIAL_MIN_FRAMES", len(LABELS) + 1)
    other = _fresh_colour_bundle(tmp_path / "c")
    rt = ShapeBound(other, threads=usable_cores(), slow_in="serial")
    summary = Streamer(other, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'c.jsonl'}"]), rt).run()
    assert summary.pipeline == "serial" and rt.calls == 1 + len(LABELS)
    assert not any(k.startswith(short_trial.SLOT_PREFIX) for k in other.manifest.get(MANIFEST_KEY, {}))


class ThreadBound(ShapeBound):
    """A model that is fast only on fewer threads than the usable cores with a capture thread beside
    it: the shape a 2-core machine gave OpenVINO INT8 (one model thread, one decoding)."""

    opened: list[ThreadBound] = []

    def _load(self) -> None:
        super()._load()
        self.closed = False
        ThreadBound.opened.append(self)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import threading
        import time

        overlapped = any(t.name.startswith("capture-") for t in threading.enumerate())
        if not (overlapped and self.options["threads"] < usable_cores()):
            time.sleep(0.01)
        return ColourRuntime._run(self, batch)

    def close(self) -> None:
        self.closed = True
        super().close()


def test_auto_tries_one_model_thread_fewer_beside_the_decoder(short_trial, clip, tmp_path, monkeypatch, caplog):
    """Where the stream chose the model's threads itself, the trial also runs overlap with one model
    thread fewer; when that wins, the stream runs on a runtime opened so (the first is closed), the
    summary says so, and the next run opens it at once from the record."""
    from edgecat.select import MANIFEST_KEY
    from edgecat.stream import loop

    cores = usable_cores()
    if cores < 2:
        pytest.skip("needs two usable cores: one model thread fewer than one is none")
    bundle = _fresh_colour_bundle(tmp_path / "b")
    monkeypatch.setattr(loop, "open_backend",
                        lambda b, *_a, **k: (ThreadBound(b, threads=k.get("threads") or cores, slow_in="-"), None))
    ThreadBound.opened.clear()
    for run in range(2):
        events = tmp_path / f"e{run}.jsonl"
        caplog.clear()
        with caplog.at_level("INFO", logger="edgecat.stream.loop"):
            summary = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"])).run()
        assert summary.pipeline == "overlap" and summary.threads == cores - 1 and summary.frames == len(LABELS)
        assert [r["label"] for r in read_jsonl(events)] == [CLASSES[i] for i in LABELS]
        line = next(r.message for r in caplog.records if r.message.startswith("pipeline:"))
        assert f"model on {cores - 1} CPU threads" in line, line
        assert (f"measured: overlap t{cores - 1} " in line) == (run == 0), line
        assert ("measured earlier" in line) == (run == 1), line
    assert [rt.options["threads"] for rt in ThreadBound.opened] == [cores, cores - 1, cores, cores - 1]
    assert all(rt.closed for rt in ThreadBound.opened)
    (record,) = [v for k, v in bundle.manifest[MANIFEST_KEY].items() if k.startswith(short_trial.SLOT_PREFIX)]
    assert record["pipeline"] == "overlap" and record["threads"] == cores - 1
    assert set(record["fps"]) == {f"serial t{cores}", f"overlap t{cores}", f"overlap t{cores - 1}"}
    assert record["fps"][f"overlap t{cores - 1}"] > max(record["fps"][f"serial t{cores}"], record["fps"][f"overlap t{cores}"])

    # a bundle swapped in later (--watch, SIGHUP) keeps the threads the trial chose, as the shape does
    streamer = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 's.jsonl'}"]))
    assert streamer.run().threads == cores - 1
    swapped = streamer._open_next(bundle)
    assert swapped.options["threads"] == cores - 1
    swapped.close()

    pinned = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'p.jsonl'}"],
                                           runtime_options={"threads": cores})).run()
    assert pinned.threads == cores  # --threads given: the trial keeps them (and keeps its own record)


class PerCall(ColourRuntime):
    """A CPU model whose cost is per call, not per frame (a fixed overhead that a batch shares, as
    OpenVINO's INT8 showed at 224 px): batching frames that are already decoded pays."""

    backend = "onnxruntime"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import time

        self.frames = getattr(self, "frames", 0) + len(batch)
        time.sleep(0.01)
        return super()._run(batch)


def test_auto_batches_decoded_frames_where_the_trial_measures_it_faster(short_trial, clip, tmp_path, monkeypatch,
                                                                        caplog):
    """With ``--batch`` left at 1 the trial also runs overlap on two frames per call; when that wins,
    the stream runs so (every frame once, in order, the same answers), the record says so, the next
    run batches at once, and a ``--batch`` the caller set keeps its own record without the candidate."""
    from edgecat.select import MANIFEST_KEY

    monkeypatch.setattr(short_trial, "TRIAL_BATCH", 2)
    bundle = _fresh_colour_bundle(tmp_path / "b")
    cores = usable_cores()
    for run in range(2):
        events = tmp_path / f"e{run}.jsonl"
        rt = PerCall(bundle, threads=cores)
        caplog.clear()
        with caplog.at_level("INFO", logger="edgecat.stream.loop"):
            summary = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"]), rt).run()
        rows = read_jsonl(events)
        assert [r["frame"] for r in rows] == list(range(len(LABELS)))
        assert [r["label"] for r in rows] == [CLASSES[i] for i in LABELS]
        assert summary.pipeline == "overlap" and summary.frames == len(LABELS)
        assert summary.batches < len(LABELS)  # frames went to the model together
        line = next(r.message for r in caplog.records if r.message.startswith("pipeline:"))
        assert "up to 2 frames per call" in line, line
        assert (f"measured: overlap t{cores} batch 2 " in line) == (run == 0), line
    (record,) = [v for k, v in bundle.manifest[MANIFEST_KEY].items() if k.startswith(short_trial.SLOT_PREFIX)]
    assert record["pipeline"] == "overlap" and record["batch"] == 2 and record["threads"] == cores
    assert record["fps"][f"overlap t{cores} batch 2"] > 1.4 * record["fps"][f"overlap t{cores}"]

    caplog.clear()
    with caplog.at_level("INFO", logger="edgecat.stream.loop"):
        given = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'g.jsonl'}"],
                                              batch=3), PerCall(bundle, threads=cores)).run()
    line = next(r.message for r in caplog.records if r.message.startswith("pipeline:"))
    assert "batch 2" not in line and "measured:" in line and "up to 3 frames per call" in line, line
    assert given.frames == len(LABELS)
    slots = [k for k in bundle.manifest[MANIFEST_KEY] if k.startswith(short_trial.SLOT_PREFIX)]
    assert len(slots) == 2 and sum(k.endswith(" | batch 3") for k in slots) == 1


class Quick(ColourRuntime):
    """A runner-up runtime that runs the stream faster than auto's choice in every shape."""

    backend = "openvino"


def test_auto_times_the_runner_up_runtime_and_runs_it_where_the_stream_is_faster(short_trial, clip, tmp_path,
                                                                                 monkeypatch, caplog):
    """Where auto chose the model, the runtimes it found nearly as fast alone are timed in the stream
    too (how a runtime shares the cores with decoding is not in a model-only time); a faster one runs
    the stream, the record names it, and the next run opens it at once."""
    from edgecat import select
    from edgecat.select import MANIFEST_KEY, Choice, Timing
    from edgecat.stream import loop

    cores = usable_cores()
    bundle = _fresh_colour_bundle(tmp_path / "b")
    opened: list[Any] = []

    def open_backend(b, *_a, **k):
        rt = PerCall(b, threads=k.get("threads") or cores)
        opened.append(rt)
        return rt, Choice("onnxruntime", "fp32", "", [Timing("onnxruntime", "fp32", cores, 1.0, status="chosen")],
                          threads=cores)

    def open_runner_up(b, backend, precision, options, threads):
        assert (backend, precision) == ("openvino", "fp32") and options["stop_spinning"]
        rt = Quick(b, threads=threads)
        opened.append(rt)
        return rt

    monkeypatch.setattr(loop, "open_backend", open_backend)
    monkeypatch.setattr(loop, "_open_runner_up", open_runner_up)
    monkeypatch.setattr(select, "runners_up", lambda b, choice, limit=1: [Timing("openvino", "fp32", cores, 1.1)])
    for run in range(2):
        events = tmp_path / f"e{run}.jsonl"
        caplog.clear()
        with caplog.at_level("INFO", logger="edgecat.stream.loop"):
            summary = Streamer(bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"])).run()
        assert summary.backend == "openvino" and summary.frames == len(LABELS)
        assert [r["label"] for r in read_jsonl(events)] == [CLASSES[i] for i in LABELS]
        line = next(r.message for r in caplog.records if r.message.startswith("pipeline:"))
        assert ("measured: openvino/fp32 " in line) == (run == 0), line
        assert ("measured earlier" in line) == (run == 1), line
        assert "model: colour on openvino/fp32" in caplog.text
    (key, record), = [(k, v) for k, v in bundle.manifest[MANIFEST_KEY].items() if k.startswith(short_trial.SLOT_PREFIX)]
    assert record["model"] == "openvino/fp32" and key.endswith(" | also openvino/fp32")
    assert any(label.startswith("openvino/fp32 ") for label in record["fps"]) and f"serial t{cores}" in record["fps"]
    assert short_trial.recall(bundle, key, cores) is None  # a runner-up not offered this time: measured again
    assert opened and all(rt._closed for rt in opened)  # the trial's and the stream's runtimes, every one

    def broken(*_a):
        raise EdgecatError("openvino: no CPU device here")

    monkeypatch.setattr(loop, "_open_runner_up", broken)  # a runner-up that cannot open is left out, not fatal
    other = _fresh_colour_bundle(tmp_path / "c")
    caplog.clear()
    with caplog.at_level("INFO", logger="edgecat.stream"):
        summary = Streamer(other, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{tmp_path / 'c.jsonl'}"])).run()
    assert summary.backend == "onnxruntime" and summary.frames == len(LABELS)
    assert "could not open openvino/fp32" in caplog.text and "measured: " in caplog.text
