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
    assert "http://:8080" in ctx.params["sinks"] and ctx.params["smooth"] == 5
