"""DeepStream nvinfer config (`export --deepstream`): keys and values checked against the bundle."""

from __future__ import annotations

import configparser
from pathlib import Path

import numpy as np
import pytest

from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.export.deepstream import write_config
from edgecat.fsutil import sha256_file


def read_property(path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    assert parser.sections() == ["property"]
    return dict(parser["property"])


def test_config_matches_the_bundle_input_contract(tiny_bundle, tmp_path):
    import onnxruntime as ort

    bundle = Bundle.open(tiny_bundle)
    config = write_config(bundle, tmp_path / "ds")
    assert config.parent == tmp_path / "ds" and config.name.startswith("config_infer_primary_")
    prop = read_property(config)
    h, w = bundle.input_size

    # classifier on the whole frame, FP32, NHWC with infer-dims given as C;H;W
    assert prop["network-type"] == "1"
    assert prop["process-mode"] == "1"
    assert prop["network-mode"] == "0"
    assert prop["network-input-order"] == "1"
    assert [int(v) for v in prop["infer-dims"].split(";")] == [3, h, w]
    assert prop["model-color-format"] == "0"  # RGB, as the bundle says
    assert bundle.manifest["input"]["color"] == "RGB"
    assert prop["maintain-aspect-ratio"] == "0"
    assert int(prop["batch-size"]) == 1
    # raw 0-255 in, preprocessing inside the model: nvinfer must pass pixels through unchanged
    assert float(prop["net-scale-factor"]) == 1.0
    assert [float(v) for v in prop["offsets"].split(";")] == [0.0, 0.0, 0.0]
    assert bundle.manifest["input"]["range"] == [0.0, 255.0]
    assert float(prop["classifier-threshold"]) == pytest.approx(bundle.threshold)

    # the files it names exist next to it and are the bundle's
    onnx_file = config.parent / prop["onnx-file"]
    assert sha256_file(onnx_file) == bundle.artifacts["onnx-fp32"]["sha256"]
    assert "model-engine-file" not in prop  # no engine in this bundle: nvinfer builds one
    labels = (config.parent / prop["labelfile-path"]).read_text().splitlines()
    assert labels == ["dog"]  # one sigmoid output = probability of the second class

    # what the config declares is what the graph takes and gives
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.shape[1:] == [h, w, 3]  # NHWC, matching order=1 with C;H;W infer-dims
    assert prop["output-blob-names"] == out.name

    # nvinfer's transform y = scale * (x - offset) applied to raw pixels reproduces the bundle's output
    x = np.random.default_rng(1).integers(0, 256, (2, h, w, 3)).astype(np.float32)
    offsets = np.array([float(v) for v in prop["offsets"].split(";")], dtype=np.float32)
    y = float(prop["net-scale-factor"]) * (x - offsets)
    from edgecat.runtime import open_runtime

    with open_runtime(bundle, "onnxruntime") as rt:
        np.testing.assert_allclose(sess.run(None, {inp.name: y})[0], rt.infer_raw(x), atol=1e-6)


def test_config_options_and_engine(tiny_bundle, tmp_path):
    from edgecat.export.fp16 import export_fp16

    bundle = Bundle.open(tiny_bundle)
    export_fp16(bundle, tolerance=0.05)
    engine = bundle.path / "model.testgpu-trt10.fp16.engine"
    engine.write_bytes(b"engine-bytes")
    bundle.add_artifact("trt-fp16", engine, format="tensorrt", precision="fp16")
    config = write_config(bundle, tmp_path / "ds", precision="fp16", batch_size=4)
    prop = read_property(config)
    assert prop["network-mode"] == "2"
    assert prop["batch-size"] == "4"
    assert (config.parent / prop["model-engine-file"]).read_bytes() == b"engine-bytes"
    # FP16 comes from the FP16 graph, as for edgecat's strongly typed engines (TensorRT 11 has no
    # FP16 builder flag for nvinfer's network-mode=2 to set on the FP32 graph)
    assert prop["onnx-file"] == "model.fp16.onnx"
    assert sha256_file(config.parent / prop["onnx-file"]) == bundle.artifacts["onnx-fp16"]["sha256"]


def _fake_int8(bundle: Bundle, batch_max: int = 8) -> Path:
    """An INT8 Q/DQ entry and an engine built from it, as `export --int8` then `--trt --precision int8`
    record them (the engine's bytes are a stand-in: no TensorRT here; nothing here opens it)."""
    import shutil

    shutil.copyfile(bundle.path / "model.onnx", bundle.path / "model.int8-trt.onnx")
    src = bundle.add_artifact("onnx-int8-trt", "model.int8-trt.onnx", format="onnx", precision="int8")
    engine = bundle.path / "model.orin-nvgpu-sm87-trt10.3.0.int8.engine"
    engine.write_bytes(b"int8-engine")
    bundle.add_artifact("trt-int8", engine.name, format="tensorrt", precision="int8", gpu="Orin (nvgpu)",
                        compute_capability="8.7", tensorrt_version="10.3.0", source="onnx-int8-trt",
                        source_sha256=src["sha256"], batch={"min": 1, "opt": batch_max, "max": batch_max})
    return engine


def test_int8_config_ships_the_engine_and_names_no_onnx(tiny_bundle, tmp_path):
    """nvinfer cannot build INT8 from the Q/DQ graph (no calibration file: FP16 fallback), so the INT8
    config runs the engine edgecat built and names no ONNX it could silently rebuild from."""
    bundle = Bundle.open(tiny_bundle)
    engine = _fake_int8(bundle)
    config = write_config(bundle, tmp_path / "ds", precision="int8", batch_size=4)
    prop = read_property(config)
    assert prop["network-mode"] == "1"
    assert (config.parent / prop["model-engine-file"]).read_bytes() == engine.read_bytes()
    assert "onnx-file" not in prop and "int8-calib-file" not in prop
    assert not (config.parent / "model.int8-trt.onnx").exists()
    header = config.read_text()
    assert "Orin (nvgpu) (sm87) with TensorRT 10.3.0: nvinfer cannot rebuild it" in header
    assert "--trt --precision int8" in header


def test_int8_config_without_a_fitting_engine_is_refused_with_the_command(tiny_bundle, tmp_path):
    import shutil

    bundle = Bundle.open(tiny_bundle)
    shutil.copyfile(bundle.path / "model.onnx", bundle.path / "model.int8-trt.onnx")
    bundle.add_artifact("onnx-int8-trt", "model.int8-trt.onnx", format="onnx", precision="int8")
    with pytest.raises(EdgecatError, match=r"nvinfer cannot build INT8 .* run `edgecat export .* --trt --precision int8`"):
        write_config(bundle, tmp_path / "ds", precision="int8")
    assert not (tmp_path / "ds").exists()
    _fake_int8(bundle, batch_max=2)
    with pytest.raises(EdgecatError, match=r"batch profile stops at 2, below batch-size 4; .*--batch 1,4,4`"):
        write_config(bundle, tmp_path / "ds", precision="int8", batch_size=4)
    (bundle.path / "model.int8-trt.onnx").write_bytes(b"re-calibrated")
    bundle.add_artifact("onnx-int8-trt", "model.int8-trt.onnx", format="onnx", precision="int8")
    with pytest.raises(EdgecatError, match=r"onnx-int8-trt changed since it was built; rebuild it"):
        write_config(bundle, tmp_path / "ds", precision="int8")
    assert not (tmp_path / "ds").exists()


def test_cli_writes_fp16_and_int8_deepstream_configs(tiny_bundle, tmp_path):
    """`--deepstream DIR --precision P` without --trt: one config per call, of that precision."""
    from click.testing import CliRunner

    from edgecat.cli import main

    res = CliRunner().invoke(main, ["export", str(tiny_bundle), "--fp16", "--fp16-tolerance", "0.05",
                                    "--deepstream", str(tmp_path / "ds16"), "--precision", "fp16"])
    assert res.exit_code == 0, res.output
    (config,) = (tmp_path / "ds16").glob("config_infer_primary_*.txt")
    prop = read_property(config)
    assert prop["network-mode"] == "2" and prop["onnx-file"] == "model.fp16.onnx"
    res = CliRunner().invoke(main, ["export", str(tiny_bundle), "--deepstream", str(tmp_path / "ds8"),
                                    "--precision", "int8"])
    assert res.exit_code != 0 and "nvinfer cannot build INT8" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "ds8").exists()
    res = CliRunner().invoke(main, ["export", str(tiny_bundle), "--deepstream", str(tmp_path / "ds"),
                                    "--precision", "fp16,int8"])
    assert res.exit_code != 0 and "one --precision" in res.output


