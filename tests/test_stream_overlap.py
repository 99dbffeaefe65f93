"""The stream pipeline overlaps its stages: decode/resize of the next frames and the output of the
previous batch run while the model works. Event-driven: each test waits on conditions that only an
overlapping pipeline can meet (a serial one would time out), never on sleeps."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import WAIT, ColourRuntime, read_jsonl

from edgecat.bundle import Bundle
from edgecat.stream import StreamConfig
from edgecat.stream.base import Sink
from edgecat.stream.loop import Streamer
from edgecat.synthetic import CLASSES, make_video

LABELS = [0] * 8 + [1] * 8 + [0] * 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("overlap") / "clip.mp4", LABELS, size=(160, 120), fps=30)


class WaitingRuntime(ColourRuntime):
    """Holds each model call until ``ready(frames taken so far)`` is true, recording whether it did."""

    def __init__(self, bundle: Bundle, ready) -> None:
        super().__init__(bundle)
        self.ready = ready
        self.done = 0
        self.met: list[bool] = []
        self.sizes: list[int] = []

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self.calls > 0:  # call 0 is the warm-up
            self.met.append(self.ready(self.done + len(batch)))
            self.done += len(batch)
            self.sizes.append(len(batch))
        return super()._run(batch)


def test_next_frame_is_decoded_while_the_model_runs(colour_bundle, clip, readers, tmp_path):
    events = tmp_path / "e.jsonl"
    # while frame k is in the model (k+1 frames taken), the reader must decode frame k+1
    rt = WaitingRuntime(colour_bundle, lambda taken: readers[0].wait_for(taken + 1))
    summary = Streamer(colour_bundle, StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"]), rt).run()
    assert summary.frames == len(LABELS) and all(rt.met) and len(rt.met) == len(LABELS)
    assert [r["label"] for r in read_jsonl(events)] == [CLASSES[i] for i in LABELS]


class BlockingSink(Sink):
    """Its first write waits until the model has started on a later batch."""

    needs_images = False

    def __init__(self, later_batch: threading.Event) -> None:
        self.later_batch = later_batch
        self.first_waited: bool | None = None
        self.frames: list[int] = []

    def write(self, frame, result, fps, annotated) -> None:
        if self.first_waited is None:
            self.first_waited = self.later_batch.wait(WAIT)
        self.frames.append(frame.index)


def test_output_of_one_batch_overlaps_the_next_model_call(colour_bundle, clip, tmp_path):
    second = threading.Event()

    def ready(taken: int) -> bool:
        if taken >= 2:
            second.set()
        return True

    rt = WaitingRuntime(colour_bundle, ready)
    st = Streamer(colour_bundle, StreamConfig(sources=[str(clip)], sinks=[]), rt)
    sink = BlockingSink(second)
    st.sinks.append(sink)
    summary = st.run()
    assert sink.first_waited is True  # a serial loop would deadlock here until WAIT ran out
    assert summary.frames == len(LABELS) and sink.frames == list(range(len(LABELS)))  # in order, none lost


def test_batch_takes_frames_already_decoded(colour_bundle, clip, readers, tmp_path):
    events = tmp_path / "b.jsonl"
    # hold each call until the reader has queued 4 more frames (its 5th read starts only after the
    # 4th frame is queued), so the next gather finds a full batch ready
    rt = WaitingRuntime(colour_bundle, lambda taken: readers[0].wait_for(taken + 5))
    cfg = StreamConfig(sources=[str(clip)], sinks=[f"jsonl://{events}"], batch=4)
    summary = Streamer(colour_bundle, cfg, rt).run()
    rows = read_jsonl(events)
    assert summary.frames == len(LABELS) == len(rows) and sum(rt.sizes) == len(LABELS)
    assert max(rt.sizes) == 4 and summary.batches < len(LABELS)
    assert [r["frame"] for r in rows] == list(range(len(LABELS)))
    assert [r["label"] for r in rows] == [CLASSES[i] for i in LABELS]


def test_sink_error_stops_the_stream_and_is_raised(colour_bundle, clip):
    class Broken(Sink):
        needs_images = False

        def write(self, frame, result, fps, annotated) -> None:
            raise OSError("disk full")

    st = Streamer(colour_bundle, StreamConfig(sources=[str(clip)], sinks=[]), ColourRuntime(colour_bundle))
    st.sinks.append(Broken())
    with pytest.raises(OSError, match="disk full"):
        st.run()
    assert "output error" in st.stopped_by


def test_bad_batch_is_one_line(colour_bundle, clip):
    from edgecat.errors import EdgecatError

    with pytest.raises(EdgecatError, match="--batch must be >= 1"):
        Streamer(colour_bundle, StreamConfig(sources=[str(clip)], batch=0))
