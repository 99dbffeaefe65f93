"""Source URIs (jetson-inference style), classified before anything opens.

``0`` / ``/dev/video0`` (V4L2), ``csi://0`` (Jetson CSI camera), ``rtsp://`` and ``http://`` network
streams, a video file, a raw GStreamer pipeline (``gst:...``) and a folder of images. Network URIs
get credentials from a netrc file or the environment (:mod:`edgecat.stream.credentials`); what is
shown of a URI is always its redacted form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError
from edgecat.imaging import IMAGE_EXTENSIONS
from edgecat.redact import redact

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


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
