"""The bundle: manifest round trip, artifact hashes, and clear errors for broken bundles."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from click.testing import CliRunner

from edgecat.bundle import MANIFEST, Bundle
from edgecat.cli import main
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
    assert fresh.verify()["model"] == "mismatch" and "sha256 differs" in fresh.problems["model"]
    (b.path / "model.bin").unlink()
    with pytest.raises(EdgecatError, match="file is missing"):
        Bundle.open(b.path).artifact_path("model")
    assert Bundle.open(b.path).verify() == {"model": "missing"}  # gone is not the same as changed
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


# ------------------------------------------------------------------ untrusted bundles
def _edit_manifest(path: Path, edit) -> None:
    m = json.loads((path / MANIFEST).read_text())
    edit(m)
    (path / MANIFEST).write_text(json.dumps(m))


def _snapshot(*roots: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime) for r in roots for p in r.rglob("*")}


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(classes="cat"), "classes"),
    (lambda m: m.update(threshold="0.5"), "threshold"),
    (lambda m: m.update(format_version="1"), "format_version"),
    (lambda m: m["input"].update(shape=[64, 64]), "input.shape"),
    (lambda m: m.pop("artifacts"), "artifacts"),
    (lambda m: m["artifacts"]["model"].update(sha256="abc"), "artifacts.model.sha256"),
    (lambda m: m["artifacts"]["model"].pop("file"), "artifacts.model.file"),
])
def test_bad_manifest_is_one_line_naming_the_field(tmp_path: Path, edit, field: str) -> None:
    b = _bundle(tmp_path)
    _edit_manifest(b.path, edit)
    with pytest.raises(EdgecatError) as err:
        Bundle.open(b.path)
    msg = str(err.value)
    assert "\n" not in msg and f"field '{field}'" in msg, msg


@pytest.mark.parametrize("name, why", [
    ("../outside.bin", "leaves the bundle"),
    ("sub/../../outside.bin", "leaves the bundle"),
    ("ABSOLUTE", "absolute path"),
    ("..\\outside.bin", "backslash"),
    ("link.bin", "points outside"),
])
def test_crafted_bundle_refused_by_info_predict_export(tmp_path: Path, name: str, why: str) -> None:
    """A manifest entry that leads out of the folder: every command stops on open, and nothing inside
    or outside the bundle was read (the outside file is unreadable) or written."""
    b = _bundle(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"weights" * 100)  # same content: a hash check alone would accept it
    if name == "ABSOLUTE":
        name = str(outside)
    if name == "link.bin":
        (b.path / "link.bin").symlink_to(outside)
    _edit_manifest(b.path, lambda m: m["artifacts"]["model"].update(file=name))
    outside.chmod(0)  # reading it would fail with a different error than the refusal checked below
    image = tmp_path / "img.png"
    image.write_bytes(b"")
    before = _snapshot(tmp_path)
    try:
        with pytest.raises(EdgecatError, match=why):
            Bundle.open(b.path)
        for args in (["info", str(b.path)], ["predict", str(b.path), str(image)],
                     ["export", str(b.path), "--fp16"]):
            result = CliRunner().invoke(main, args)
            lines = [ln for ln in result.output.splitlines() if ln.strip()]
            assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
            assert lines[0].startswith("error:") and why in lines[0], (args, lines)
    finally:
        outside.chmod(0o600)
    assert _snapshot(tmp_path) == before


def test_artifact_outside_cannot_be_added(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    (tmp_path / "elsewhere.bin").write_bytes(b"x")
    with pytest.raises(EdgecatError, match="inside the bundle"):
        b.add_artifact("x", tmp_path / "elsewhere.bin")


def test_manifest_never_stores_a_uri_password(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    b.manifest["config"]["source"] = "rtsp://admin:s3cret@cam.local/live"
    b.save()
    text = (b.path / MANIFEST).read_text()
    assert "s3cret" not in text and "rtsp://admin:***@cam.local/live" in text


def test_missing_artifact_is_reported_and_named_with_its_fix(tmp_path: Path) -> None:
    b = _bundle(tmp_path)
    (b.path / "model.fp16.onnx").write_bytes(b"half")
    b.add_artifact("onnx-fp16", "model.fp16.onnx", precision="fp16")
    (b.path / "model.fp16.onnx").unlink()  # deleted to save space
    again = Bundle.open(b.path)
    assert not again.has("onnx-fp16") and again.lists("onnx-fp16") and again.missing() == ["onnx-fp16"]
    assert again.verify() == {"model": "ok", "onnx-fp16": "missing"}
    with pytest.raises(EdgecatError, match=r"re-make it: edgecat export .* --fp16"):
        again.artifact_path("onnx-fp16")
    result = CliRunner().invoke(main, ["info", str(b.path)])
    assert result.exit_code == 0, result.output
    assert "missing" in result.stdout and "mismatch" not in result.stdout
    assert "--fp16" in result.stderr


def test_export_int8_ignores_a_missing_fp16(tiny_bundle: Path, synth_data: Path) -> None:
    """`export --int8` on a bundle whose listed model.fp16.onnx is gone: calibration runs and the
    precision table leaves FP16 out."""
    import shutil

    b = Bundle.open(tiny_bundle)
    shutil.copy(tiny_bundle / "model.onnx", tiny_bundle / "model.fp16.onnx")
    b.add_artifact("onnx-fp16", "model.fp16.onnx", precision="fp16", format="onnx")
    (tiny_bundle / "model.fp16.onnx").unlink()
    result = CliRunner().invoke(main, ["export", str(tiny_bundle), "--int8", "--calib", str(synth_data / "train"),
                                       "--calib-size", "16"])
    assert result.exit_code == 0, result.output
    after = Bundle.open(tiny_bundle)
    assert after.verify() == {"keras": "ok", "onnx-fp32": "ok", "onnx-fp16": "missing", "onnx-int8": "ok",
                              "onnx-int8-trt": "ok"}
    rows = [r["precision"] for r in after.manifest["metrics"]["precision_table"]["rows"]]
    assert [r for r in rows if "(" not in r] == ["fp32", "int8", "int8-trt"]  # the missing FP16 left out, no error
    predict = CliRunner().invoke(main, ["predict", str(tiny_bundle), str(synth_data / "validation"),
                                        "--precision", "fp16", "--backend", "onnxruntime"])
    assert predict.exit_code == 2 and f"edgecat export {tiny_bundle} --fp16" in predict.output


# ------------------------------------------------------------------ concurrent writers
_WRITER = r"""
import sys, time
from pathlib import Path
from edgecat.bundle import Bundle

