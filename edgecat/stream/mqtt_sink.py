"""``mqtt://[user@]host[:port]/topic/prefix``: events for a fleet, over MQTT (paho-mqtt).

What a device publishes under its prefix ``P`` (source ``N`` is the source's position, 0 first):

- ``P/status``: ``online``, retained; the broker publishes ``offline`` (the last will) when the device
  dies without saying goodbye, and a clean stop publishes it too, so a dead device shows as offline;
- ``P/N/state``: retained JSON on every label change (and the first frame): label, probability,
  frame time and index, model name, bundle hash, backend;
- ``P/N/frames``: every frame's result, not retained, at most ``?stream=FPS`` messages a second per
  source (``?stream=all``: every frame; off unless asked: a busy camera would flood the broker);
- ``homeassistant/sensor/NODE/sourceN/config``: Home Assistant MQTT discovery, retained, so a
  camera's label appears as a sensor with no YAML (``?discovery=PREFIX`` changes the prefix,
  ``?discovery=off`` turns it off).

Options in the query string: ``protocol=311`` (default) or ``5``; ``qos=1`` (state messages) or 0;
``queue=1000`` messages kept while the broker is away; ``client_id``; ``keepalive`` seconds;
``ca=FILE`` for ``mqtts://`` (default: the system's CAs). ``mqtts://`` is TLS on port 8883.

Credentials: a user in the URI, the password from ``$EDGECAT_MQTT_PASSWORD`` (and the user from
``$EDGECAT_MQTT_USER`` when the URI has none) or from the netrc file named by ``--credentials`` /
``$EDGECAT_CREDENTIALS`` (``machine BROKER login USER password PASSWORD``). The password is
registered with :mod:`edgecat.redact` and the sink's URI never holds it, so it is never printed.

Publishing never blocks the stream: :meth:`MqttSink.write` appends to a bounded queue that one
thread sends, one message at a time, waiting for the broker's acknowledgement (QoS 1). While the
broker is away paho reconnects with backoff (1 s doubling to 60 s); messages wait in the queue and
beyond ``queue`` the oldest per-frame message (else the oldest message) is dropped and counted. On
every reconnect the status, the discovery configs and each source's last acknowledged state are
published again before the queue, so a broker restarted without persistence gets its retained
state back, and the newest state is always the last one sent.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from edgecat import __version__
from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.redact import redact, register_secret
from edgecat.stream.base import Sink
from edgecat.stream.credentials import FILE_ENV, read_credentials_file
from edgecat.stream.overlay import Result
from edgecat.stream.base import Frame

log = logging.getLogger(__name__)

USER_ENV = "EDGECAT_MQTT_USER"
PASSWORD_ENV = "EDGECAT_MQTT_PASSWORD"
OPTIONS = ("protocol", "qos", "queue", "client_id", "keepalive", "ca", "stream", "discovery")
CONNECT_WAIT = 5.0  # seconds open() waits for the first connection before going on without it
ACK_WAIT = 10.0
CLOSE_WAIT = 5.0  # seconds close() waits for queued messages to reach the broker


@dataclass
class _Message:
    topic: str
    payload: str
    qos: int
    retain: bool
    kind: str  # "state", "frames", "status"
    source: int = -1


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``mqtt://`` URI (no password: that lives only in :attr:`MqttSink._password`)."""

    tls: bool
    host: str
    port: int
    prefix: str
    user: str | None
    protocol: int
    qos: int
    queue: int
    client_id: str
    keepalive: int
    ca: str | None
    stream_fps: float
    discovery: str | None

    @property
    def uri(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}/{self.prefix}"


def _bad(uri: str, why: str) -> EdgecatError:
    return EdgecatError(f"bad mqtt sink '{redact(uri)}': {why}")


