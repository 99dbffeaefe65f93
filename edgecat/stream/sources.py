"""Frame sources as URIs (jetson-inference style) and the capture threads that feed the pipeline.

``0`` / ``/dev/video0`` (V4L2), ``csi://0`` (Jetson CSI camera through GStreamer
``nvarguscamerasrc``), ``rtsp://`` and ``http://`` network streams (TCP, short buffer, reconnect with
backoff), a video file, a raw GStreamer pipeline (``gst:...``) and a folder of images.

Live sources run a capture thread that keeps only the newest frame: when inference is slower than the
camera, old frames are dropped (and counted) instead of queueing, so latency never grows. Files and
folders are read ahead through a short bounded queue, so every frame is processed (decode overlaps
inference) unless ``realtime`` plays them at their native rate like a camera.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.imaging import (
    IMAGE_EXTENSIONS,
    bgr_to_rgb,
    decode_image,
    list_images,
    resize,
)
from edgecat.redact import redact

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
READ_AHEAD = 2  # frames a file source decodes ahead: decode of the next frames overlaps inference
#: FFmpeg decoder threads for video files up to SINGLE_THREAD_DECODE_PIXELS. FFmpeg's default (one
#: per CPU) cost 0.40 ms of CPU per 640x480 MPEG-4 frame against 0.27 ms with one thread, and was no
#: faster in wall time: on a CPU the model shares, those extra threads only take cycles from
#: inference. Larger frames keep FFmpeg's default: at 1080p one thread took 1.79 ms per frame
#: against 1.46 ms, which would cap a stream whose model runs on a GPU.
FILE_DECODE_THREADS = 1
SINGLE_THREAD_DECODE_PIXELS = 1280 * 720


FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"


@lru_cache(maxsize=1)
def _cv2():
    """OpenCV with its own and FFmpeg's chatter off unless -v: a failed open is reported once, as our
    own (redacted) line, not as ``[tcp @ 0x...] Connection refused`` on the user's terminal.

    OpenCV's FFmpeg backend reads OPENCV_FFMPEG_LOGLEVEL once, when the first capture opens (checked
    with opencv-python-headless 5.0: setting it later, or cv2.utils.logging, does not silence FFmpeg),
    so it is set here, before any capture; a value the user set wins.
    """
    verbose = logging.getLogger("edgecat").isEnabledFor(logging.DEBUG)
    if not verbose:
        os.environ.setdefault(FFMPEG_LOGLEVEL_ENV, "-8")  # AV_LOG_QUIET
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_WARNING if verbose
                                      else cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - very old OpenCV
        pass
    return cv2


@lru_cache(maxsize=1)
def gstreamer_support() -> str | None:
    """The GStreamer version OpenCV was built with, or None (pip's opencv-python has none)."""
    info = _cv2().getBuildInformation()
    m = re.search(r"GStreamer:\s*(YES|NO)\s*(\(([^)]*)\))?", info)
    if not m or m.group(1) != "YES":
        return None
    return m.group(3) or "yes"


def require_gstreamer(uri: str) -> None:
    if gstreamer_support() is None:
        raise EdgecatError(
            f"{uri} needs OpenCV built with GStreamer, and this OpenCV ({_cv2().__version__}) has none "
            "(pip's opencv-python never does); on a Jetson use JetPack's OpenCV: "
            "pip uninstall opencv-python opencv-python-headless, then use the system python3-opencv"
        )


# TCP for RTSP (UDP loses packets on Wi-Fi and through NAT), no demuxer buffering.
NETWORK_FFMPEG_OPTIONS = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay|max_delay;500000"
_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _ffmpeg_options(options: str) -> Iterator[None]:
    """OpenCV reads FFmpeg options from the environment when a capture opens: set them for this open
    only (left set, low_delay also applies to later video files and drops their first frame). A
    user's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins."""
    key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    with _ENV_LOCK:
        if key in os.environ:
            yield
            return
        os.environ[key] = options
        try:
            yield
        finally:
            os.environ.pop(key, None)


@dataclass
class CameraOptions:
    """Capture settings for cameras (V4L2 and CSI); None keeps the device default."""

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    flip: int = 0  # nvvidconv flip-method: 0 none, 1 ccw 90, 2 180, 3 cw 90, 4 horiz, 6 vert


def csi_pipeline(sensor_id: int, opts: CameraOptions) -> str:
    """The usual Jetson CSI pipeline: NVMM capture, nvvidconv flip/convert, BGR appsink keeping 1 buffer."""
    w, h, fps = opts.width or 1280, opts.height or 720, int(opts.fps or 30)
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={w},height={h},framerate={fps}/1,format=NV12 ! "
        f"nvvidconv flip-method={opts.flip} ! video/x-raw,width={w},height={h},format=BGRx ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def open_video_file(cv2: Any, path: str) -> Any:
    """A video file, decoded with FILE_DECODE_THREADS up to SINGLE_THREAD_DECODE_PIXELS (the size is
    known only once it is open, and the thread count only settable when opening: opened twice)."""
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    pixels = cap.get(cv2.CAP_PROP_FRAME_WIDTH) * cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if cap.isOpened() and 0 < pixels <= SINGLE_THREAD_DECODE_PIXELS and hasattr(cv2, "CAP_PROP_N_THREADS"):
        cap.release()
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, FILE_DECODE_THREADS])
    return cap


