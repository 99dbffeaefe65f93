"""Sink URIs -> sinks: the one module that knows every kind of output (a new sink is one entry in
:data:`SCHEMES`, or a file suffix). The concrete sinks only know :mod:`edgecat.stream.base`.

``display://``, ``http://[HOST]:PORT``, ``jsonl://FILE`` (or a ``.jsonl`` path), ``mqtt://`` /
``mqtts://`` (:mod:`edgecat.stream.mqtt_sink`), a video file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from edgecat.errors import EdgecatError
from edgecat.redact import redact
from edgecat.stream.base import Sink, SinkOptions
from edgecat.stream.http_sink import HttpSink
from edgecat.stream.sinks import FOURCC, DisplaySink, JsonlSink, VideoSink


def _display(uri: str, rest: str, options: SinkOptions) -> Sink:
    return DisplaySink(uri)


def _http(uri: str, rest: str, options: SinkOptions) -> Sink:
    """``http://:PORT`` listens on loopback only; naming another host (``http://0.0.0.0:PORT``) is how
    the live view is opened to the network, and then it requires the access token."""
    m = re.fullmatch(r"([^:/]*):(\d+)/?", rest)
    if not m:
        raise EdgecatError(f"bad http sink '{redact(uri)}': expected http://:PORT (this machine only) or "
                           "http://HOST:PORT (e.g. http://0.0.0.0:8080: the network, with an access token)")
    return HttpSink(m.group(1) or "127.0.0.1", int(m.group(2)), token=options.token, sources=options.sources,
                    title=options.title)


def _jsonl(uri: str, rest: str, options: SinkOptions) -> Sink:
    if not rest:
        raise EdgecatError("jsonl:// needs a file: jsonl://events.jsonl")
    return JsonlSink(rest, options.changes_only)


def _mqtt(uri: str, rest: str, options: SinkOptions) -> Sink:
    from edgecat.stream.mqtt_sink import MqttSink

    return MqttSink(uri, credentials=options.credentials, title=options.title, sources=options.sources)


#: URI scheme -> builder(uri, the rest of the URI, options)
SCHEMES: dict[str, Callable[[str, str, SinkOptions], Sink]] = {
    "display://": _display,
    "http://": _http,
    "jsonl://": _jsonl,
    "mqtt://": _mqtt,
    "mqtts://": _mqtt,
}


def parse_sink(uri: str, options: SinkOptions | None = None) -> Sink:
    """The sink ``uri`` names, made with ``options``; an unknown or malformed URI is one-line error."""
    options = options or SinkOptions()
    text = str(uri).strip()
    if text == "display":
        text = "display://"
    for scheme, build in SCHEMES.items():
        if text.startswith(scheme):
            return build(text, text[len(scheme):], options)
    if text.startswith("file://"):
        text = text[len("file://"):]
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        raise EdgecatError(f"unsupported sink '{redact(uri)}': use display://, http://:PORT, jsonl://FILE, mqtt://HOST/PREFIX or out.mp4")
    path = Path(text)
    if path.suffix.lower() == ".jsonl":
        return JsonlSink(path, options.changes_only)
    if path.suffix.lower() in FOURCC:
        return VideoSink(path, options.fps)
    raise EdgecatError(f"unsupported sink '{redact(uri)}': a video file must end in .mp4/.avi/.mkv/.mov")
