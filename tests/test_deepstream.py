"""DeepStream nvinfer config (`export --deepstream`): keys and values checked against the bundle."""

from __future__ import annotations

import configparser

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
    bundle = Bundle.open(tiny_bundle)
    engine = bundle.path / "model.testgpu-trt10.fp16.engine"
    engine.write_bytes(b"engine-bytes")
    bundle.add_artifact("trt-fp16", engine, format="tensorrt", precision="fp16")
    config = write_config(bundle, tmp_path / "ds", precision="fp16", batch_size=4)
    prop = read_property(config)
    assert prop["network-mode"] == "2"
    assert prop["batch-size"] == "4"
    assert (config.parent / prop["model-engine-file"]).read_bytes() == b"engine-bytes"
    # FP16 engines are built by TensorRT from the FP32 graph
    assert sha256_file(config.parent / prop["onnx-file"]) == bundle.artifacts["onnx-fp32"]["sha256"]


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
