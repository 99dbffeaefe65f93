"""The file and screen sinks: ``display://``, a video file and ``jsonl://FILE`` (the live view is
:mod:`edgecat.stream.http_sink`; URIs are turned into sinks by :mod:`edgecat.stream.sink_registry`).

Each implements :class:`edgecat.stream.base.Sink`; closing flushes, so an interrupted stream still
leaves a playable video and a complete JSONL file.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.stream.base import Frame, Sink
from edgecat.stream.overlay import Result

log = logging.getLogger(__name__)

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
DEFAULT_FPS = 30.0  # a video file's frame rate when neither --output-fps nor the source says


class JsonlSink(Sink):
    """One JSON line per processed frame (or per label change): time, source, frame, label, ..."""

    needs_images = False

    def __init__(self, path: str | Path, changes_only: bool = False) -> None:
        self.path = Path(path)
        self.uri = f"jsonl://{path}"
        self.changes_only = changes_only
        self._last: dict[int, str] = {}
        self._f: IO[str] | None = None
        self.lines = 0

    def open(self, source_fps: float | None = None) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "w", encoding="utf-8", buffering=1)  # line-buffered: `tail -f` sees whole lines
        except OSError as exc:
            raise EdgecatError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        if self.changes_only and self._last.get(result.source) == result.label:
            return
        self._last[result.source] = result.label
        event = {
            "time": _dt.datetime.fromtimestamp(result.t_wall, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "source": result.source,
            "frame": result.index,
            "label": result.label,
            "probability": round(result.probability, 5),
            "latency_ms": round(result.latency_ms, 3),
        }
        if result.path:
            event["file"] = result.path
        assert self._f is not None
        self._f.write(json.dumps(event) + "\n")
        self.lines += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None


class VideoSink(Sink):
    """Annotated video; written under a temporary name and renamed on close, so the file that
    appears is always playable. With several sources, source i>0 goes to ``name.i.ext``.
    ``fps``: the file's frame rate; None plays it at the first source's rate (given to :meth:`open`)."""

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path = Path(path)
        self.uri = str(path)
        self.fps = fps
        self._writers: dict[int, tuple[Any, Path, Path, tuple[int, int]]] = {}
        self.frames: dict[int, int] = {}

    def open(self, source_fps: float | None = None) -> None:
        if self.fps is None:
            self.fps = source_fps or DEFAULT_FPS
        if self.path.suffix.lower() not in FOURCC:
            raise EdgecatError(f"unsupported video sink {self.path}: use .mp4, .avi, .mkv or .mov")
        if not self.path.parent.exists():
            raise EdgecatError(f"cannot write {self.path}: folder {self.path.parent} does not exist")

    def _dest(self, source: int) -> Path:
        return self.path if source == 0 else self.path.with_name(f"{self.path.stem}.{source}{self.path.suffix}")

    def _writer(self, source: int, shape: tuple[int, ...]) -> tuple[Any, Path, Path, tuple[int, int]]:
        import cv2

        if source not in self._writers:
            dest = self._dest(source)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=dest.suffix, dir=dest.parent)
            os.close(fd)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the video is an ordinary output file
            size = (int(shape[1]), int(shape[0]))
            writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*FOURCC[dest.suffix.lower()]),
                                     self.fps or DEFAULT_FPS, size)
            if not writer.isOpened():
                Path(tmp).unlink(missing_ok=True)
                raise EdgecatError(f"OpenCV cannot write video {dest}")
            self._writers[source] = (writer, Path(tmp), dest, size)
            self.frames[source] = 0
        return self._writers[source]

    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        import cv2

        img = annotated if annotated is not None else frame.bgr()
        writer, _, _, size = self._writer(frame.source, img.shape)
        if (img.shape[1], img.shape[0]) != size:  # image folders: frames of varying size
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        writer.write(img)
        self.frames[frame.source] += 1

    def close(self) -> None:
        for writer, tmp, dest, _ in self._writers.values():
            writer.release()
            os.replace(tmp, dest)
            log.info("video written: %s", dest)
        self._writers.clear()


class DisplaySink(Sink):
    """An OpenCV window where a GUI exists; otherwise one clear line and a text status line."""

    def __init__(self, uri: str = "display://") -> None:
        self.uri = uri
        self.gui = False
        self._last_print = 0.0
        self.stop_requested = False

    def open(self, source_fps: float | None = None) -> None:
        import cv2

        info = cv2.getBuildInformation()
        no_gui = re.search(r"GUI:\s*NONE", info) is not None
        if not no_gui and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform != "linux"):
            try:
                cv2.namedWindow("edgecat", cv2.WINDOW_NORMAL)
                self.gui = True
            except cv2.error:
                self.gui = False
        if not self.gui:
            why = "this OpenCV has no GUI (opencv-python-headless)" if no_gui else "no display ($DISPLAY unset)"
            log.warning("display:// cannot open a window: %s; printing results as text instead "
                        "(use --sink http://:8080 to watch from a browser)", why)

    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        import time

        if self.gui:
            import cv2

            cv2.imshow("edgecat" if frame.source == 0 else f"edgecat {frame.source}",
                       annotated if annotated is not None else frame.bgr())
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                self.stop_requested = True
            return
        now = time.monotonic()
        if now - self._last_print >= 1.0:
            self._last_print = now
            log.info("[source %d] frame %d: %s %.1f%%  %.1f FPS  %.1f ms", result.source, result.index,
                     result.label, result.probability * 100, fps, result.latency_ms)

    def close(self) -> None:
        if self.gui:
            import cv2

            cv2.destroyAllWindows()