@dataclass
class Frame:
    """One captured frame: the picture for sinks and the model's input, made in the capture thread."""

    source: int
    index: int
    image: np.ndarray  # uint8 (H, W, 3) in ``color`` order, for overlay and sinks
    model_input: np.ndarray  # RGB at the model's input size: uint8, or the runtime's input dtype
    t_capture: float  # time.perf_counter() when the frame was read
    color: str = "BGR"
    path: str | None = None  # image-folder frames: the file

    def bgr(self) -> np.ndarray:
        if self.color == "BGR":
            return self.image
        return _cv2().cvtColor(self.image, _cv2().COLOR_RGB2BGR)


@dataclass
class SourceSpec:
    """A parsed source URI."""

    uri: str  # what is shown (logs, errors, summaries, pages): credentials masked
    kind: str  # v4l2 | csi | network | file | gst | folder
    target: Any = field(repr=False)  # device index, sensor id, URL (with credentials), path or pipeline
    live: bool = False


def parse_source(uri: str, credentials: str | None = None) -> SourceSpec:
    """Classify a source URI; a bad one is a one-line EdgecatError.

    Network URIs without a user get one from ``credentials`` (a netrc file) or the environment (see
    :mod:`edgecat.stream.credentials`); ``SourceSpec.uri`` is always the redacted form.
    """
    text = str(uri).strip()
    if not text:
        raise EdgecatError("empty --source")
    if text.isdigit():
        return SourceSpec(text, "v4l2", int(text), True)
    m = re.fullmatch(r"(?:v4l2://)?/dev/video(\d+)", text)
    if m:
        return SourceSpec(text, "v4l2", int(m.group(1)), True)
    m = re.fullmatch(r"csi://(\d+)", text)
    if m:
        return SourceSpec(text, "csi", int(m.group(1)), True)
    if text.startswith("csi://"):
        raise EdgecatError(f"bad CSI source '{text}': expected csi://N (N = sensor id, e.g. csi://0)")
    if text.startswith("gst:"):
        pipeline = text[4:].lstrip("/").strip() if text.startswith("gst://") else text[4:].strip()
        if not pipeline:
            raise EdgecatError("empty GStreamer pipeline: use gst:'videotestsrc ! videoconvert ! appsink'")
        return SourceSpec(redact(text), "gst", pipeline, True)
    if text.lower().startswith(NETWORK_SCHEMES):
        from edgecat.stream.credentials import with_credentials

        return SourceSpec(redact(text), "network", with_credentials(text, credentials), True)
    text = text.removeprefix("file://")
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise EdgecatError(
            f"unsupported source '{redact(uri)}': use 0 or /dev/video0, csi://0, rtsp://..., gst:PIPELINE, "
            "a video file or an image folder"
        )
    path = Path(text)
    if path.is_dir():
        return SourceSpec(str(uri), "folder", path, False)
    if not path.exists():
        raise EdgecatError(f"source not found: {path} (no such video file or image folder)")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return SourceSpec(str(uri), "folder", path, False)
    return SourceSpec(str(uri), "file", path, False)


