"""Capture threads: each runs one reader (:mod:`edgecat.stream.readers`) and hands frames to the
pipeline, made ready for the model (resized, RGB, the runtime's input dtype) in the capture thread.

Two ways to hand them over, one class each:

- :class:`LiveCapture` (cameras, network streams, and files played ``realtime``): the latest frame
  wins. When inference is slower than the source, old frames are dropped (and counted) instead of
  queueing, so latency never grows; a lost live source is reopened with backoff.
- :class:`FileCapture` (files and folders): every frame, in order. The reader decodes a frame only
  against a credit the consumer returns when it takes one, so a few decoded frames wait (decode
  overlaps inference) and nothing is dropped.

``SourceThread(index, spec, cfg)`` makes the one the source needs.
"""

from __future__ import annotations

import abc
import enum
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from edgecat.imaging import bgr_to_rgb, resize
from edgecat.redact import redact
from edgecat.stream.base import Frame
from edgecat.stream.readers import CameraOptions, FrameReader, make_reader
from edgecat.stream.uri import SourceSpec

log = logging.getLogger(__name__)

READ_AHEAD = 2  # frames a file source decodes ahead: decode of the next frames overlaps inference


class _End(enum.Enum):
    ENDED = "ended"


#: what :meth:`SourceThread.get` returns, and a file source queues, once the source has no more frames
Ended: Literal[_End.ENDED] = _End.ENDED


@dataclass
class SourceStats:
    uri: str
    read: int = 0  # frames captured
    dropped: int = 0  # captured but overwritten before inference took them
    reconnects: int = 0
    ended: str = ""  # why the source stopped ("end of file", "lost", ...)