def parse_mqtt(uri: str) -> tuple[MqttTarget, str | None]:
    """(target, password given in the URI) from ``mqtt[s]://[user[:password]@]host[:port]/prefix[?options]``."""
    parts = urlsplit(uri)
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise _bad(uri, "the port must be a number") from None
    if not parts.hostname:
        raise _bad(uri, "expected mqtt://[user@]host[:port]/topic/prefix")
    prefix = parts.path.strip("/")
    if not prefix or parts.fragment or "#" in uri or "+" in prefix or "//" in prefix:
        raise _bad(uri, "needs a topic prefix without wildcards, e.g. mqtt://broker/edgecat/door")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - set(OPTIONS))
    if unknown:
        raise _bad(uri, f"unknown option '{unknown[0]}' (options: {', '.join(OPTIONS)})")

    def number(name: str, default: float, cast: type = int, lo: float = 0) -> Any:
        try:
            value = cast(query.get(name, default))
        except ValueError:
            raise _bad(uri, f"{name} must be a number") from None
        if value < lo:
            raise _bad(uri, f"{name} must be >= {lo}")
        return value

    protocol = query.get("protocol", "311").replace(".", "")
    if protocol not in ("311", "5", "50"):
        raise _bad(uri, "protocol must be 311 (MQTT 3.1.1) or 5")
    qos = number("qos", 1)
    if qos not in (0, 1):
        raise _bad(uri, "qos must be 0 or 1")
    ca = query.get("ca") or None
    if ca and not tls:
        raise _bad(uri, "ca= is for mqtts:// (TLS)")
    if ca and not Path(ca).is_file():
        raise _bad(uri, f"CA file {ca} not found")
    discovery = query.get("discovery", "homeassistant")
    node = re.sub(r"[^A-Za-z0-9_-]", "_", prefix)
    target = MqttTarget(
        tls=tls, host=parts.hostname, port=port, prefix=prefix,
        user=unquote(parts.username) if parts.username else None,
        protocol=5 if protocol.startswith("5") else 311, qos=qos, queue=number("queue", 1000, int, 1),
        client_id=query.get("client_id") or f"edgecat-{node}"[:64], keepalive=number("keepalive", 30, int, 5),
        ca=ca, stream_fps=math.inf if query.get("stream") == "all" else number("stream", 0.0, float),
        discovery=None if discovery in ("", "off", "0") else discovery,
    )
    return target, unquote(parts.password) if parts.password is not None else None


def resolve_credentials(target: MqttTarget, uri_password: str | None,
                        credentials_file: str | None = None) -> tuple[str | None, str | None]:
    """(user, password): the URI's, else the netrc file's entry for the broker, else the environment."""
    user, password = target.user, uri_password
    if password is None:
        path = credentials_file or os.environ.get(FILE_ENV)
        entry = read_credentials_file(path).get(target.host) if path else None
        if entry and (user is None or user == entry[0]):
            user, password = entry[0] or user, entry[1]
    if password is None and os.environ.get(PASSWORD_ENV):
        user = user or os.environ.get(USER_ENV)
        password = os.environ[PASSWORD_ENV]
    if user is None and os.environ.get(USER_ENV):
        user = os.environ[USER_ENV]
    register_secret(password)
    return user, password


