"""`edgecat bench`: the report's schema, the stage split, skip reasons, outputs and CLI errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import has_gpu, needs_tf
from edgecat.bench import SCHEMA, SCHEMA_VERSION, STAGES, BenchConfig, render_table, run_bench, write_plot
from edgecat.cli import main
from edgecat.errors import EdgecatError

RESULT_KEYS = {"backend", "precision", "batch", "status", "reason", "artifact", "model_mb", "model_only",
               "end_to_end", "stages_ms", "fps", "accuracy", "accuracy_images", "peak_rss_mb", "gpu_mem_mb",
               "target_ms", "passed", "speedup_vs_keras_predict", "speedup_e2e_vs_keras_predict", "threads",
               "auto_backend", "asked_precision"}
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "std", "min", "iters"}


@pytest.fixture(scope="module")
def report(tiny_bundle_src, synth_data):
    cfg = BenchConfig(backends=["keras-predict", "onnxruntime", "tensorrt"], precisions=["fp32", "int8"],
                      batches=[1, 2], images=str(synth_data / "validation"), warmup=1, iters=4,
                      target_ms=1e6, options={"threads": 1})
    seen = []
    rep = run_bench(tiny_bundle_src, cfg, progress=lambda label, frac: seen.append(frac))
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    return rep


def _row(report, backend, precision, batch):
    return next(r for r in report.results if (r.backend, r.precision, r.batch) == (backend, precision, batch))


@needs_tf
def test_rows_stages_and_speedup(report):
    assert len(report.results) == 3 * 2 * 2
    for batch in (1, 2):
        ok = _row(report, "onnxruntime", "fp32", batch)
        assert ok.status == "ok", ok.reason
        assert ok.model_only.iters == 4 and ok.end_to_end.iters == 4
        assert set(ok.stages_ms) == set(STAGES)
        # the four stages are contiguous intervals: they add up to the end-to-end mean
        assert sum(ok.stages_ms.values()) == pytest.approx(ok.end_to_end.mean, rel=1e-6)
        assert ok.model_only.p50 <= ok.model_only.p90 <= ok.model_only.p99
        assert ok.passed is True  # target 1e6 ms
        assert ok.fps > 0 and ok.model_mb > 0 and ok.peak_rss_mb > 0
        assert ok.speedup_vs_keras_predict is not None and ok.speedup_vs_keras_predict > 0
        # class folders cat/ dog/ give accuracy over the images seen end to end
        assert ok.accuracy_images == 4 * batch and round(ok.accuracy * ok.accuracy_images, 9).is_integer()
        base = _row(report, "keras-predict", "fp32", batch)
        assert base.status == "ok" and base.speedup_vs_keras_predict == pytest.approx(1.0)
        # both backends saw the same images (same order) through the same model: the same labels
        assert (ok.accuracy, ok.accuracy_images) == (base.accuracy, base.accuracy_images)


@needs_tf
def test_accuracy_is_the_labels_predict_gives(tiny_bundle_src, synth_data, tmp_path):
    """Two batches of four see each of 8 images (2 cats, 6 dogs: unbalanced, so a flipped comparison
    cannot give the same figure) once: bench's accuracy is then the one worked out from
    `edgecat predict`'s labels, an independent path through the same model."""
    from test_cli import _scores_from_predict

    for cls, n in (("cat", 2), ("dog", 6)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for f in sorted((synth_data / "validation" / cls).iterdir())[:n]:
            shutil.copy(f, tmp_path / "imgs" / cls / f.name)
    cfg = BenchConfig(backends=["onnxruntime"], batches=[4], images=str(tmp_path / "imgs"), warmup=0, iters=2,
                      options={"threads": 1})
    row = run_bench(tiny_bundle_src, cfg).results[0]
    assert row.status == "ok" and row.accuracy_images == 8, row.reason
    assert row.accuracy == pytest.approx(_scores_from_predict(tiny_bundle_src, tmp_path / "imgs")["accuracy"])


@needs_tf
def test_skip_reasons(report):
    assert "fp32 only" in _row(report, "keras-predict", "int8", 1).reason
    no_int8 = _row(report, "onnxruntime", "int8", 1)
    assert no_int8.status == "skipped" and "onnx-int8" in no_int8.reason
    trt = _row(report, "tensorrt", "fp32", 1)
    if not has_gpu():  # no TensorRT / GPU / engine here: skipped (not failed), the reason is one line
        assert trt.status == "skipped" and trt.reason and "\n" not in trt.reason
    else:  # a GPU box: the tiny bundle has no engine, so still a one-line skip that names the fix
        import importlib.util

        assert trt.status == "skipped" and trt.reason and "\n" not in trt.reason, trt.reason
        fix = "--trt --precision fp32" if importlib.util.find_spec("tensorrt") else "TensorRT is not installed"
        assert fix in trt.reason, trt.reason


@needs_tf
def test_json_schema_and_plot(report, tmp_path):
    data = json.loads(report.write_json(tmp_path / "r.json").read_text())
    assert data["schema"] == SCHEMA and data["schema_version"] == SCHEMA_VERSION
    assert set(data) >= {"created", "bundle", "machine", "config", "results"}
    assert data["auto"] is None and data["auto_choices"] == []  # no auto row asked
    assert data["bundle"]["input_size"] == [48, 48]
    assert {"physical_cores", "usable_cores", "load_avg", "versions"} <= set(data["machine"])
    assert 1 <= data["machine"]["usable_cores"] <= (data["machine"]["physical_cores"] or os.cpu_count() or 1)
    assert data["config"]["target_ms"] == 1e6 and data["config"]["num_images"] > 0
    for r in data["results"]:
        assert set(r) == RESULT_KEYS
        assert r["status"] in ("ok", "skipped", "failed")
        for key in ("model_only", "end_to_end"):
            assert (r[key] is None) == (r["status"] != "ok") and (r[key] is None or set(r[key]) == LATENCY_KEYS)
        assert (r["status"] == "ok") == (r["reason"] is None)
    png = write_plot(report, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_table(report))
    text = console.export_text()
    assert "onnxruntime" in text and "skipped" in text and "pass" in text


@pytest.mark.parametrize("cfg,msg", [
    (BenchConfig(backends=["nope"]), "unknown backend 'nope'"),
    (BenchConfig(backends=["onnxruntime"], batches=[0]), "batch"),
    (BenchConfig(backends=["onnxruntime"], precisions=["int4"]), "unknown precision"),
])
def test_config_errors(cfg, msg, tmp_path):
    with pytest.raises(EdgecatError, match=msg):
        run_bench(tmp_path, cfg)  # validated before the bundle is even opened


@needs_tf
def test_cli_errors_are_one_line(tiny_bundle, tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, msg in ((["--backend", "nope"], "unknown backend"), (["--batch", "0"], "batch"),
                      (["--images", str(empty)], "no images in")):
        res = runner.invoke(main, ["bench", str(tiny_bundle), *args])
        assert res.exit_code != 0
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], res.output


@needs_tf
def test_unreadable_images_are_left_out(tiny_bundle, synth_data, tmp_path):
    from edgecat.splits import image_set
    from edgecat.bundle import Bundle

    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    good = sorted((synth_data / "validation" / "cat").iterdir())[:3]
    for f in good:
        shutil.copy(f, folder / f.name)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    got = image_set(Bundle.open(tiny_bundle), tmp_path / "imgs", tmp_path)
    assert sorted(p.name for p in got.files) == sorted(f.name for f in good)
    assert got.labels == [0, 0, 0]  # class folder 'cat' -> index of 'cat'
    for f in good:
        (folder / f.name).unlink()
    with pytest.raises(EdgecatError, match="no readable images"):
        image_set(Bundle.open(tiny_bundle), tmp_path / "imgs", tmp_path)


@needs_tf
def test_cli_writes_table_json_and_plot(tiny_bundle, tmp_path):
    out = tmp_path / "b.json"
    res = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--backend", "onnxruntime,onnxruntime-cuda",
                                    "--iters", "3", "--warmup", "1", "--threads", "1", "--json", str(out),
                                    "--plot", str(tmp_path / "b.png")])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [r["backend"] for r in data["results"]] == ["onnxruntime", "onnxruntime-cuda"]
    assert data["results"][0]["status"] == "ok" and data["config"]["synthetic_images"] is True
    from conftest import has_onnxruntime_cuda

    cuda = data["results"][1]  # asked for, so checked: it runs on a CUDA box, else a one-line skip saying why
    if has_onnxruntime_cuda():
        assert cuda["status"] == "ok" and cuda["model_only"]["iters"] == 3, cuda["reason"]
    else:
        assert cuda["status"] == "skipped" and "\n" not in cuda["reason"], cuda["reason"]
        assert "CUDA" in cuda["reason"] or "GPU" in cuda["reason"], cuda["reason"]
    assert (tmp_path / "b.png").exists()