# ---------------------------------------------------------------------------------- readers
class FrameReader(abc.ABC):
    """Reads raw frames from one source. The capture thread calls :meth:`open` once, :meth:`read`
    per frame, :meth:`rewind` at the end with ``--loop``, :meth:`reconnect` when a live source is
    lost, and :meth:`close` once; what a reader needs (camera settings, decode size) is given to its
    constructor (:func:`make_reader`)."""

    live = False
    fps: float = 0.0  # frames per second the source plays at (0: unknown)
    total: int | None = None  # frames in a file or folder, when known

    def open(self) -> None:  # noqa: B027 - optional hook
        """Open the device/file; raise EdgecatError with one clear line on failure."""

    @abc.abstractmethod
    def read(self) -> tuple[np.ndarray, str, str | None] | None:
        """(image, "BGR" or "RGB", file path or None), or None at the end / on a lost source."""

    def rewind(self) -> bool:
        """Back to the first frame for ``--loop``; False where a source cannot be replayed (live ones)."""
        return False

    def reconnect(self) -> bool:
        """Try to reopen a lost live source once; True when it is back."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device/file."""


class CaptureReader(FrameReader):
    """cv2.VideoCapture for cameras, network streams, files and GStreamer pipelines."""

    def __init__(self, spec: SourceSpec, camera: CameraOptions | None = None) -> None:
        self.spec = spec
        self.camera = camera or CameraOptions()
        self.live = spec.live
        self.cap: Any = None

    def _make_capture(self) -> Any:
        cv2 = _cv2()
        spec = self.spec
        if spec.kind == "v4l2":
            cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
            if cap.isOpened():
                if self.camera.width:
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.camera.width)
                if self.camera.height:
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.camera.height)
                if self.camera.fps:
                    cap.set(cv2.CAP_PROP_FPS, self.camera.fps)
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap
        if spec.kind in ("csi", "gst"):
            require_gstreamer(spec.uri)
            pipeline = csi_pipeline(spec.target, self.camera) if spec.kind == "csi" else spec.target
            log.debug("GStreamer pipeline: %s", redact(pipeline))
            return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER)
        if spec.kind == "network":
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
            with _ffmpeg_options(NETWORK_FFMPEG_OPTIONS):
                cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap
        return open_video_file(cv2, str(spec.target))

    def open(self) -> None:
        cv2 = _cv2()
        self.cap = self._make_capture()
        if not self.cap.isOpened():
            self.cap.release()
            self.cap = None
            kind = self.spec.kind
            if kind == "v4l2":
                raise EdgecatError(f"camera {self.spec.uri} not found or busy (is /dev/video{self.spec.target} "
                                   "there and readable by this user? try `v4l2-ctl --list-devices`)")
            if kind == "csi":
                raise EdgecatError(f"CSI camera {self.spec.uri} did not open (is nvargus-daemon running and "
                                   "the sensor connected?)")
            if kind == "network":
                raise EdgecatError(f"cannot open stream {self.spec.uri} (unreachable, wrong path or credentials)")
            if kind == "gst":
                raise EdgecatError(f"GStreamer pipeline did not open: {redact(self.spec.target)} "
                                   "(it must end in appsink and produce BGR)")
            raise EdgecatError(f"cannot open video file {self.spec.target}: not a video OpenCV can decode")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0 < self.fps < 1000:
            self.fps = 30.0
        if self.spec.kind == "file":
            n = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.total = n if n > 0 else None

    def read(self) -> tuple[np.ndarray, str, str | None] | None:
        if self.cap is None:
            return None
        ok, frame = self.cap.read()
        if not ok or frame is None:
            return None
        if frame.ndim == 2:
            frame = _cv2().cvtColor(frame, _cv2().COLOR_GRAY2BGR)
        return frame, "BGR", None

    def rewind(self) -> bool:
        if self.cap is None:
            return False
        return bool(self.cap.set(_cv2().CAP_PROP_POS_FRAMES, 0))

    def reconnect(self) -> bool:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
        try:
            self.open()
        except EdgecatError:
            return False
        return True

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class FolderReader(FrameReader):
    """A folder (or one file) of images played as frames, sorted by path."""

    def __init__(self, spec: SourceSpec, size: tuple[int, int] | None = None, fps: float = 30.0) -> None:
        self.spec = spec
        self.fps = fps
        self.size = size  # set when no sink shows pictures: JPEGs then decode at reduced DCT scale
        self.files: list[Path] = []
        self.pos = 0

    def open(self) -> None:
        self.files = list_images([self.spec.target])
        if not self.files:
            raise EdgecatError(f"no images in {self.spec.target}")
        self.total = len(self.files)

    def read(self) -> tuple[np.ndarray, str, str | None] | None:
        while self.pos < len(self.files):
            path = self.files[self.pos]
            self.pos += 1
            try:
                return decode_image(path, self.size), "RGB", str(path)
            except EdgecatError as exc:
                log.warning("skipping %s", exc)
        return None

    def rewind(self) -> bool:
        self.pos = 0
        return True