class MqttSink(Sink):
    """Publishes state changes, optional per-frame results, availability and discovery (see module)."""

    needs_images = False

    def __init__(self, uri: str, credentials: str | None = None, title: str = "edgecat", sources: int = 1) -> None:
        self.target, uri_password = parse_mqtt(uri)
        self._user, self._password = resolve_credentials(self.target, uri_password, credentials)
        self.uri = self.target.uri  # no password: safe to log
        self.title = title
        self.sources = sources
        self.info: dict[str, Any] = {"model": title}
        self.dropped = 0  # messages dropped because the queue was full or the broker was away
        self.reconnects = 0
        self.published = 0
        self.connected = False
        self._connections = 0
        self._auth_error: str | None = None
        self._q: deque[_Message] = deque()
        self._cond = threading.Condition()
        self._resync = False
        self._closing = False
        self._last_label: dict[int, str] = {}
        self._last_frames: dict[int, float] = {}
        self._acked_state: dict[int, _Message] = {}
        self._client: Any = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ topics
    def topic(self, *parts: object) -> str:
        return "/".join([self.target.prefix, *map(str, parts)])

    def _node(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.target.prefix)

    def discovery_messages(self) -> list[_Message]:
        """Home Assistant MQTT discovery: one sensor per source, its state the label."""
        if not self.target.discovery:
            return []
        node = self._node()
        out = []
        for i in range(self.sources):
            config = {
                "name": f"source {i} label" if self.sources > 1 else "label",
                "unique_id": f"{node}_source{i}",
                "state_topic": self.topic(i, "state"),
                "value_template": "{{ value_json.label }}",
                "json_attributes_topic": self.topic(i, "state"),
                "availability_topic": self.topic("status"),
                "payload_available": "online",
                "payload_not_available": "offline",
                "icon": "mdi:cctv",
                "device": {"identifiers": [node], "name": self.target.prefix, "manufacturer": "edgecat",
                           "model": self.title, "sw_version": __version__},
            }
            out.append(_Message(f"{self.target.discovery}/sensor/{node}/source{i}/config", json.dumps(config),
                                1, True, "status"))
        return out

    # ------------------------------------------------------------------ sink
    def model(self, info: dict[str, Any]) -> None:
        if self._client is not None and info.get("bundle") != self.info.get("bundle"):
            self._last_label.clear()  # a swapped-in bundle: the next frame's state names it, changed label or not
        self.info = dict(info)

    def open(self, source_fps: float | None = None) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingDependencyError("the mqtt:// sink needs paho-mqtt: pip install paho-mqtt") from None
        t = self.target
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=t.client_id,
                             protocol=mqtt.MQTTv5 if t.protocol == 5 else mqtt.MQTTv311)
        if self._user:
            client.username_pw_set(self._user, self._password)
        if t.tls:
            try:
                client.tls_set(ca_certs=t.ca, cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError) as exc:
                raise EdgecatError(f"mqtts: cannot use CA file {t.ca}: {exc}") from None
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        # paho's own lines (an ERROR for every connection attempt while the broker is away) at debug level:
        # the sink logs what a person needs (lost, reconnected, refused) once
        client.on_log = lambda _c, _u, _level, text: log.debug("paho: %s", redact(text))
        self._client = client
        try:
            client.connect_async(t.host, t.port, keepalive=t.keepalive)
        except (OSError, ValueError) as exc:
            raise EdgecatError(f"mqtt: cannot connect to {self.uri}: {redact(exc)}") from None
        client.loop_start()
        self._thread = threading.Thread(target=self._send_loop, name="mqtt-sink", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self.connected or self._auth_error, CONNECT_WAIT)
        if self._auth_error:
            self._shutdown()
            raise EdgecatError(f"mqtt: the broker {self.uri} refused the connection: {self._auth_error}")
        if self.connected:
            log.info("mqtt: publishing to %s (state retained under %s/N/state)", self.uri, t.prefix)
        else:
            log.warning("mqtt: broker %s not reachable yet (%s); the stream goes on, up to %d messages are kept "
                        "until it is", self.uri, self._diagnose(), t.queue)

    def _diagnose(self) -> str:
        """Why the broker cannot be reached, in a few words (paho retries without saying)."""
        import socket

        t = self.target
        try:
            with socket.create_connection((t.host, t.port), timeout=3) as sock:
                if t.tls:
                    ctx = ssl.create_default_context(cafile=t.ca)
                    with ctx.wrap_socket(sock, server_hostname=t.host):
                        pass
        except ssl.SSLError as exc:
            return f"TLS: {exc.reason or exc}"
        except OSError as exc:
            return str(exc.strerror or exc)
        return "no answer to CONNECT"

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            text = str(reason)
            with self._cond:
                if "authori" in text.lower() or "password" in text.lower() or self._connections == 0:
                    self._auth_error = self._auth_error or text
                self._cond.notify_all()
            log.warning("mqtt: %s refused the connection: %s", self.uri, text)
            return
        with self._cond:
            if self._connections:
                self.reconnects += 1
                log.info("mqtt: reconnected to %s", self.uri)
            self._connections += 1
            self.connected = True
            self._resync = True
            self._cond.notify_all()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._cond:
            was = self.connected
            self.connected = False
            self._cond.notify_all()
        if was and not self._closing:
            log.warning("mqtt: lost the broker %s (%s); reconnecting, messages are queued", self.uri, reason)

    def _enqueue(self, msg: _Message) -> None:
        with self._cond:
            if len(self._q) >= self.target.queue:
                if msg.kind == "frames":
                    self.dropped += 1
                    return
                victim = next((m for m in self._q if m.kind == "frames"), self._q[0])
                self._q.remove(victim)
                self.dropped += 1
            self._q.append(msg)
            self._cond.notify_all()

    def write(self, frame: Frame, result: Result, fps: float, annotated: np.ndarray | None) -> None:
        src = result.source
        changed = self._last_label.get(src) != result.label
        fps_cap = self.target.stream_fps
        stream = fps_cap == math.inf or (fps_cap > 0 and time.monotonic() - self._last_frames.get(src, -1e9)
                                         >= 1.0 / fps_cap)
        if not (changed or stream):
            return
        t_frame = result.t_wall - result.latency_ms / 1000.0
        event = {
            "label": result.label,
            "probability": round(result.probability, 5),
            "time": _dt.datetime.fromtimestamp(t_frame, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "frame": result.index,
            "source": src,
            **{k: self.info[k] for k in ("model", "bundle", "backend", "precision") if k in self.info},
        }
        payload = json.dumps(event)
        if changed:
            self._last_label[src] = result.label
            self._enqueue(_Message(self.topic(src, "state"), payload, self.target.qos, True, "state", src))
        if stream:
            self._last_frames[src] = time.monotonic()
            self._enqueue(_Message(self.topic(src, "frames"), payload, 0, False, "frames", src))

    # ------------------------------------------------------------------ the sending thread
    def _publish(self, msg: _Message) -> bool:
        """Send one message and wait for the broker to take it; False when the connection went."""
        try:
            info = self._client.publish(msg.topic, msg.payload, qos=msg.qos, retain=msg.retain)
            if info.rc != 0:
                return False
            info.wait_for_publish(ACK_WAIT)
            return info.is_published()
        except (RuntimeError, ValueError, OSError):
            return False

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closing or (self.connected and (self._resync or self._q)))
                if self._closing and (not self.connected or not (self._q or self._resync)):
                    return
                resync, self._resync = self._resync, False
                head = self._q[0] if self._q and not resync else None
            if resync:
                # a (re)connection: who we are, then the last acknowledged state of every source
                # (older than anything still queued), so the newest state is the last one sent
                again = [_Message(self.topic("status"), "online", 1, True, "status"), *self.discovery_messages(),
                         *(self._acked_state[k] for k in sorted(self._acked_state))]
                if not all(self._publish(m) for m in again):
                    with self._cond:
                        self._resync = True
                        self._cond.wait_for(lambda: not self.connected or self._closing, 1.0)
                continue
            if head is None:
                continue
            if self._publish(head):
                with self._cond:
                    if self._q and self._q[0] is head:
                        self._q.popleft()
                    self.published += 1
                    if head.kind == "state":
                        self._acked_state[head.source] = head
                    self._cond.notify_all()
            else:
                with self._cond:  # wait for paho to reconnect; the message stays first in line
                    self._cond.wait_for(lambda: not self.connected or self._closing, 1.0)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued message reached the broker (tests, and close())."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._q and not self._resync and self.connected, timeout)

    def stats(self, stats: dict[str, Any]) -> None:
        pass

    def _shutdown(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(ACK_WAIT + 1)
        if self._client is not None:
            self._client.loop_stop()
            self._client = None

    def close(self) -> None:
        if self._client is None:
            return
        if not self.wait_idle(CLOSE_WAIT) and self._q:
            log.warning("mqtt: %d message(s) not delivered to %s before stopping", len(self._q), self.uri)
            self.dropped += len(self._q)
        if self.connected:  # a clean goodbye: the will is only for a device that dies
            info = self._client.publish(self.topic("status"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(CLOSE_WAIT)
            except (RuntimeError, ValueError):
                pass
            self._closing = True
            self._client.disconnect()
        self._shutdown()
