"""The systemd unit for `edgecat stream`: systemd accepts it and its arguments parse."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "systemd"
UNIT = DEPLOY / "edgecat-stream.service"
ENV = DEPLOY / "edgecat-stream.env.example"


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart's program exists: point it at this environment's edgecat
    edgecat = Path(sys.executable).with_name("edgecat")
    if not edgecat.exists():
        pytest.skip("edgecat console script not installed next to this python")
    text = UNIT.read_text().replace("/opt/edgecat/venv/bin/edgecat", str(edgecat))
    text = text.replace("EnvironmentFile=/etc/edgecat/stream.env", f"EnvironmentFile={ENV}")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "edgecat-stream.service" not in res.stderr  # no warnings about our unit either


def test_unit_restarts_on_failure_and_stops_with_sigterm():
    text = UNIT.read_text()
    assert "Restart=on-failure" in text and "KillSignal=SIGTERM" in text
    assert "ExecStart=/opt/edgecat/venv/bin/edgecat --quiet stream ${EDGECAT_BUNDLE}" in text


def test_env_example_arguments_parse_as_stream_options():
    from edgecat.cli.stream import stream

    env = read_env(ENV)
    assert {"EDGECAT_BUNDLE", "EDGECAT_SOURCE", "EDGECAT_STREAM_ARGS"} <= set(env)
    args = [env["EDGECAT_BUNDLE"], "--source", env["EDGECAT_SOURCE"], *shlex.split(env["EDGECAT_STREAM_ARGS"])]
    ctx = stream.make_context("stream", args)
    assert ctx.params["sources"] == (env["EDGECAT_SOURCE"],)
    assert "http://0.0.0.0:8080" in ctx.params["sinks"] and ctx.params["smooth"] == 5


def test_secrets_live_in_a_root_only_env_file(monkeypatch):
    """The camera password and the live view's token come from the env file, never the command line;
    the guide and the unit install that file with mode 0600, and the network live view refuses to
    start without a token when there is no terminal to show one on (as under systemd)."""
    import edgecat.stream.http_sink as http_sink
    from edgecat.errors import EdgecatError
    from edgecat.stream.sink_registry import parse_sink

    env = read_env(ENV)
    assert {"EDGECAT_RTSP_USER", "EDGECAT_RTSP_PASSWORD"} <= set(env)
    assert "@" not in env["EDGECAT_SOURCE"] and not env["EDGECAT_RTSP_PASSWORD"]
    assert "EDGECAT_HTTP_TOKEN" not in env  # made per device by the guide, never shipped
    guide = (DEPLOY.parent / "README.md").read_text()
    for text in (guide, UNIT.read_text()):
        assert "install -D -m 600 -o root -g root deploy/systemd/edgecat-stream.env.example /etc/edgecat/stream.env" in text
    assert "secrets.token_urlsafe" in guide and "EnvironmentFile=/etc/edgecat/stream.env" in UNIT.read_text()
    sinks = [a for a in shlex.split(env["EDGECAT_STREAM_ARGS"]) if a.startswith("http://")]
    monkeypatch.delenv("EDGECAT_HTTP_TOKEN", raising=False)
    monkeypatch.setattr(http_sink, "show_on_terminal", lambda text: False)
    with pytest.raises(EdgecatError, match="EDGECAT_HTTP_TOKEN"):
        parse_sink(sinks[0].replace(":8080", ":0")).open()


def test_fleet_unit_checks_signatures_reloads_with_sighup_and_publishes_over_mqtt():
    from edgecat.cli.stream import stream
    from edgecat.stream.sink_registry import parse_sink

    env = read_env(ENV)
    assert env["EDGECAT_TRUSTED_KEYS"] == "/etc/edgecat/trusted.pub"
    assert "EDGECAT_MQTT_PASSWORD" in env and not env["EDGECAT_MQTT_PASSWORD"]
    assert "ExecReload=/bin/kill -HUP $MAINPID" in UNIT.read_text()
    args = [env["EDGECAT_BUNDLE"], "--source", env["EDGECAT_SOURCE"], *shlex.split(env["EDGECAT_STREAM_ARGS"])]
    ctx = stream.make_context("stream", args)
    assert ctx.params["watch"]
    mqtt = [s for s in ctx.params["sinks"] if s.startswith("mqtt://")]
    assert len(mqtt) == 1 and "@" in mqtt[0] and ":" not in mqtt[0].split("@")[0][len("mqtt://"):]  # no password
    assert parse_sink(mqtt[0]).target.prefix == "edgecat/door"
