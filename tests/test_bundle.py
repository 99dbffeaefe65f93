"""The bundle: manifest round trip, artifact hashes, and clear errors for broken bundles."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgecat.bundle import MANIFEST, Bundle
from edgecat.errors import EdgecatError
from edgecat.fsutil import atomic_path, write_json


def _bundle(tmp_path: Path) -> Bundle:
    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(64, 64),
                      classes=["cat", "dog"], preprocessing="tf", threshold=0.6, config={"seed": 1})
    (b.path / "model.bin").write_bytes(b"weights" * 100)
    b.add_artifact("model", "model.bin", precision="fp32")
    return b


def test_round_trip(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    again = Bundle.open(b.path)
    assert again.manifest == json.loads((b.path / MANIFEST).read_text())
    assert again.classes == ["cat", "dog"] and again.binary and again.threshold == 0.6
    assert again.input_size == (64, 64)
    assert again.manifest["input"]["layout"] == "NHWC" and again.manifest["input"]["range"] == [0.0, 255.0]
    assert again.artifact_path("model") == b.path / "model.bin"
    assert again.artifacts["model"]["bytes"] == 700
    assert again.verify() == {"model": "ok"}
    assert Bundle.open(b.path / MANIFEST).path == b.path  # the manifest path works too


def test_changed_artifact_is_refused(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    (b.path / "model.bin").write_bytes(b"weights" * 50)  # truncated
    fresh = Bundle.open(b.path)
    with pytest.raises(EdgecatError, match="does not match the bundle manifest"):
        fresh.artifact_path("model")
    assert "sha256 differs" in fresh.verify()["model"]
    (b.path / "model.bin").unlink()
    with pytest.raises(EdgecatError, match="file is missing"):
        Bundle.open(b.path).artifact_path("model")
    with pytest.raises(EdgecatError, match="no 'onnx-fp32' artifact"):
        Bundle.open(b.path).artifact_path("onnx-fp32")


@pytest.mark.parametrize("content, message", [
    (None, "no edgecat.json"),
    ("{not json", "corrupt bundle manifest"),
    ('{"format": "other"}', "not an edgecat manifest"),
])
def test_bad_bundles(tmp_path: Path, content: str | None, message: str) -> None:
    d = tmp_path / "x"
    d.mkdir()
    if content is not None:
        (d / MANIFEST).write_text(content)
    with pytest.raises(EdgecatError, match=message):
        Bundle.open(d)


def test_missing_and_newer_bundle(tmp_path: Path) -> None:
    with pytest.raises(EdgecatError, match="bundle not found"):
        Bundle.open(tmp_path / "nope")
    b = _bundle(tmp_path)
    b.manifest["format_version"] = 99
    b.save()
    with pytest.raises(EdgecatError, match="upgrade edgecat"):
        Bundle.open(b.path)


def test_class_probs_and_threshold(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    probs = b.class_probs(np.array([[0.1], [0.55], [0.9]]))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert b.labels_from_probs(probs) == ["cat", "cat", "dog"]  # threshold 0.6


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "a.json"
    write_json(dest, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            Path(tmp).write_text("partial")
            raise RuntimeError("crash mid-write")
    assert json.loads(dest.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_atomic_write_honours_umask(tmp_path: Path) -> None:
    # mkstemp creates 0600 files; a bundle copied into a container or read by a service must stay readable.
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644


def test_bundle_opened_by_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `edgecat export runs/x --fp16` passes bundle.path / "model.fp16.onnx", relative to the cwd.
    _bundle(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)
    b = Bundle.open("runs/b")
    (b.path / "extra.bin").write_bytes(b"x")
    b.add_artifact("extra", b.path / "extra.bin")
    b.add_artifact("same", "extra.bin")
    assert b.artifacts["extra"]["file"] == b.artifacts["same"]["file"] == "extra.bin"
    assert Bundle.open(tmp_path / "runs" / "b").verify() == {"model": "ok", "extra": "ok", "same": "ok"}
