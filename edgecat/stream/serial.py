"""The stream's pipeline shape, chosen by the machine, and the serial reader it may pick.

Two shapes run the same stages (decode, resize to the model size, colour swap, model, sinks):

- ``overlap``: a capture thread per source decodes ahead while the model runs, and an output thread
  runs the sinks (:class:`edgecat.stream.capture.SourceThread`, ``loop._Output``). It wins where
  there is a core the model does not use, and it is the only shape for live sources, whose frames
  arrive on the camera's clock (drops counted, reconnects) whatever the model does.
- ``serial``: one thread does everything, frame after frame (:class:`SerialSource`). Where the
  model's threads already fill the cores, the capture and output threads of ``overlap`` only take
  cycles from them and add hand-offs (measured on a 2-core CPU: the overlapped stream ran at 0.80x
  of a plain one-thread loop).

:func:`choose_pipeline` is the rule; where it would judge a video file long enough to measure on,
:mod:`edgecat.stream.shape_trial` times both shapes instead, since the winner also depends on how the
runtime's threads share the cores with a decoder. benchmarks/README.md has the measurements.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from edgecat.imaging import bgr_to_rgb, resize
from edgecat.stream.base import Frame
from edgecat.stream.capture import CaptureConfig, SourceStats
from edgecat.stream.readers import FILE_DECODE_THREADS, CaptureReader, FrameReader, _cv2
from edgecat.stream.uri import SourceSpec

log = logging.getLogger(__name__)

PIPELINES = ("auto", "serial", "overlap")
#: backends whose model runs on the CPU cores the decoder needs too (a GPU, NPU or server model does not)
CPU_BACKENDS = frozenset({"onnxruntime", "openvino", "litert", "keras", "keras-predict"})


def usable_cores() -> int:
    """CPUs this process may run on: the affinity mask (taskset, cgroup cpusets) capped by a cgroup CPU
    quota, not the machine's count (:func:`edgecat.machine.usable_cpus`)."""
    from edgecat.machine import usable_cpus

    return usable_cpus()


def choose_pipeline(cores: int, model_threads: int, live: bool, sources: int = 1, model_on_cpu: bool = True) -> str:
    """``serial`` when one file source feeds a CPU model whose threads already fill the cores, else
    ``overlap``: live sources (and ``--realtime``) keep their capture thread, several sources are read
    in parallel, and a model on a GPU or with a core to spare leaves room for decoding beside it."""
    if live or sources != 1 or not model_on_cpu or model_threads <= 0:
        return "overlap"
    return "serial" if model_threads >= cores else "overlap"


def serial_decode_threads(cores: int) -> int | None:
    """FFmpeg decoder threads for a video file the stream reads in the model's own thread. With two
    or more usable cores, FFmpeg's default (None): its frame threads decode the next frames while the
    model runs, so a read returns a frame decoded in the background (0.5 ms of the caller's time per
    640x480 MPEG-4 frame against 1.9 ms with one decoder thread; the serial stream 62 against 58 FPS
    on 2 cores). On one core there is nothing to decode beside: one thread, as frame threads only pass
    frames back and forth on it (under load that held a plain loop to 0.4x of edgecat's)."""
    return None if cores > 1 else FILE_DECODE_THREADS


def model_threads(runtime: Any) -> int:
    """CPU threads the runtime's model uses (0: it does not run on the CPU)."""
    from edgecat.runtime.base import physical_cores

    if runtime.backend not in CPU_BACKENDS:
        return 0
    device = str(runtime.options.get("device") or "CPU")
    if runtime.backend == "openvino" and not device.upper().startswith("CPU"):
        return 0
    return int(runtime.options.get("threads") or physical_cores())


class SerialSource:
    """One file source read in the consumer's own thread: the same frames, in order, with the same
    fields as a :class:`~edgecat.stream.capture.SourceThread` gives, and the same ``stats``.

    A video file is reopened with FFmpeg's own decoder threads (:func:`serial_decode_threads`): they
    decode the next frames while the model runs, the overlap this shape has no thread for.
    Where no sink looks at the pictures, video frames are decoded into one reused buffer (the frame
    is finished with before the next read), saving a 640x480 allocation per frame."""

    def __init__(self, index: int, spec: SourceSpec, cfg: CaptureConfig, reader: FrameReader,
                 stats: SourceStats | None = None) -> None:
        self.index = index
        self.spec = spec
        self.cfg = cfg
        self.reader = reader
        self.stats = stats or SourceStats(uri=spec.uri)
        self.error: BaseException | None = None
        self.dropped = 0  # every frame of a file is processed
        video = isinstance(reader, CaptureReader)
        if video:
            reader.set_decode_threads(serial_decode_threads(usable_cores()))
        self._reuse = video and not cfg.full_frames
        self._buf: np.ndarray | None = None
        self._n = 0
        self._done = False

    @property
    def total(self) -> int | None:
        return None if self.cfg.loop else self.reader.total

    def _read(self) -> tuple[np.ndarray, str, str | None] | None:
        if not self._reuse:
            return self.reader.read()
        cap = self.reader.cap  # type: ignore[attr-defined]
        if cap is None:
            return None
        ok, frame = cap.read(self._buf)
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            return _cv2().cvtColor(frame, _cv2().COLOR_GRAY2BGR), "BGR", None
        self._buf = frame  # OpenCV writes into it next time when the size matches
        return frame, "BGR", None

    def next(self) -> Frame | None:
        """The next frame, or None at the end (``stats.ended`` says why)."""
        while not self._done:
            got = self._read()
            if got is None:
                if self.cfg.loop and self._n > 0 and self.reader.rewind():
                    continue
                self.finish("end of file" if self.spec.kind == "file" else "end of folder")
                return None
            t = time.perf_counter()
            image, color, path = got
            x = resize(image, self.cfg.model_size)  # then the colour swap on the small image
            if color == "BGR":
                x = bgr_to_rgb(x)
            if self.cfg.prepare is not None:
                x = self.cfg.prepare(x[None])[0]
            frame = Frame(self.index, self._n, image, x, t, color, path)
            self._n += 1
            self.stats.read += 1
            return frame
        return None

    def finish(self, why: str) -> None:
        self.stats.ended = self.stats.ended or why
        self._done = True

    # the lifecycle of a SourceThread, so the stream closes either the same way
    def stop(self) -> None:
        self.finish("stopped")

    def join(self, timeout: float = 5.0) -> None:
        self.reader.close()


__all__ = ["CPU_BACKENDS", "PIPELINES", "SerialSource", "choose_pipeline", "model_threads", "serial_decode_threads",
           "usable_cores"]