class LatestFrame:
    """A one-slot mailbox: ``put`` overwrites (counting the overwritten frame as dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame, waiting for one; None when closed and empty, or on timeout."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while self._frame is None and not self._closed:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._frame = self._frame, None
            return frame

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed and self._frame is None


@dataclass
class CaptureConfig:
    model_size: tuple[int, int]
    realtime: bool = False
    loop: bool = False
    reconnect_seconds: float = 30.0  # how long a lost live source is retried before it ends
    camera: CameraOptions = field(default_factory=CameraOptions)
    full_frames: bool = True  # False when no sink looks at pictures
    read_ahead: int = READ_AHEAD  # decoded frames a file source keeps ready (>= the stream's batch)
    #: the runtime's input conversion (Runtime.prepare), run here in the capture thread so the model
    #: thread gets frames already in its input dtype (uint8 -> float32 took 0.4 ms per 224 px frame
    #: in the model thread); None: frames stay uint8
    prepare: Any = None


class SourceThread(abc.ABC):
    """Runs one reader in a daemon thread. The consumer (the stream loop, one thread) calls
    :meth:`get` and :meth:`get_ready`; the capture thread only reads, prepares and hands over.

    ``SourceThread(index, spec, cfg)`` gives a :class:`LiveCapture` for live sources and files played
    ``realtime``, a :class:`FileCapture` otherwise.
    """

    def __new__(cls, index: int, spec: SourceSpec, cfg: CaptureConfig,
                reader: FrameReader | None = None) -> SourceThread:
        if cls is SourceThread:
            cls = LiveCapture if (spec.live or cfg.realtime) else FileCapture
        return super().__new__(cls)

    def __init__(self, index: int, spec: SourceSpec, cfg: CaptureConfig, reader: FrameReader | None = None) -> None:
        self.index = index
        self.spec = spec
        self.cfg = cfg
        self.reader = reader or make_reader(spec, cfg.camera, None if cfg.full_frames else cfg.model_size)
        self.stats = SourceStats(uri=spec.uri)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{index}", daemon=True)
        self.error: BaseException | None = None
        self._done = False  # consumer side: the end was handed out

    # -- lifecycle
    def open(self) -> None:
        """Open the reader in the caller's thread, so a missing camera is one clear error line."""
        self.reader.open()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake_producer()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the capture thread; it releases the reader itself when it ends, so a read or a
        reconnect still blocked in OpenCV never races a release from this thread."""
        if self._thread.ident is None:  # never started: nothing else touches the reader
            self.reader.close()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("source %s did not stop within %.0f s (blocked in a read); it is released "
                        "when that read returns", self.spec.uri, timeout)

    @property
    def total(self) -> int | None:
        return None if self.cfg.loop else self.reader.total

    # -- consumer side
    @abc.abstractmethod
    def get(self, timeout: float = 0.5) -> Frame | None | Literal[_End.ENDED]:
        """Next frame; ``None`` when none arrived within ``timeout``; :data:`Ended` once finished."""

    def get_ready(self, limit: int) -> list[Frame]:
        """Up to ``limit`` more frames already decoded, without waiting (none for a live source)."""
        return []

    @property
    def dropped(self) -> int:
        return 0

    # -- producer side (the capture thread)
    def _wake_producer(self) -> None:  # noqa: B027 - a live source never waits for room
        """Unblock a capture thread waiting to hand a frame over (on stop)."""

    def _wait_room(self) -> bool:
        """Block until the consumer has room for another frame; False when stopping."""
        return not self._stop.is_set()

    def _unused_room(self) -> None:  # noqa: B027 - a live source reserves no room
        """A read that gave no frame gives back the room :meth:`_wait_room` reserved."""

    @abc.abstractmethod
    def _emit(self, frame: Frame) -> None:
        """Hand one frame to the consumer."""

    @abc.abstractmethod
    def _end(self) -> None:
        """Tell the consumer there are no more frames."""

    def _finish(self, why: str) -> None:
        self.stats.ended = self.stats.ended or why
        self._end()

    def _run(self) -> None:
        try:
            self._capture_loop()
        except BaseException as exc:  # noqa: BLE001 - reported by the pipeline, never a silent thread death
            self.error = exc
            log.error("source %s failed: %s", self.spec.uri, redact(exc))
            self._finish(f"error: {redact(exc)}")
        finally:
            self.reader.close()  # in this thread: the only one that reads or reconnects

    def _capture_loop(self) -> None:
        reader, size = self.reader, self.cfg.model_size
        pace = 1.0 / reader.fps if (self.cfg.realtime and not self.spec.live and reader.fps) else 0.0
        next_t = time.perf_counter()
        index = 0
        while self._wait_room():
            got = reader.read()
            if got is None:
                self._unused_room()
                if self.spec.live:
                    if self._reconnect():
                        continue
                    self._finish("lost")
                    return
                if self.cfg.loop and index > 0 and reader.rewind():
                    continue
                self._finish("end of file" if self.spec.kind == "file" else "end of folder")
                return
            t = time.perf_counter()
            image, color, path = got
            x = resize(image, size)  # then the colour swap on the small image: same pixels, a tenth of the work
            if color == "BGR":
                x = bgr_to_rgb(x)
            if self.cfg.prepare is not None:
                x = self.cfg.prepare(x[None])[0]
            self._emit(Frame(self.index, index, image, x, t, color, path))
            index += 1
            self.stats.read += 1
            if pace:
                next_t += pace
                delay = next_t - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_t = time.perf_counter()
        self._finish("stopped")

    def _reconnect(self) -> bool:
        """Reopen a lost live source with exponential backoff, for up to reconnect_seconds."""
        limit = self.cfg.reconnect_seconds
        if limit <= 0:
            return False
        log.warning("source %s lost; reconnecting (up to %.0f s)", self.spec.uri, limit)
        deadline, delay = time.monotonic() + limit, 0.25
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.reader.reconnect():
                self.stats.reconnects += 1
                log.info("source %s reconnected", self.spec.uri)
                return True
            self._stop.wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 5.0)
        log.warning("source %s did not come back within %.0f s", self.spec.uri, limit)
        return False


class LiveCapture(SourceThread):
    """The latest frame wins: a one-slot :class:`LatestFrame` the capture thread overwrites."""

    def __init__(self, index: int, spec: SourceSpec, cfg: CaptureConfig, reader: FrameReader | None = None) -> None:
        super().__init__(index, spec, cfg, reader)
        self._slot = LatestFrame()

    def get(self, timeout: float = 0.5) -> Frame | None | Literal[_End.ENDED]:
        if self._done:
            return Ended
        frame = self._slot.get(timeout)
        if frame is None and self._slot.closed:
            self._done = True
            return Ended
        return frame

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    def _wake_producer(self) -> None:
        self._slot.close()

    def _emit(self, frame: Frame) -> None:
        self._slot.put(frame)

    def _end(self) -> None:
        self._slot.close()


class FileCapture(SourceThread):
    """Every frame, in order: a queue fed against credits, at most ``read_ahead`` decoded frames ahead."""

    def __init__(self, index: int, spec: SourceSpec, cfg: CaptureConfig, reader: FrameReader | None = None) -> None:
        super().__init__(index, spec, cfg, reader)
        self._queue: queue.Queue[Frame | Literal[_End.ENDED]] = queue.Queue()
        # the reader decodes a frame only against a credit the consumer returns when it takes one, so
        # at most read_ahead decoded frames wait (overlap without queueing latency)
        self._ahead = max(1, cfg.read_ahead)
        self._credits = threading.Semaphore(self._ahead)

    def _take(self, item: Frame | Literal[_End.ENDED]) -> Frame | None:
        """The consumer took ``item``: its credit goes back; the end is remembered for :meth:`get`."""
        self._credits.release()
        if item is Ended:
            self._done = True
            return None
        return item

    def get(self, timeout: float = 0.5) -> Frame | None | Literal[_End.ENDED]:
        if self._done:
            return Ended
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        frame = self._take(item)
        return Ended if frame is None else frame

    def get_ready(self, limit: int) -> list[Frame]:
        """Batching frames that are ready costs no latency; an end met here is handed out by the
        next :meth:`get`."""
        out: list[Frame] = []
        while len(out) < limit and not self._done:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            frame = self._take(item)
            if frame is not None:
                out.append(frame)
        return out

    def allow_ahead(self, frames: int) -> None:
        """Keep up to ``frames`` decoded frames ready (a batch chosen after this source was made)."""
        while self._ahead < frames:
            self._ahead += 1
            self._credits.release()

    def _wake_producer(self) -> None:
        self._credits.release()  # a reader waiting for a credit

    def _wait_room(self) -> bool:
        self._credits.acquire()
        return not self._stop.is_set()

    def _unused_room(self) -> None:
        self._credits.release()  # the end marker takes no decoded frame's place

    def _emit(self, frame: Frame) -> None:
        self._queue.put(frame)

    def _end(self) -> None:
        self._queue.put(Ended)
