"""The mqtt:// sink against a real Mosquitto broker, started here on a free port.

Mosquitto comes from Debian's packages (`.ci/run` installs it); where it cannot be had the broker
tests skip with the reason. Messages are read back with paho-mqtt and with ``mosquitto_sub``.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgecat.errors import EdgecatError
from edgecat.stream import StreamConfig, Streamer
from edgecat.stream.sink_registry import parse_sink
from edgecat.synthetic import make_video

from test_stream import ColourRuntime

USER, PASSWORD = "device7", "pw-Zq81-never-shown"
LABELS = ([0] * 10 + [1] * 10) * 3  # 60 frames, a label change every 10
WAIT = 30.0


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A Mosquitto process with a password file; :meth:`restart` keeps the port."""

    def __init__(self, folder: Path, persistence: bool, tls: tuple[Path, Path, Path] | None = None) -> None:
        self.folder, self.port = folder, _free_port()
        self.proc: subprocess.Popen | None = None
        pwfile = folder / "passwd"
        subprocess.run([_binary("mosquitto_passwd"), "-b", "-c", str(pwfile), USER, PASSWORD], check=True,
                       capture_output=True)
        os.chmod(pwfile, 0o600)
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous false\npassword_file {pwfile}\n"
            f"persistence {'true' if persistence else 'false'}\npersistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\nuser {getpass.getuser()}\n"
            + (f"cafile {tls[0]}\ncertfile {tls[1]}\nkeyfile {tls[2]}\n" if tls else ""))

    def start(self) -> None:
        self.proc = subprocess.Popen([_binary("mosquitto"), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + WAIT
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.proc.poll() is None, (self.folder / "mosquitto.log").read_text(errors="replace")
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a persistent broker saves its sessions
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _broker(tmp_path: Path, persistence: bool, tls: tuple[Path, Path, Path] | None = None):
    if _binary("mosquitto") is None or _binary("mosquitto_passwd") is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto mosquitto-clients)")
    broker = Broker(tmp_path, persistence, tls)
    broker.start()
    return broker


@pytest.fixture
def broker(tmp_path):
    b = _broker(tmp_path, persistence=False)
    yield b
    b.stop()


@pytest.fixture
def persistent_broker(tmp_path):
    b = _broker(tmp_path, persistence=True)
    yield b
    b.stop()


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files: ca, cert, key)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


