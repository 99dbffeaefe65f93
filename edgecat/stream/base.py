"""What flows through a stream: the :class:`Frame` a capture thread makes, and the sink contract (what
the stream loop calls on every sink, and the options a sink is made with).

Every output (``display://``, a video file, ``jsonl://FILE``, ``http://:PORT``) subclasses
:class:`Sink`; the loop calls only the methods declared here, so a new sink is one class plus one
entry in :mod:`edgecat.stream.sink_registry`. Kept apart from the concrete sinks so that
``sinks.py`` and ``http_sink.py`` depend on this module and never on each other.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgecat.imaging import bgr_to_rgb
from edgecat.stream.overlay import Result


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
        return bgr_to_rgb(self.image)  # the same channel swap, the other way round


def model_batch(frames: list[Frame]) -> np.ndarray:
    """The frames' model inputs as one NHWC batch; one frame is a view, not a copy (np.stack of a
    single 224x224 frame took 0.44 ms per call in the stream's profile, a fifth of an INT8 model)."""
    if len(frames) == 1:
        return frames[0].model_input[None]
    return np.stack([f.model_input for f in frames])


@dataclass(frozen=True)
class SinkOptions:
    """What every sink of a run is told when it is made (each uses the fields that concern it)."""

    fps: float | None = None  # frame rate of video files; None: the first source's, given to open()
    sources: int = 1  # how many sources the run has: the live view shows one picture per source
    title: str = "stream"  # the bundle's name, shown by the live view
    changes_only: bool = False  # jsonl: a line per label change instead of per frame
    token: str | None = None  # http: the live view's access token (default: $EDGECAT_HTTP_TOKEN)
    credentials: str | None = None  # mqtt: netrc-format file with the broker's user and password


class Sink(abc.ABC):
    """One output of a stream. The loop calls, in order: :meth:`open` once, then :meth:`write` for
    every processed frame and :meth:`stats` a few times a second, and :meth:`close` once, also
    after an error or a signal (closing flushes, so interrupted outputs are still complete)."""

    #: whether the sink looks at pictures; when no sink does, the overlay is not drawn at all
    needs_images: ClassVar[bool] = True
    #: the URI the sink was made from, for log lines (redacted before printing)
    uri: str = ""
    #: set by a sink to end the stream (the display window's q / Esc); read after every write
    stop_requested: bool = False

    def open(self, source_fps: float | None = None) -> None:  # noqa: B027 - most sinks need no set-up
        """Acquire what the sink writes to. ``source_fps``: the first source's frame rate, known only
        once the sources are open (video files use it unless made with an explicit fps)."""

    @abc.abstractmethod
    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        """One processed frame: its result, the current FPS and the overlay picture (None when no
        sink needs pictures). Called from one thread; must not block on slow consumers."""

    def model(self, info: dict[str, Any]) -> None:  # noqa: B027 - only event sinks report the model
        """The model now running (name, bundle hash, backend, precision): before :meth:`open`, and
        again whenever a new bundle is swapped in."""

    def stats(self, stats: dict[str, Any]) -> None:  # noqa: B027 - only the live view shows them
        """The run's running figures (frames, dropped, fps, latency), a few times a second."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Flush and release; called once, whatever ended the stream."""
