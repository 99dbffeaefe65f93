"""Live inference on cameras, network streams, video files and image folders (``edgecat stream``)."""

from edgecat.stream.loop import StreamConfig, Streamer, StreamSummary, run_stream
from edgecat.stream.readers import CameraOptions, gstreamer_support
from edgecat.stream.uri import parse_source

__all__ = ["CameraOptions", "StreamConfig", "StreamSummary", "Streamer", "gstreamer_support", "parse_source",
           "run_stream"]
