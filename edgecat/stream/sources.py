"""Frame sources, in one import: URI parsing (:mod:`~edgecat.stream.uri`), the readers that open
cameras, streams, files and folders (:mod:`~edgecat.stream.readers`) and the capture threads that
feed the pipeline (:mod:`~edgecat.stream.capture`)."""

from edgecat.stream.base import Frame
from edgecat.stream.capture import (
    READ_AHEAD,
    CaptureConfig,
    Ended,
    FileCapture,
    LatestFrame,
    LiveCapture,
    SourceStats,
    SourceThread,
)
from edgecat.stream.readers import (
    CameraOptions,
    CaptureReader,
    FolderReader,
    FrameReader,
    csi_pipeline,
    gstreamer_support,
    make_reader,
    open_video_file,
    require_gstreamer,
)
from edgecat.stream.uri import NETWORK_SCHEMES, VIDEO_EXTENSIONS, SourceSpec, parse_source

__all__ = ["NETWORK_SCHEMES", "READ_AHEAD", "VIDEO_EXTENSIONS", "CameraOptions", "CaptureConfig", "CaptureReader",
           "Ended", "FileCapture", "FolderReader", "Frame", "FrameReader", "LatestFrame", "LiveCapture",
           "SourceSpec", "SourceStats", "SourceThread", "csi_pipeline", "gstreamer_support", "make_reader",
           "open_video_file", "parse_source", "require_gstreamer"]