def make_reader(spec: SourceSpec, camera: CameraOptions | None = None,
                model_size: tuple[int, int] | None = None) -> FrameReader:
    """``model_size``: pass it when only the model needs the picture (cheaper image decoding)."""
    if spec.kind == "folder":
        return FolderReader(spec, model_size)
    return CaptureReader(spec, camera)


# ---------------------------------------------------------------------------------- threads
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


class _Ended:
    """Queue marker: the source has no more frames."""


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


class SourceThread:
    """Runs one reader in a daemon thread and hands frames to the pipeline.

    Live sources (and files with ``realtime``) go through a :class:`LatestFrame` slot; files and
    folders through a bounded queue that blocks the reader, so nothing is dropped.
    """

    def __init__(self, index: int, spec: SourceSpec, cfg: CaptureConfig, reader: FrameReader | None = None) -> None:
        self.index = index
        self.spec = spec
        self.cfg = cfg
        self.reader = reader or make_reader(spec, cfg.camera, None if cfg.full_frames else cfg.model_size)
        self.latest = spec.live or cfg.realtime
        self.stats = SourceStats(uri=spec.uri)
        self._slot = LatestFrame()
        self._queue: queue.Queue[Frame | _Ended] = queue.Queue()
        # files: the reader decodes a frame only against a credit the consumer returns when it takes
        # one, so at most READ_AHEAD decoded frames wait (overlap without queueing latency)
        self._credits = threading.Semaphore(max(1, cfg.read_ahead))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"capture-{index}", daemon=True)
        self.error: BaseException | None = None
        self._done = False

    # -- lifecycle
    def open(self) -> None:
        """Open the reader in the caller's thread, so a missing camera is one clear error line."""
        self.reader.open()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._slot.close()
        self._credits.release()  # unblock a reader waiting for a credit

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
    def get(self, timeout: float = 0.5) -> Frame | None | type[_Ended]:
        """Next frame; ``None`` when none arrived within ``timeout``; ``_Ended`` once finished."""
        if self._done:
            return _Ended
        if self.latest:
            frame = self._slot.get(timeout)
            if frame is None and self._slot.closed:
                self._done = True
                return _Ended
            return frame
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        self._credits.release()
        if isinstance(item, _Ended):
            self._done = True
            return _Ended
        return item

    def get_ready(self, limit: int) -> list[Frame]:
        """Up to ``limit`` more frames a file source has already decoded, without waiting: batching
        frames that are ready costs no latency, and the end marker is kept for the next :meth:`get`."""
        out: list[Frame] = []
        if self.latest or self._done:
            return out
        while len(out) < limit:
            with self._queue.mutex:
                head = self._queue.queue[0] if self._queue.queue else None
            if not isinstance(head, Frame):  # nothing decoded yet, or the end marker (kept for get())
                break
            self._queue.get_nowait()  # head: only this (the consumer's) thread takes from the queue
            out.append(head)
            self._credits.release()
        return out

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    # -- producer side
    def _emit(self, frame: Frame) -> bool:
        if self.latest:
            self._slot.put(frame)
        else:
            self._queue.put(frame)
        return True

    def _wait_credit(self) -> bool:
        """Files: block until the consumer has room for another decoded frame; False when stopping."""
        if self.latest:
            return not self._stop.is_set()
        self._credits.acquire()
        return not self._stop.is_set()

    def _finish(self, why: str) -> None:
        self.stats.ended = self.stats.ended or why
        if self.latest:
            self._slot.close()
        else:
            self._queue.put(_Ended())

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
        while self._wait_credit():
            got = reader.read()
            if got is None:
                if not self.latest:
                    self._credits.release()  # the end marker takes no decoded frame's place
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
            frame = Frame(self.index, index, image, x, t, color, path)
            index += 1
            self.stats.read += 1
            if not self._emit(frame):
                return
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


Ended = _Ended
