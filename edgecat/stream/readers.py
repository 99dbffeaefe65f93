"""Readers: open one source (camera, network stream, GStreamer pipeline, video file, image folder)
and hand its raw frames to a capture thread (:mod:`edgecat.stream.capture`).

Network streams open over TCP with a short buffer; a lost live source is reopened by
:meth:`FrameReader.reconnect`, which the capture thread calls with backoff.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.imaging import decode_image, list_images
from edgecat.redact import redact
from edgecat.stream.uri import SourceSpec

log = logging.getLogger(__name__)

#: FFmpeg decoder threads for video files up to SINGLE_THREAD_DECODE_PIXELS where a capture thread
#: decodes beside the model (the ``overlap`` shape). FFmpeg's default (one per CPU) cost 0.40 ms of CPU
#: per 640x480 MPEG-4 frame against 0.27 ms with one thread, and was no faster in wall time there: the
#: capture thread already overlaps decoding with inference, and extra threads only take cycles from
#: it. Larger frames keep FFmpeg's default: at 1080p one thread took 1.79 ms per frame against 1.46
#: ms, which would cap a stream whose model runs on a GPU. Where one thread does everything (the
#: ``serial`` shape), FFmpeg's frame threads are the overlap: ``serial.serial_decode_threads``.
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


def open_video_file(cv2: Any, path: str, threads: int | None = FILE_DECODE_THREADS) -> Any:
    """A video file, decoded with ``threads`` FFmpeg threads (None: FFmpeg's default) up to
    SINGLE_THREAD_DECODE_PIXELS (the size is known only once it is open, and the thread count only
    settable when opening: opened twice)."""
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if threads is None:
        return cap
    pixels = cap.get(cv2.CAP_PROP_FRAME_WIDTH) * cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if cap.isOpened() and 0 < pixels <= SINGLE_THREAD_DECODE_PIXELS and hasattr(cv2, "CAP_PROP_N_THREADS"):
        cap.release()
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    return cap


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
        self.decode_threads: int | None = FILE_DECODE_THREADS  # video files: see open_video_file

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
        return open_video_file(cv2, str(spec.target), self.decode_threads)

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

    def set_decode_threads(self, threads: int | None) -> None:
        """Reopen a video file, before its first frame is read, with ``threads`` decoder threads
        (FFmpeg fixes the count when it opens the file); other sources are left as they are."""
        if self.spec.kind != "file" or threads == self.decode_threads:
            return
        self.decode_threads = threads
        if self.cap is not None:
            self.close()
            self.open()

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

