"""The command line: one-line errors with non-zero exits, and the edge side without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from conftest import needs_tf
from edgecat.cli import main


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def _one_line_error(code: int, out: str, needle: str) -> None:
    assert code != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], out
    assert "Traceback" not in out


def test_help_lists_every_command() -> None:
    code, out = _run("--help")
    assert code == 0
    for cmd in ["train", "export", "bench", "stream", "predict", "evaluate", "info"]:
        assert cmd in out


@needs_tf
def test_train_missing_and_empty_folders(tmp_path: Path) -> None:
    _one_line_error(*_run("train", "--data", str(tmp_path / "nope"), "--weights", "none"), "not found")
    (tmp_path / "empty").mkdir()
    _one_line_error(*_run("train", "--data", str(tmp_path / "empty"), "--weights", "none"), str(tmp_path / "empty"))


@needs_tf
def test_train_unknown_backbone(synth_data: Path, tmp_path: Path) -> None:
    code, out = _run("train", "--data", str(synth_data), "--backbone", "vgg99", "--weights", "none",
                     "--out", str(tmp_path / "b"))
    _one_line_error(code, out, "unknown backbone 'vgg99'")


@needs_tf
def test_train_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("stage1_epochs: [1, 2\n")
    code, out = _run("train", "--config", str(cfg), "--data", "x")
    _one_line_error(code, out, "c.yaml")


def test_info_predict_evaluate_on_missing_bundle(tmp_path: Path) -> None:
    for args in (["info"], ["predict"], ["evaluate"]):
        extra = [str(tmp_path)] if args == ["predict"] else []
        _one_line_error(*_run(*args, str(tmp_path / "nope"), *extra), "bundle not found")


@needs_tf
def test_info_reports_a_tampered_artifact(tiny_bundle: Path) -> None:
    code, out = _run("info", str(tiny_bundle))
    assert code == 0 and "onnx-fp32" in out
    with open(tiny_bundle / "model.onnx", "r+b") as f:
        f.truncate(1000)
    code, out = _run("info", str(tiny_bundle))
    assert code == 2 and "does not match the bundle manifest" in out


@needs_tf
def test_predict_formats_and_unreadable_files(tiny_bundle: Path, synth_data: Path, tmp_path: Path) -> None:
    cats = sorted((synth_data / "validation" / "cat").iterdir())[:2]
    code, out = _run("predict", str(tiny_bundle), *map(str, cats), "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [Path(r["file"]).name for r in rows] == [c.name for c in cats]
    assert all(r["label"] in ("cat", "dog") and 0 <= r["probability"] <= 1 for r in rows)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    code, out = _run("predict", str(tiny_bundle), str(cats[0]), str(bad), "--format", "csv")
    assert code == 1
    assert out.splitlines()[0].startswith("file,label,probability")
    assert "bad.jpg" in out and "could not be read" in out


@needs_tf
def test_evaluate_on_a_folder(tiny_bundle: Path, synth_data: Path) -> None:
    (tiny_bundle / "metrics.json").write_text('{"training": "result"}')
    code, out = _run("evaluate", str(tiny_bundle), "--data", str(synth_data / "validation"),
                     "--backend", "onnxruntime", "--json")
    assert code == 0, out
    m = json.loads(out[out.index("{"):])
    assert m["n"] == 12 and m["backend"] == "onnxruntime" and m["model_precision"] == "fp32"
    assert 0.0 <= m["precision"] <= 1.0  # the metric, not overwritten by the artifact precision

    code, out = _run("evaluate", str(tiny_bundle), "--data", str(synth_data / "validation"), "--backend", "onnxruntime")
    assert code == 0, out
    assert "onnxruntime/fp32" in out and "ROC-AUC" in out
    # another backend/data gets its own files; the training result stays as it was
    saved = json.loads((tiny_bundle / "metrics-onnxruntime-fp32.json").read_text())
    assert saved["backend"] == "onnxruntime" and saved["n"] == 12
    assert (tiny_bundle / "plots" / "confusion_matrix-onnxruntime-fp32.png").stat().st_size > 0
    assert json.loads((tiny_bundle / "metrics.json").read_text()) == {"training": "result"}


def test_edge_side_imports_and_train_says_install_extra(tmp_path: Path) -> None:
    """Without TensorFlow: the package and CLI import, and train says how to get the extra."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; sys.modules['tf2onnx'] = None\n"
        "import edgecat, edgecat.cli, edgecat.runtime, edgecat.imaging, edgecat.bundle, edgecat.evaluate\n"
        "from edgecat.cli import main\n"
        f"main(['train', '--data', {str(tmp_path)!r}, '--weights', 'none'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    assert "install the training extra" in res.stderr and "Traceback" not in res.stderr
    assert "pip install 'edgecat[train]'" in res.stderr


def test_unknown_option_is_a_usage_error() -> None:
    code, out = _run("train", "--no-such-flag")
    assert code == 2 and "No such option" in out