@needs_tf
def test_bench_runs_without_tensorflow(tiny_bundle_src):
    """The edge side: with TensorFlow unimportable, ORT still runs and Keras rows are skipped."""
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        from edgecat.bench import BenchConfig, run_bench
        rep = run_bench({str(tiny_bundle_src)!r}, BenchConfig(backends=['keras', 'onnxruntime'], warmup=0,
                        iters=2, options={{'threads': 1}}))
        print([(r.backend, r.status, r.reason) for r in rep.results])
        assert 'tensorflow' not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "('keras', 'skipped', 'TensorFlow not installed')" in out.stdout
    assert "('onnxruntime', 'ok', None)" in out.stdout


def _render(report, width):
    from rich.console import Console

    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(render_table(report, width))
    return console.export_text()


@needs_tf
@pytest.mark.parametrize("width", [80, 120, 200])
def test_table_is_readable_at_terminal_widths(report, width):
    from edgecat.bench import DETAIL_COLUMNS, LATENCY_COLUMNS, WIDE_COLUMNS

    text = _render(report, width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width, text
    assert "…" not in text, text  # nothing squeezed into an ellipsis
    wide = "decode/pre/infer/post" in text
    headers = WIDE_COLUMNS if wide else LATENCY_COLUMNS + DETAIL_COLUMNS
    for header in headers:  # two-line headers: each of their lines is there, whole
        for part in header.split("\n"):
            assert part in text, (width, header, text)
    assert wide == (width >= 200)
    # every row is there with its status; rows that did not run say why below the table
    assert text.count(" ok ") >= sum(r.status == "ok" for r in report.results)
    skipped = [r for r in report.results if r.status != "ok"]
    assert skipped
    for i, r in enumerate(skipped, 1):
        assert f"{r.status} [{i}]" in text
        note = next(line for line in lines if line.startswith(f"[{i}] {r.label}"))
        assert r.status in note
    assert "onnx-int8" in text  # the int8 rows' reason: the export they need


@needs_tf
def test_bench_exits_non_zero_when_no_row_ran(tiny_bundle):
    res = CliRunner().invoke(main, ["bench", str(tiny_bundle), "--backend", "onnxruntime", "--precision", "int8",
                                    "--iters", "1", "--warmup", "0"])
    assert res.exit_code != 0
    assert "no backend ran" in res.stderr and "skipped [1]" in res.stdout
    assert "edgecat export" in res.stdout  # the skip reason carries the fix


@pytest.fixture
def wide_console(monkeypatch):
    """The CLI's console 200 columns wide: one wide table, no cell wrapped."""
    from edgecat.cli.common import console

    monkeypatch.setattr(console, "width", 200)


def _auto_run(bundle, tmp_path, name, *args):
    """`edgecat bench --backend auto ...`: the printed text and the JSON report."""
    out = tmp_path / f"{name}.json"
    res = CliRunner().invoke(main, ["bench", str(bundle), *args, "--iters", "3", "--warmup", "1", "--threads", "1",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    return res.stdout, json.loads(out.read_text())


@needs_tf
def test_auto_row_shows_what_auto_picked_and_why(tiny_bundle, tmp_path, wide_console):
    """--backend auto is benched on what it resolved to; the candidates and the reason are printed,
    and the JSON's `auto` is the choice auto remembered in the manifest."""
    from edgecat.select import MANIFEST_KEY
    from edgecat.bundle import Bundle
    from edgecat.export.fp16 import export_fp16

    export_fp16(Bundle.open(tiny_bundle), tolerance=5e-2)
    text, data = _auto_run(tiny_bundle, tmp_path, "first", "--backend", "auto,onnxruntime", "--precision", "auto",
                           "--model-only")
    auto = data["auto"]
    (slot, saved), = json.loads((tiny_bundle / "edgecat.json").read_text())[MANIFEST_KEY].items()
    assert slot.endswith("precision=auto") and (auto["backend"], auto["precision"]) == (saved["backend"],
                                                                                        saved["precision"])
    assert auto["asked_precision"] == "auto" and not auto["reused"] and auto["threads"] == saved["threads"] == 1
    assert data["auto_choices"] == [auto]
    # --precision auto: auto chose among every exported precision, not just FP32
    assert {t["precision"] for t in auto["timings"]} == {"fp32", "fp16"}
    row, ort = data["results"]
    assert row["status"] == "ok" and row["backend"] == "auto" and row["model_only"]["iters"] == 3, row["reason"]
    assert (row["auto_backend"], row["precision"], row["threads"]) == (auto["backend"], auto["precision"], 1)
    assert row["asked_precision"] == "auto" and f"{auto['precision']} (auto)" in text  # auto picked it
    assert ort["status"] == "skipped" and "with --backend auto only" in ort["reason"]
    # printed: the row, then auto's candidate table and its reason line
    assert f"auto -> {auto['backend']} (1 thr)" in text
    assert "--backend auto --precision auto: candidates" in text
    for t in auto["timings"]:
        assert any(t["backend"] in line and f" {t['precision']} " in line and t["status"] in line
                   for line in text.splitlines()), (t, text)
    assert auto["line"].startswith(f"auto -> {auto['backend']}/{auto['precision']}, 1 thread(s) (measured now)")
    assert " ".join(auto["line"].split()) in " ".join(text.split())
    # a second run reuses the remembered choice; --auto-refresh measures again
    text, again = _auto_run(tiny_bundle, tmp_path, "again", "--backend", "auto", "--model-only")
    assert again["config"]["precisions"] == ["auto"] and again["auto"]["reused"] and "(remembered" in text
    assert (again["auto"]["backend"], again["auto"]["precision"]) == (auto["backend"], auto["precision"])
    _, fresh = _auto_run(tiny_bundle, tmp_path, "fresh", "--backend", "auto", "--model-only", "--auto-refresh")
    assert not fresh["auto"]["reused"]
    remade = json.loads((tiny_bundle / "edgecat.json").read_text())[MANIFEST_KEY][slot]
    assert remade["created"] != saved["created"]  # recorded again
    assert (remade["backend"], remade["precision"]) == (fresh["auto"]["backend"], fresh["auto"]["precision"])


@needs_tf
def test_auto_is_in_the_default_backends_only_with_exports(tiny_bundle, tmp_path):
    from edgecat.artifacts import onnx
    from edgecat.bench import DEFAULT_BACKENDS, default_backends
    from edgecat.bundle import Bundle

    b = Bundle.open(tiny_bundle)
    assert default_backends(b) == [*DEFAULT_BACKENDS, "auto"]
    del b.manifest["artifacts"][onnx("fp32").key]  # right after training: Keras only, auto has nothing to pick
    assert default_backends(b) == list(DEFAULT_BACKENDS)


def test_image_set_labels_by_the_rule_evaluate_uses(tmp_path):
    """One label rule: a file is labelled when its class folder is one of the model's classes as
    `splits.labelled_files` (what evaluate scores) reads it; a "cats" folder is not the class "cat"."""
    from edgecat.bundle import Bundle
    from edgecat.splits import image_set, labelled_files
    from edgecat.synthetic import make_image, write_image

    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(32, 32),
                      classes=["cat", "dog"], preprocessing="mobilenet_v2")
    for root, names in (("same", ("cat", "dog")), ("plural", ("cats", "dogs"))):
        for label, name in enumerate(names):
            for i in range(2):
                write_image(tmp_path / root / name / f"{i}.jpg", make_image(label, size=40))
    got = image_set(b, tmp_path / "same", tmp_path)
    files, labels, _ = labelled_files(b, tmp_path / "same")
    assert sorted(got.labels) == [0, 0, 1, 1]
    assert {f.resolve(): y for f, y in zip(got.files, got.labels)} == \
        {Path(f).resolve(): y for f, y in zip(files, labels)}
    plural = image_set(b, tmp_path / "plural", tmp_path)
    assert len(plural.files) == 4 and plural.labels == [None] * 4 and not plural.labelled
