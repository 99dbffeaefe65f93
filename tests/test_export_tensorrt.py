"""TensorRT engine naming/compatibility (pure Python), the ONNX-only bundle path without TensorFlow
(a Jetson), and engine builds where a GPU with TensorRT is present (marked gpu)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import has_gpu, needs_tf
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.export import tensorrt as trtx

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
ORIN = trtx.EngineTarget("Orin (nvgpu)", "8.7", "10.3.0")


def test_engine_filename_names_gpu_cc_version_precision():
    assert trtx.engine_filename(ORIN, "int8") == "model.orin-nvgpu-sm87-trt10.3.0.int8.engine"
    desk = trtx.EngineTarget("NVIDIA GeForce RTX 4090", "8.9", "11.0.1")
    assert trtx.engine_filename(desk, "fp16") == "model.geforce-rtx-4090-sm89-trt11.0.1.fp16.engine"
    with pytest.raises(EdgecatError, match="unknown TensorRT precision"):
        trtx.engine_filename(desk, "bf16")


def test_engine_problem_detects_other_gpu_and_version():
    entry = {"gpu": "Orin (nvgpu)", "compute_capability": "8.7", "tensorrt_version": "10.3.0"}
    assert trtx.engine_problem(entry, ORIN) is None
    newer = trtx.EngineTarget("Orin (nvgpu)", "8.7", "10.7.0")
    assert "TensorRT 10.3.0" in trtx.engine_problem(entry, newer)
    other = trtx.EngineTarget("NVIDIA A100-SXM4-40GB", "8.0", "10.3.0")
    assert "sm87" in trtx.engine_problem(entry, other) and "sm80" in trtx.engine_problem(entry, other)


def test_check_engine_refuses_stale_with_rebuild_command(tmp_path):
    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(32, 32),
                      classes=["cat", "dog"], preprocessing="tf")
    (tmp_path / "b" / "model.onnx").write_bytes(b"onnx")
    b.add_artifact("onnx-fp32", "model.onnx", format="onnx", precision="fp32")
    with pytest.raises(EdgecatError, match="no TensorRT fp16 engine.*--trt --precision fp16"):
        trtx.check_engine(b, "fp16", ORIN)
    name = trtx.engine_filename(ORIN, "fp32")
    (tmp_path / "b" / name).write_bytes(b"engine")
    b.add_artifact("trt-fp32", name, format="tensorrt", precision="fp32", gpu=ORIN.gpu_name,
                   compute_capability="8.7", tensorrt_version="10.3.0", source="onnx-fp32",
                   source_sha256=b.artifacts["onnx-fp32"]["sha256"])
    assert trtx.check_engine(b, "fp32", ORIN)["file"] == name
    other = trtx.EngineTarget("NVIDIA GeForce RTX 3060", "8.6", "10.3.0")
    with pytest.raises(EdgecatError, match=r"cannot run here: .*edgecat export .* --trt --precision fp32"):
        trtx.check_engine(b, "fp32", other)
    (tmp_path / "b" / "model.onnx").write_bytes(b"onnx v2")
    b.add_artifact("onnx-fp32", "model.onnx", format="onnx", precision="fp32")
    with pytest.raises(EdgecatError, match="stale: onnx-fp32 changed"):
        trtx.check_engine(b, "fp32", ORIN)


def test_parse_batch():
    assert trtx.parse_batch("1,4,16") == (1, 4, 16)
    assert trtx.parse_batch("8") == (1, 8, 8)
    with pytest.raises(EdgecatError, match="MIN,OPT,MAX"):
        trtx.parse_batch("8,1,4")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_no_tensorrt_is_one_clear_error():
    with pytest.raises(EdgecatError, match="TensorRT is not installed"):
        trtx.require_tensorrt()


# ---------------------------------------------------------------------- ONNX-only bundle, no TF
BLOCK_TF = textwrap.dedent("""
    import sys
    for name in ("tensorflow", "keras", "tf2onnx"):
        sys.modules[name] = None  # any import of them now raises ImportError
    from edgecat.cli import main
    try:
        main(sys.argv[1:], prog_name="edgecat")
    finally:
        assert not any(sys.modules.get(n) for n in ("tensorflow", "keras", "tf2onnx"))
""")


def _edgecat_without_tf(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-c", BLOCK_TF, *args], capture_output=True, text=True,
                          timeout=300, env=env)


@needs_tf
def test_onnx_only_bundle_exports_without_tensorflow(tiny_bundle, synth_data):
    b = Bundle.open(tiny_bundle)
    b.remove_artifact("keras", delete_file=True)
    r = _edgecat_without_tf("export", str(tiny_bundle), "--fp16", "--fp16-tolerance", "0.05", "--int8", "--calib",
                            str(synth_data / "train"), "--calib-size", "16")
    assert r.returncode == 0, r.stderr[-2000:]
    arts = json.loads((tiny_bundle / "edgecat.json").read_text())["artifacts"]
    assert {"onnx-fp16", "onnx-int8", "onnx-int8-trt"} <= set(arts)
    assert "precision table" in r.stdout
    r = _edgecat_without_tf("export", str(tiny_bundle), "--trt", "--precision", "fp16")
    if HAS_TRT and has_gpu():  # a real build from the ONNX-only bundle
        assert r.returncode == 0, r.stderr[-2000:]
    else:
        assert r.returncode != 0 and "Traceback" not in r.stderr
        want = "error: TensorRT is not installed" if not HAS_TRT else "NVIDIA GPU"
        assert want in r.stderr, r.stderr[-500:]
    r = _edgecat_without_tf("export", str(tiny_bundle), "--onnx")
    assert r.returncode != 0 and "has no model.keras to export ONNX from" in r.stderr


# ---------------------------------------------------------------------- real TensorRT (GPU only)
@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and has_gpu()), reason="needs TensorRT and an NVIDIA GPU")
def test_build_and_load_engines(onnx_bundle):
    tiny_bundle = onnx_bundle
    b = Bundle.open(tiny_bundle)
    built = trtx.build_engines(b, ["fp32", "fp16"], batch=(1, 2, 4), workspace_gb=0.5)
    target = trtx.current_target()
    for e in built:
        entry = b.artifacts[e.key]
        assert e.file == trtx.engine_filename(target, e.precision)
        assert entry["batch"] == {"min": 1, "opt": 2, "max": 4}
        assert entry["tensorrt_version"] == target.tensorrt_version
        loaded = trtx.load_engine(Bundle.open(tiny_bundle), e.precision)
        assert loaded.engine is not None and loaded.entry["file"] == e.file
    assert list(tiny_bundle.glob("timing.*.cache"))
    assert np.isfinite(b.artifacts["trt-fp32"]["build_seconds"])