class Subscriber:
    """Collects every message under a prefix (QoS 1; a persistent session survives a broker restart)."""

    def __init__(self, port: int, topic: str, client_id: str = "test-sub", clean: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, str, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.cond:
            self.messages.append((msg.topic, msg.payload.decode(), bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, predicate, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self.messages), timeout)

    def payloads(self, topic: str) -> list[str]:
        with self.cond:
            return [p for t, p, _ in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("mqtt-video") / "clip.mp4", LABELS, size=(96, 72), fps=30)


def _uri(broker: Broker, prefix: str = "edgecat/door", query: str = "") -> str:
    return f"mqtt://{USER}@127.0.0.1:{broker.port}/{prefix}{query}"


# ------------------------------------------------------------------------------ parsing, no broker
@pytest.mark.parametrize("uri, message", [
    ("mqtt://broker", "needs a topic prefix"),
    ("mqtt://broker/a/#", "without wildcards"),
    ("mqtt://broker:x/a", "port must be a number"),
    ("mqtt://broker/a?colour=1", "unknown option 'colour'"),
    ("mqtt://broker/a?protocol=4", "protocol must be 311"),
    ("mqtt://broker/a?ca=/etc/ca.pem", "ca= is for mqtts://"),
    ("mqtts://broker/a?ca=/nonexistent/ca.pem", "CA file /nonexistent/ca.pem not found"),
])
def test_bad_mqtt_uri_is_one_line(uri, message):
    with pytest.raises(EdgecatError, match=message):
        parse_sink(uri)


def test_password_comes_from_netrc_or_env_and_is_never_in_the_uri(tmp_path, monkeypatch):
    from edgecat.redact import redact

    netrc = tmp_path / "creds"
    netrc.write_text(f"machine broker.lan login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    sink = parse_sink("mqtt://broker.lan/edgecat/x", _options(credentials=str(netrc)))
    assert (sink._user, sink._password) == (USER, PASSWORD)
    assert PASSWORD not in sink.uri and PASSWORD not in redact(f"connecting with {PASSWORD}")
    monkeypatch.setenv("EDGECAT_MQTT_USER", "envuser")
    monkeypatch.setenv("EDGECAT_MQTT_PASSWORD", "env-secret-42")
    sink = parse_sink("mqtts://broker.lan/edgecat/x")
    assert (sink._user, sink._password, sink.target.port) == ("envuser", "env-secret-42", 8883)
    netrc.chmod(0o644)
    with pytest.raises(EdgecatError, match="readable by other users"):
        parse_sink("mqtt://broker.lan/edgecat/x", _options(credentials=str(netrc)))


def _options(**kw):
    from edgecat.stream.base import SinkOptions

    return SinkOptions(**kw)


# ------------------------------------------------------------------------------ against mosquitto
def _run_in_thread(streamer: Streamer) -> tuple[threading.Thread, list]:
    result: list = []
    t = threading.Thread(target=lambda: result.append(streamer.run()), daemon=True)
    t.start()
    return t, result


def test_state_discovery_and_availability(colour_bundle, video, broker, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECAT_MQTT_PASSWORD", PASSWORD)
    sub = Subscriber(broker.port, "#")
    try:
        changes = tmp_path / "changes.jsonl"
        cfg = StreamConfig(sources=[str(video)], sinks=[_uri(broker, query="?stream=all"), f"jsonl://{changes}"],
                           jsonl_changes=True)
        summary = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle)).run()
        assert summary.frames == len(LABELS)
        expected = [json.loads(line) for line in changes.read_text().splitlines()]
        assert len(expected) == 6
        assert sub.wait_for(lambda m: len([1 for t, _, _ in m if t == "edgecat/door/0/state"]) >= 6)
        states = [json.loads(p) for p in sub.payloads("edgecat/door/0/state")]
        assert [(s["frame"], s["label"]) for s in states] == [(e["frame"], e["label"]) for e in expected]
        assert all(s["model"] == "colour" and len(s["bundle"]) == 64 and s["backend"] == "colour" and
                   s["time"].endswith("+00:00") and 0.5 <= s["probability"] <= 1 for s in states)
        assert sub.wait_for(lambda m: len([1 for t, _, _ in m if t == "edgecat/door/0/frames"]) >= len(LABELS))
        assert len(sub.payloads("edgecat/door/0/frames")) == len(LABELS)  # ?stream=all: every frame, once
        config = json.loads(sub.payloads("homeassistant/sensor/edgecat_door/source0/config")[-1])
        assert config["state_topic"] == "edgecat/door/0/state"
        assert config["availability_topic"] == "edgecat/door/status"
        # clean stop: offline, acknowledged by the broker before run() returns; the subscriber gets it just after
        assert sub.wait_for(lambda m: [p for t, p, _ in m if t == "edgecat/door/status"][-1:] == ["offline"])
        assert sub.payloads("edgecat/door/status")[-2:] == ["online", "offline"]
    finally:
        sub.close()
    # a newcomer gets the retained state, discovery and status, as Home Assistant does on start
    late = Subscriber(broker.port, "#", client_id="late")
    try:
        assert late.wait_for(lambda m: len(m) >= 3, 10)
        retained = {t: p for t, p, r in late.messages if r}
        assert json.loads(retained["edgecat/door/0/state"])["frame"] == expected[-1]["frame"]
        assert retained["edgecat/door/status"] == "offline"
        assert "homeassistant/sensor/edgecat_door/source0/config" in retained
    finally:
        late.close()


def test_wrong_password_is_one_line_and_never_printed(colour_bundle, video, broker, monkeypatch):
    monkeypatch.setenv("EDGECAT_MQTT_PASSWORD", "wrong-pw-1234")
    cfg = StreamConfig(sources=[str(video)], sinks=[_uri(broker)])
    with pytest.raises(EdgecatError, match="refused the connection") as err:
        Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle)).run()
    assert "wrong-pw-1234" not in str(err.value)


@pytest.mark.parametrize("protocol", ["311", "5"])
def test_broker_restarted_mid_stream_loses_no_state_message(colour_bundle, video, persistent_broker, tmp_path,
                                                            monkeypatch, protocol):
    """The stream keeps running while the broker is away; every label change reaches the subscriber."""
    monkeypatch.setenv("EDGECAT_MQTT_PASSWORD", PASSWORD)
    broker = persistent_broker
    sub = Subscriber(broker.port, "edgecat/door/0/state", client_id="persistent-sub", clean=False)
    changes = tmp_path / "changes.jsonl"
    cfg = StreamConfig(sources=[str(video)], sinks=[_uri(broker, query=f"?protocol={protocol}"),
                                                   f"jsonl://{changes}"],
                       jsonl_changes=True, loop=True, max_fps=100, metrics="127.0.0.1:0")
    streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
    mqtt_sink = streamer.sinks[0]
    thread, _ = _run_in_thread(streamer)
    try:
        assert sub.wait_for(lambda m: len(m) >= 3)
        broker.stop()
        deadline = time.monotonic() + WAIT
        while mqtt_sink.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not mqtt_sink.connected
        time.sleep(1.0)  # label changes happen while the broker is away: they wait in the queue
        queued_while_away = len(mqtt_sink._q)
        broker.start()
        deadline = time.monotonic() + WAIT
        while mqtt_sink.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mqtt_sink.reconnects >= 1
        time.sleep(1.0)  # more label changes after the broker is back
        text = streamer.metrics.text()[0].decode()
        sink_name = f'sink="mqtt://{USER}@127.0.0.1:{broker.port}/edgecat/door"'
        assert f"edgecat_sink_reconnects_total{{{sink_name}}} {float(mqtt_sink.reconnects)}" in text
    finally:
        streamer.stop()
        thread.join(WAIT)
    try:
        expected = [json.loads(line)["frame"] for line in changes.read_text().splitlines()]
        assert queued_while_away > 0 and len(expected) > 6
        got = lambda: [json.loads(p)["frame"] for p in sub.payloads("edgecat/door/0/state")]  # noqa: E731
        sub.wait_for(lambda m: set(expected) <= set(got()), 10)
        assert mqtt_sink.dropped == 0
        assert set(expected) <= set(got()), sorted(set(expected) - set(got()))
    finally:
        sub.close()


