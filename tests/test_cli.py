"""The command line: one-line errors with non-zero exits, and the edge side without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import _scores_from_predict, needs_tf
from edgecat.cli import main


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def _one_line_error(code: int, out: str, needle: str) -> None:
    assert code != 0
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], out
    assert "Traceback" not in out


def _listed_commands(help_text: str) -> list[str]:
    """The names in the help page's "Commands:" section (first word of each indented line), so a
    command is counted only where it is listed, not where an example or a description mentions it."""
    section = help_text.split("\nCommands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.strip()]


def test_help_lists_every_command() -> None:
    code, out = _run("--help")
    assert code == 0
    assert _listed_commands(out) == sorted(["train", "export", "bench", "stream", "predict", "evaluate", "info",
                                            "checks", "keygen", "sign"])
    assert _listed_commands(out) == sorted(main.commands)


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
    res = CliRunner().invoke(main, ["predict", str(tiny_bundle), *map(str, cats), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)  # stdout is the JSON alone: logs (auto's pick among them) go to stderr
    assert "auto -> " in res.stderr  # the bundle has exports: auto ran, and says what it picked
    assert [Path(r["file"]).name for r in rows] == [c.name for c in cats]
    assert all(r["label"] in ("cat", "dog") and 0 <= r["probability"] <= 1 for r in rows)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    res = CliRunner().invoke(main, ["predict", str(tiny_bundle), str(cats[0]), str(bad), "--format", "csv"])
    assert res.exit_code == 1
    assert res.stdout.splitlines()[0].startswith("file,label,probability")
    assert "bad.jpg" in res.stdout and "could not be read" in res.stderr


@needs_tf
def test_evaluate_on_a_folder(tiny_bundle: Path, synth_data: Path) -> None:
    from edgecat.evaluate import data_slug

    (tiny_bundle / "metrics.json").write_text('{"training": "result"}')
    code, out = _run("evaluate", str(tiny_bundle), "--data", str(synth_data / "validation"),
                     "--backend", "onnxruntime", "--json")
    assert code == 0, out
    m = json.loads(out[out.index("{"):])
    assert m["n"] == 12 and m["backend"] == "onnxruntime" and m["model_precision"] == "fp32"
    # the metric (not overwritten by the artifact precision), and the figure predict's labels give
    want = _scores_from_predict(tiny_bundle, synth_data / "validation")
    assert m["precision"] == pytest.approx(want["precision"]) and m["accuracy"] == pytest.approx(want["accuracy"])

    code, out = _run("evaluate", str(tiny_bundle), "--data", str(synth_data / "validation"), "--backend", "onnxruntime")
    assert code == 0, out
    assert "onnxruntime/fp32" in out and "ROC-AUC" in out
    # another backend/data gets its own files; the training result stays as it was
    slug = data_slug(synth_data / "validation")
    saved = json.loads((tiny_bundle / f"metrics-onnxruntime-fp32-{slug}.json").read_text())
    assert saved["backend"] == "onnxruntime" and saved["n"] == 12
    assert (tiny_bundle / "plots" / f"confusion_matrix-onnxruntime-fp32-{slug}.png").stat().st_size > 0
    assert json.loads((tiny_bundle / "metrics.json").read_text()) == {"training": "result"}


def test_evaluate_on_a_read_only_bundle_prints_and_warns(tiny_bundle: Path, synth_data: Path, monkeypatch) -> None:
    """A bundle on a read-only device filesystem: the figures are printed, the save is a warning."""
    import errno
    import importlib

    def read_only(path, *_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    # the module, not the edgecat.evaluate() function the package exposes under that name
    monkeypatch.setattr(importlib.import_module("edgecat.evaluate"), "write_json", read_only)
    res = CliRunner().invoke(main, ["evaluate", str(tiny_bundle), "--data", str(synth_data / "validation"),
                                    "--backend", "onnxruntime", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 12 and "plots" not in json.loads(res.stdout)
    assert "metrics not saved" in res.stderr and "Read-only file system" in res.stderr
    assert not list(tiny_bundle.glob("metrics-onnxruntime-fp32*.json"))


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


# ------------------------------------------------------------------------------ output streams
def _invoke(*args: str, **kw):
    """CliRunner with stdout and stderr kept apart (Click >= 8.2 always separates them)."""
    return CliRunner().invoke(main, list(args), **kw)


@needs_tf
def test_json_on_stdout_is_pure_json_while_logs_go_to_stderr(tiny_bundle: Path, synth_data: Path,
                                                              tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_data / "validation", data)
    (data / "cat" / "notes.jpg").write_text("not an image")  # logged as left out: a line on stderr
    res = _invoke("evaluate", str(tiny_bundle), "--data", str(data), "--backend", "onnxruntime", "--json")
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)  # the whole of stdout, no log line before the JSON
    assert metrics["n"] == 12
    assert "notes.jpg" in res.stderr and "notes.jpg" not in res.stdout


def test_logging_goes_to_stderr_console() -> None:
    import logging

    from edgecat.log import progress, setup_logging, stderr_console

    setup_logging(1)
    handlers = logging.getLogger().handlers
    assert len(handlers) == 1 and handlers[0].console is stderr_console()
    assert stderr_console().stderr is True
    # progress bars draw on the same console, so a log line is printed above a bar, not into it
    assert progress().console is stderr_console()


def test_quiet_and_verbose_work_after_the_subcommand() -> None:
    import logging

    for args, level in ((["checks", "--json", "-q"], logging.WARNING), (["checks", "--json", "-vv"], logging.DEBUG),
                        (["-q", "checks", "--json"], logging.WARNING), (["checks", "--json"], logging.INFO)):
        res = _invoke(*args)
        assert res.exit_code == 0, res.output
        assert logging.getLogger().level == level, args
        json.loads(res.stdout)


def test_device_sets_cuda_visible_devices_and_checks_a_bad_value() -> None:
    res = _invoke("checks", "--json", "--device", "cuda:1", env={"CUDA_VISIBLE_DEVICES": "7"})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["gpu"]["cuda_visible_devices"] == "1"
    res = _invoke("--device", "cpu", "checks", "--json", env={"CUDA_VISIBLE_DEVICES": "7"})
    assert json.loads(res.stdout)["gpu"]["cuda_visible_devices"] == "-1"
    res = _invoke("checks", "--device", "gpu0", env={"CUDA_VISIBLE_DEVICES": "7"})
    _one_line_error(res.exit_code, res.output, "'--device'")


@needs_tf
def test_tensorflow_startup_lines_are_not_printed(tmp_path: Path) -> None:
    """absl/cudart lines come from C++ on fd 2 while TensorFlow loads, even with TF_CPP_MIN_LOG_LEVEL=3."""
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    res = subprocess.run([sys.executable, "-m", "edgecat", "train", "--data", str(tmp_path / "nope"),
                          "--weights", "none"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert res.returncode == 2 and "data folder not found" in res.stderr
    for noise in ("absl::InitializeLog", "Could not find cuda drivers", "cpu_feature_guard", "oneDNN"):
        assert noise not in res.stderr, res.stderr


def test_fd2_filter_keeps_real_errors(capfd) -> None:
    import os

    from edgecat.log import fd2_filtered

    with fd2_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1795908055.608815    4690 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert "a real problem" in err and "absl" not in err and "cudart" not in err


# ------------------------------------------------------------------------------ info, errors
@needs_tf
def test_info_prints_metric_labels_literally(tiny_bundle: Path) -> None:
    from edgecat.bundle import Bundle

    b = Bundle.open(tiny_bundle)
    b.manifest["metrics"] = {"validation": {"n": 12, "accuracy": 0.5, "f1": 0.4, "roc_auc": 0.6},
                             "onnxruntime-fp32": {"n": 12, "accuracy": 0.75, "f1": None, "roc_auc": None}}
    b.save()
    res = _invoke("info", str(tiny_bundle))
    assert res.exit_code == 0, res.output
    assert "metrics [validation]: accuracy 0.5000" in res.stdout
    assert "metrics [onnxruntime-fp32]: accuracy 0.7500" in res.stdout


@needs_tf
def test_missing_export_errors_name_the_command_that_fixes_them(tiny_bundle: Path, synth_data: Path) -> None:
    from edgecat.bundle import Bundle

    cat = str(sorted((synth_data / "validation" / "cat").iterdir())[0])
    res = _invoke("predict", str(tiny_bundle), cat, "--precision", "int8")
    _one_line_error(res.exit_code, res.output, f"edgecat export {tiny_bundle} --int8 --calib DIR")
    Bundle.open(tiny_bundle).remove_artifact("onnx-fp32")  # straight after training: Keras only
    res = _invoke("predict", str(tiny_bundle), cat, "--precision", "int8")
    _one_line_error(res.exit_code, res.output, "--int8 --calib DIR")
    assert "keras runs fp32 only" not in res.output
    res = _invoke("predict", str(tiny_bundle), cat, "--backend", "onnxruntime")
    _one_line_error(res.exit_code, res.output, f"run edgecat export {tiny_bundle}")


def test_bad_option_values_name_the_option(tmp_path: Path) -> None:
    for args, needle in ((["predict", str(tmp_path), str(tmp_path), "--batch", "abc"], "'--batch'"),
                         (["bench", str(tmp_path), "--batch", "1,x"], "'--batch'"),
                         (["stream", str(tmp_path), "--source", "0", "--precision", "int9"], "'--precision'"),
                         (["bench", str(tmp_path), "--precision", "fp8"], "'--precision'")):
        res = _invoke(*args)
        assert res.exit_code == 2
        _one_line_error(res.exit_code, res.output, needle)


@needs_tf
def test_old_option_spellings_still_work(tiny_bundle: Path, synth_data: Path) -> None:
    cat = str(sorted((synth_data / "validation" / "cat").iterdir())[0])
    res = _invoke("predict", str(tiny_bundle), cat, "--batch-size", "2", "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["label"] in ("cat", "dog")
    assert "--batch-size" not in _invoke("predict", "-h").output  # hidden alias


@needs_tf
def test_unreadable_image_error_names_the_file(tiny_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    res = _invoke("predict", str(tiny_bundle), str(bad), "--format", "json")
    assert res.exit_code == 1
    row = json.loads(res.stdout)[0]
    assert "notes.jpg" in row["error"] and "BytesIO" not in row["error"], row


@needs_tf
def test_evaluate_scores_a_one_class_folder(tiny_bundle: Path, synth_data: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(synth_data / "validation" / "cat", tmp_path / "cats-only" / "cat")
    res = _invoke("evaluate", str(tiny_bundle), "--data", str(tmp_path / "cats-only"), "--backend", "onnxruntime",
                  "--json")
    assert res.exit_code == 0, res.output
    m = json.loads(res.stdout)
    want = _scores_from_predict(tiny_bundle, tmp_path / "cats-only")
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(want["accuracy"])
    assert m["precision"] is None and m["roc_auc"] is None and "only one class (cat)" in m["note"]
    res = _invoke("evaluate", str(tiny_bundle), "--data", str(tmp_path / "cats-only"), "--backend", "onnxruntime")
    assert res.exit_code == 0 and "n/a" in res.stdout and "only one class" in res.stdout


# ------------------------------------------------------------------------------ settings
@needs_tf
def test_bad_setting_type_fails_before_any_work(tmp_path: Path, synth_data: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"data: {synth_data}\nbatch_size: 16x\nweights: none\n")
    out = tmp_path / "runs" / "bad"
    res = _invoke("train", "--config", str(cfg), "--out", str(out))
    _one_line_error(res.exit_code, res.output, "batch_size='16x'")
    assert not out.exists()  # nothing was started, so nothing is left half-made
    res = _invoke("train", "--data", str(synth_data), "--val-split", "1.5", "--out", str(out))
    _one_line_error(res.exit_code, res.output, "val_split")


def test_train_config_keeps_its_fields_and_validates() -> None:
    import dataclasses

    import pytest

    from edgecat.config import TrainConfig
    from edgecat.errors import EdgecatError

    cfg = TrainConfig()
    assert cfg.batch_size == 32 and cfg.cache_views == 3 and "extra" not in TrainConfig.field_names()
    assert set(cfg.to_dict()) == TrainConfig.field_names() == {f.name for f in dataclasses.fields(TrainConfig)}
    assert cfg.merged({"batch-size": "16", "stage1_lr": "1e-4", "seed": None}).batch_size == 16
    for bad, needle in (({"batch_size": "16x"}, "batch_size"), ({"schedule": "fast"}, "schedule"),
                        ({"head": "mlp"}, "head"), ({"stage1_lr": 0}, "stage1_lr"), ({"nope": 1}, "nope")):
        with pytest.raises(EdgecatError, match=needle):
            cfg.merged(bad)


def test_exist_ok_replaces_only_a_bundle(tmp_path: Path) -> None:
    import pytest

    from edgecat.api import replace_bundle_dir
    from edgecat.errors import EdgecatError

    old = tmp_path / "runs" / "cats"
    old.mkdir(parents=True)
    (old / "edgecat.json").write_text("{}")
    replace_bundle_dir(old)
    assert not old.exists()
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(EdgecatError, match="holds no bundle"):
        replace_bundle_dir(other)
    assert (other / "a.jpg").exists()
    assert "--exist-ok" in _invoke("train", "-h").output


# ------------------------------------------------------------------------------ help pages
def test_help_pages_have_examples_groups_and_defaults() -> None:
    for cmd in ("train", "export", "bench", "stream", "predict", "evaluate", "info", "checks"):
        res = _invoke(cmd, "-h")
        assert res.exit_code == 0 and "Examples:" in res.output and f"edgecat {cmd}" in res.output, cmd
        assert "Global options:" in res.output and "--device" in res.output
    train_help = _invoke("train", "-h").output
    for group in ("Data:", "Model:", "Schedule:", "Output and runs:"):
        assert group in train_help
    assert "[default: 32]" in train_help and "(default" not in train_help
    assert "[default: 1,8,32]" in _invoke("export", "-h").output


@needs_tf
def test_unreachable_rtsp_source_is_one_edgecat_line(tiny_bundle: Path, tmp_path: Path) -> None:
    """FFmpeg's own "[tcp @ 0x...] Connection refused" and OpenCV's WARN lines are not leaked."""
    res = subprocess.run([sys.executable, "-m", "edgecat", "stream", str(tiny_bundle), "--source",
                          "rtsp://127.0.0.1:9/cam", "--reconnect", "0", "--sink", f"jsonl://{tmp_path / 'e.jsonl'}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "[tcp @" not in res.stderr and "Connection refused" not in res.stderr and "WARN:" not in res.stderr, res.stderr
    assert "rtsp://127.0.0.1:9/cam" in res.stderr + res.stdout


def test_bare_command_shows_help_not_an_error() -> None:
    res = _invoke()
    assert res.exit_code == 2 and "Usage:" in res.output and "error:" not in res.output