def test_config_errors(tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle)
    with pytest.raises(EdgecatError, match="--int8"):
        write_config(bundle, tmp_path / "ds", precision="int8")  # no QDQ model exported yet
    with pytest.raises(EdgecatError, match="unknown precision"):
        write_config(bundle, tmp_path / "ds", precision="fp8")
    bundle.manifest["input"]["range"] = [-1.0, 1.0]
    with pytest.raises(EdgecatError, match="0-255"):
        write_config(bundle, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() or not list((tmp_path / "ds").glob("config_*.txt"))


def test_deepstream_and_triton_exports_run_without_tensorflow(tiny_bundle, tmp_path):
    """Both are written on the device side (a Jetson has no TensorFlow): block it and run them."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('tensorflow', 'keras', 'tf2onnx'): sys.modules[m] = None\n"
        "from edgecat.export.deepstream import write_config\n"
        "from edgecat.export.triton import write_repository\n"
        "import edgecat.runtime.triton.runner\n"
        f"print(write_config({str(tiny_bundle)!r}, {str(tmp_path / 'ds')!r}).name)\n"
        f"print(sorted(p.name for p in write_repository({str(tiny_bundle)!r}, {str(tmp_path / 'tr')!r}).iterdir()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "config_infer_primary_" in proc.stdout and "onnx-fp32" in proc.stdout


def test_engine_for_another_gpu_here_is_refused_for_int8(tiny_bundle, tmp_path, monkeypatch):
    """Where TensorRT and a GPU are present (the config is usually written on the DeepStream device),
    the INT8 engine must be the one built for them."""
    from edgecat.export import deepstream
    from edgecat.runtime.tensorrt.loader import EngineTarget

    bundle = Bundle.open(tiny_bundle)
    _fake_int8(bundle)
    monkeypatch.setattr(deepstream, "_here_target", lambda: EngineTarget("NVIDIA GeForce RTX 4090", "8.9", "10.3.0"))
    with pytest.raises(EdgecatError, match=r"built for Orin \(nvgpu\) \(sm87\), this machine has .* \(sm89\)"):
        write_config(bundle, tmp_path / "ds", precision="int8")
    monkeypatch.setattr(deepstream, "_here_target", lambda: EngineTarget("Orin (nvgpu)", "8.7", "10.3.0"))
    assert "model-engine-file" in read_property(write_config(bundle, tmp_path / "ds", precision="int8"))