root, me, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
b = Bundle.open(root)  # opened once: every save must merge what the other process wrote since
while not (root / "go").exists():
    time.sleep(0.001)
for n in range(rounds):
    name = f"{me}-{n}.bin"
    (root / name).write_bytes(f"{me} {n}".encode())
    b.add_artifact(f"{me}-{n}", name, precision="fp32")
    if n % 5 == 4:
        b.remove_artifact(f"{me}-{n - 2}")  # a removal is a change too: it must not come back
    b.manifest.setdefault("metrics", {})[f"{me}/{n}"] = {"accuracy": n / rounds}
    b.manifest.setdefault("autoselect", {})[f"machine-{me}"] = {"round": n}
    b.manifest[f"top_{me}"] = n
    b.save()
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Two processes writing one bundle at once (two `edgecat export` runs): every artifact, metric,
    auto choice and top-level key each of them added is in the manifest afterwards, and what one
    removed stays removed."""
    import subprocess
    import sys
    import time

    b = _bundle(tmp_path)
    b.manifest["metrics"]["validation"] = {"accuracy": 0.9}
    b.save()
    rounds = 40
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(b.path), me, str(rounds)],
                              stderr=subprocess.PIPE, text=True) for me in ("a", "b")]
    time.sleep(2.0)  # both have opened the bundle
    (b.path / "go").touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    final = Bundle.open(b.path)
    removed = {f"{me}-{n - 2}" for me in "ab" for n in range(rounds) if n % 5 == 4}
    want = {"model"} | {f"{me}-{n}" for me in "ab" for n in range(rounds)} - removed
    assert set(final.artifacts) == want
    assert all(v == "ok" for v in final.verify().values())
    assert set(final.manifest["metrics"]) == {"validation"} | {f"{me}/{n}" for me in "ab" for n in range(rounds)}
    assert final.manifest["autoselect"] == {"machine-a": {"round": rounds - 1}, "machine-b": {"round": rounds - 1}}
    assert final.manifest["top_a"] == final.manifest["top_b"] == rounds - 1
    assert final.manifest["config"] == {"seed": 1} and final.threshold == 0.6  # untouched keys kept


def test_merge_takes_this_process_changes_and_keeps_the_rest() -> None:
    from edgecat.bundle import merge_manifests

    base = {"a": 1, "b": 2, "arts": {"x": {"v": 1}, "y": {"v": 1}}, "gone": 1}
    ours = {"a": 10, "b": 2, "arts": {"x": {"v": 2}, "z": {"v": 1}}, "new": 1}  # changed x, removed y, added z
    theirs = {"a": 1, "b": 20, "arts": {"x": {"v": 1}, "y": {"v": 1}, "w": {"v": 1}}, "gone": 1, "more": 1}
    assert merge_manifests(base, ours, theirs) == {
        "a": 10, "b": 20, "arts": {"x": {"v": 2}, "w": {"v": 1}, "z": {"v": 1}}, "more": 1, "new": 1}


def test_save_keeps_references_and_sees_other_writers(tmp_path: Path) -> None:
    """After save() this object's manifest holds what another writer added (so a later step of the
    same export sees it), in the same dict objects callers already hold."""
    b = _bundle(tmp_path)
    other = Bundle.open(b.path)
    (b.path / "other.bin").write_bytes(b"o")
    other.add_artifact("other", "other.bin")
    arts = b.artifacts
    b.manifest["metrics"]["x"] = {"n": 1}
    b.save()
    assert b.artifacts is arts and set(arts) == {"model", "other"} and b.has("other")
    assert Bundle.open(b.path).manifest["metrics"] == {"x": {"n": 1}}


# ------------------------------------------------------------------ stale derived files
def test_files_made_from_an_older_source_are_stale(tmp_path: Path) -> None:
    """`export --onnx` re-made model.onnx: the FP16 file made from the old one is intact but stale;
    verify() and `edgecat info` say so with the command that re-makes it (a warning, not an error)."""
    b = _bundle(tmp_path)
    (b.path / "model.onnx").write_bytes(b"onnx v1")
    fp32 = b.add_artifact("onnx-fp32", "model.onnx", precision="fp32", made_by={"from": "keras"})
    (b.path / "model.fp16.onnx").write_bytes(b"half of v1")
    b.add_artifact("onnx-fp16", "model.fp16.onnx", precision="fp16",
                   made_by={"from": "onnx-fp32", "from_sha256": fp32["sha256"]})
    assert Bundle.open(b.path).verify() == {"model": "ok", "onnx-fp32": "ok", "onnx-fp16": "ok"}
    (b.path / "model.onnx").write_bytes(b"onnx v2, repaired")
    b.add_artifact("onnx-fp32", "model.onnx", precision="fp32", made_by={"from": "keras"})
    again = Bundle.open(b.path)
    assert again.verify() == {"model": "ok", "onnx-fp32": "ok", "onnx-fp16": "stale"}
    assert again.problems["onnx-fp16"] == (f"model.fp16.onnx was made from an older model.onnx (re-exported "
                                           f"since): re-make it: edgecat export {b.path} --fp16")
    res = CliRunner().invoke(main, ["info", str(b.path)])
    assert res.exit_code == 0, res.output
    assert "stale" in res.stdout and "warning: model.fp16.onnx was made from an older model.onnx" in res.stderr


def test_save_without_file_locking_still_merges(tmp_path: Path) -> None:
    """Where neither fcntl nor msvcrt exists, saves run unlocked but still merge what is on disk."""
    import subprocess
    import sys

    b = _bundle(tmp_path)
    code = ("import sys; sys.modules['fcntl'] = None; sys.modules['msvcrt'] = None\n"
            "from pathlib import Path\nfrom edgecat.bundle import Bundle\n"
            "a, b = Bundle.open(sys.argv[1]), Bundle.open(sys.argv[1])\n"
            "a.manifest['from_a'] = 1; a.save()\n"
            "b.manifest['from_b'] = 2; b.save()\n")
    res = subprocess.run([sys.executable, "-c", code, str(b.path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    m = Bundle.open(b.path).manifest
    assert m["from_a"] == 1 and m["from_b"] == 2