def test_retained_state_is_restored_on_a_broker_that_lost_it(colour_bundle, video, broker, monkeypatch):
    """A broker restarted without persistence forgets retained messages: the sink publishes its status,
    discovery and last state again on reconnecting."""
    monkeypatch.setenv("EDGECAT_MQTT_PASSWORD", PASSWORD)
    cfg = StreamConfig(sources=[str(video)], sinks=[_uri(broker)], loop=True, max_fps=30)
    streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
    sink = streamer.sinks[0]
    thread, _ = _run_in_thread(streamer)
    try:
        assert _wait(lambda: sink.published >= 3)
        broker.restart()
        assert _wait(lambda: sink.reconnects >= 1 and sink.wait_idle(0.1))
        late = Subscriber(broker.port, "#", client_id="late")
        try:
            assert late.wait_for(lambda m: {"edgecat/door/status", "edgecat/door/0/state",
                                            "homeassistant/sensor/edgecat_door/source0/config"}
                                 <= {t for t, _, r in m if r}, 10)
            assert dict((t, p) for t, p, r in late.messages if r)["edgecat/door/status"] == "online"
        finally:
            late.close()
    finally:
        streamer.stop()
        thread.join(WAIT)


def _wait(cond, timeout: float = WAIT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


KILLED_STREAM = """
import sys
sys.path.insert(0, {tests!r})
from test_stream import ColourRuntime
from edgecat.bundle import Bundle
from edgecat.log import setup_logging
from edgecat.stream import StreamConfig, run_stream
setup_logging(verbosity=2)
b = Bundle.open({bundle!r})
run_stream(b, StreamConfig(sources=[{video!r}], sinks=[{uri!r}], loop=True, max_fps=30), runtime=ColourRuntime(b))
"""


def test_killed_device_shows_offline_by_last_will_and_password_never_printed(colour_bundle, video, broker):
    """mosquitto_sub, as a person would check it: online while running, offline once killed (-9)."""
    if _binary("mosquitto_sub") is None:
        pytest.skip("mosquitto_sub is not installed (Debian: apt-get install mosquitto-clients)")
    script = KILLED_STREAM.format(tests=str(Path(__file__).parent), bundle=str(colour_bundle.path), video=str(video),
                                  uri=_uri(broker, prefix="edgecat/gate"))
    env = {**os.environ, "EDGECAT_MQTT_PASSWORD": PASSWORD}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL)
    sub = subprocess.Popen([_binary("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(broker.port), "-u", USER,
                            "-P", PASSWORD, "-t", "edgecat/gate/#", "-v"], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(sub.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        assert _wait(lambda: "edgecat/gate/status online\n" in lines and any("/0/state" in x for x in lines)), \
            lines
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=WAIT)[0]
        assert _wait(lambda: "edgecat/gate/status offline\n" in lines), lines
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.terminate()
        sub.wait(10)
    assert "mqtt: publishing to mqtt://device7@127.0.0.1" in output
    assert PASSWORD not in output


def test_mqtts_with_a_ca_file(colour_bundle, video, tmp_path, monkeypatch, caplog):
    """TLS: the broker's certificate is checked against the CA file; without it the connection fails."""
    ca, cert, key = _certificates(tmp_path)
    broker = _broker(tmp_path, persistence=False, tls=(ca, cert, key))
    try:
        monkeypatch.setenv("EDGECAT_MQTT_PASSWORD", PASSWORD)
        uri = f"mqtts://{USER}@127.0.0.1:{broker.port}/edgecat/tls?ca={ca}&protocol=5"
        cfg = StreamConfig(sources=[str(video)], sinks=[uri])
        streamer = Streamer(colour_bundle, cfg, runtime=ColourRuntime(colour_bundle))
        summary = streamer.run()
        assert summary.frames == len(LABELS) and streamer.sinks[0].published == 6  # the label changes
        (tmp_path / "other").mkdir()
        other_ca = _certificates(tmp_path / "other")[0]
        bad = StreamConfig(sources=[str(video)], sinks=[uri.replace(str(ca), str(other_ca))])
        streamer = Streamer(colour_bundle, bad, runtime=ColourRuntime(colour_bundle))
        streamer.run()  # a broker whose certificate does not verify: never connected, nothing delivered
        assert streamer.sinks[0].published == 0 and not streamer.sinks[0].connected
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    finally:
        broker.stop()
