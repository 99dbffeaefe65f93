"""The Python API (edgecat.__all__): light to import, the README example runs as written, and each
function does what its command does."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgecat
from conftest import needs_tf

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_is_light_and_every_public_name_resolves() -> None:
    code = ("import sys, edgecat\n"
            "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'cv2', 'matplotlib') if m in sys.modules]\n"
            "print(heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr
    assert re.fullmatch(r"\d+\.\d+\.\d+", edgecat.__version__)
    for name in set(edgecat.__all__) - {"__version__"}:
        value = getattr(edgecat, name)  # the function or class of that name, not its module
        assert callable(value) and value.__name__ == name and value.__module__.startswith("edgecat."), value
    assert {"train", "export", "predict", "evaluate", "benchmark", "load", "Model", "Bundle", "TrainConfig",
            "EdgecatError", "checks"} <= set(edgecat.__all__)


def test_api_functions_are_not_replaced_by_submodules_of_the_same_name() -> None:
    import edgecat.checks  # importing the submodule must not rebind edgecat.checks
    import edgecat.evaluate
    from edgecat.export import steps  # noqa: F401

    for name in ("train", "evaluate", "export", "checks"):
        assert callable(getattr(edgecat, name)) and not isinstance(getattr(edgecat, name), type(os)), name
    assert "CPUExecutionProvider" in edgecat.checks()["onnxruntime"]["providers"]


def _first_python_block() -> str:
    m = re.search(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert m, "README.md has no ```python block"
    return m.group(1)


@needs_tf
def test_readme_example_runs_as_written(tiny_bundle: Path, synth_data: Path, tmp_path: Path, monkeypatch,
                                        capsys) -> None:
    """The README's first python block, unchanged, against a bundle at the path it names."""
    code = _first_python_block()
    bundle_path = re.search(r'edgecat\.load\("([^"]+)"\)', code).group(1)
    shutil.copytree(tiny_bundle, tmp_path / bundle_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((synth_data / "validation" / "cat").iterdir())[:2]:
        shutil.copy(f, photos / f.name)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert "['cat', 'dog']" in out
    assert sum(line.startswith("photos/") for line in out.splitlines()) == 2, out


@needs_tf
def test_model_predicts_files_folders_and_arrays(tiny_bundle: Path, synth_data: Path, tmp_path: Path) -> None:
    from edgecat.imaging import decode_image

    cats = sorted((synth_data / "validation" / "cat").iterdir())[:3]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with edgecat.load(tiny_bundle, backend="onnxruntime") as model:
        files = model.predict([*map(str, cats), str(bad)], batch=2)
        arrays = model.predict([decode_image(c) for c in cats])
        one = model.predict(decode_image(cats[0]))
    assert [Path(p.file).name for p in files] == [c.name for c in cats] + ["bad.jpg"]
    assert files[-1].error and "bad.jpg" in files[-1].error
    assert [p.label for p in arrays] == [p.label for p in files[:3]]
    np.testing.assert_allclose([p.probability for p in arrays], [p.probability for p in files[:3]], atol=1e-5)
    assert one[0].file == "<array 0>" and one[0].label == files[0].label
    same = edgecat.predict(tiny_bundle, [str(c) for c in cats])
    assert [p.label for p in same] == [p.label for p in files[:3]]


@needs_tf
def test_evaluate_export_and_benchmark_take_the_commands_settings(tiny_bundle: Path, synth_data: Path) -> None:
    m = edgecat.evaluate(tiny_bundle, synth_data / "validation", backend="onnxruntime", write=False)
    assert m["n"] == 12 and m["backend"] == "onnxruntime"
    assert json.loads(json.dumps(m))  # what `evaluate --json` prints
    with pytest.raises(edgecat.EdgecatError, match="unknown export setting.*fp8"):
        edgecat.export(tiny_bundle, fp8=True)
    with pytest.raises(edgecat.EdgecatError, match="unknown benchmark setting.*iterations"):
        edgecat.benchmark(tiny_bundle, iterations=3)
    rep = edgecat.benchmark(tiny_bundle, backends=["onnxruntime"], iters=2, warmup=0, end_to_end=False,
                            options={"threads": 1})
    assert rep.results[0].status == "ok" and rep.results[0].model_only.iters == 2
    res = edgecat.export(tiny_bundle)  # ONNX FP32 is there already: says so, changes nothing
    assert any("already there" in line for line in res.lines)


@needs_tf
def test_predict_refuses_arrays_that_are_not_rgb_images(tiny_bundle: Path) -> None:
    """One EdgecatError line saying what is expected, for each kind of wrong array; a batch works."""
    with edgecat.load(tiny_bundle, backend="onnxruntime") as model:
        for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32),
                    np.zeros((0, 0, 3), np.uint8)):
            with pytest.raises(edgecat.EdgecatError, match=r"expected an HxWx3 uint8 RGB image or an NxHxWx3") as e:
                model.predict([bad])
            assert "\n" not in str(e.value)
        with pytest.raises(edgecat.EdgecatError, match="array 1: expected"):
            model.predict([np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8)])
        batch = model.predict(np.zeros((3, 20, 30, 3), np.uint8))
        with pytest.raises(edgecat.EdgecatError, match="batch size must be at least 1"):
            model.predict(np.zeros((3, 20, 30, 3), np.uint8), batch=0)
    assert [p.file for p in batch] == ["<array 0>", "<array 1>", "<array 2>"]


#: what TensorFlow and Keras write on stderr that a Python API user should not see
LIBRARY_NOISE = re.compile(r"E0000|cuInit|UserWarning|DeprecationWarning|I0000|W0000|absl::InitializeLog")


@needs_tf
def test_api_keeps_library_noise_off_stderr(tiny_bundle: Path, synth_data: Path, tmp_path: Path) -> None:
    """predict on Keras and a tiny training run through the API, in a fresh process with
    TensorFlow's log level not set: stderr holds edgecat's own lines only."""
    code = (
        "import sys, numpy as np, edgecat\n"
        f"model = edgecat.load({str(tiny_bundle)!r}, backend='keras')\n"
        "print(model.predict([np.zeros((48, 48, 3), np.uint8)])[0].label)\n"
        f"m = edgecat.train(data={str(synth_data)!r}, out={str(tmp_path / 'run')!r}, weights='none', img_size=32,\n"
        "                  batch_size=16, full_epochs=1, tensorboard=False)\n"
        "print(m.path.name)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == [res.stdout.split()[0], "run"] and res.stdout.split()[0] in ("cat", "dog")
    noise = [line for line in res.stderr.splitlines() if LIBRARY_NOISE.search(line)]
    assert not noise, noise
    assert "schedule: full" in res.stderr  # edgecat's own log still reaches the user


def test_train_validates_settings_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(edgecat.EdgecatError, match="batch_size='16x'"):
        edgecat.train(data=tmp_path, out=tmp_path / "run", batch_size="16x")
    assert not (tmp_path / "run").exists()


def test_set_device(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    edgecat.set_device("cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    edgecat.set_device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "-1"
    with pytest.raises(edgecat.EdgecatError, match="not a GPU index"):
        edgecat.set_device("gpu")
