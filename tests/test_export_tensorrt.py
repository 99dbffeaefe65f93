"""TensorRT engine naming/compatibility (pure Python), the ONNX-only bundle path without TensorFlow
(a Jetson), and engine builds where a GPU with TensorRT is present (marked gpu)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import TRT_ENUMS, has_gpu, needs_tf
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


# ---------------------------------------------------------------------- builder settings (no GPU)
def _stand_in_trt(major: str = "10"):
    """The few documented names build settings touch (tensorrt.BuilderFlag, MemoryPoolType,
    NetworkDefinitionCreationFlag) with the values of TensorRT ``major``, recording calls: TensorRT
    itself exists on no machine here."""
    from enum import IntEnum
    from types import SimpleNamespace

    enums = TRT_ENUMS[major]
    calls: list[tuple] = []
    config = SimpleNamespace(set_memory_pool_limit=lambda *a: calls.append(("pool", *a)),
                             set_flag=lambda f: calls.append(("set", f)),
                             clear_flag=lambda f: calls.append(("clear", f)))
    trt = SimpleNamespace(__version__={"8": "8.6.2", "10": "10.3.0", "11": "11.4.0"}[major],
                          BuilderFlag=IntEnum("BuilderFlag", enums["BuilderFlag"]),
                          MemoryPoolType=SimpleNamespace(WORKSPACE=0),
                          NetworkDefinitionCreationFlag=IntEnum("NDCF", enums["NetworkDefinitionCreationFlag"]))
    return trt, config, calls


@pytest.mark.parametrize("major, bit", [("10", 1), ("11", 0)])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builds_are_strongly_typed_with_no_precision_flags_and_fp32_without_tf32(precision, major, bit):
    trt, config, calls = _stand_in_trt(major)
    assert trtx.network_flags(trt) == 1 << bit  # STRONGLY_TYPED, read from the enum of this TensorRT
    trtx.configure(trt, config, precision, 0.5)
    assert not [c for c in calls if c[0] == "set"]  # never FP16/INT8 flags (gone in 11)
    cleared = [c[1] for c in calls if c[0] == "clear"]
    assert cleared == ([trt.BuilderFlag.TF32] if precision == "fp32" else [])
    assert ("pool", 0, 1 << 29) in calls


def test_tensorrt_8_network_without_strong_typing_is_refused():
    """TensorRT 8.6 (JetPack 6.0) has no STRONGLY_TYPED: flags 0 would be an implicit-batch network and
    FP16/INT8 engines without their precision."""
    trt, _, _ = _stand_in_trt("8")
    with pytest.raises(EdgecatError, match=r"TensorRT 8\.6\.2 is too old: .*TensorRT 10\.x or 11\.x"):
        trtx.network_flags(trt)


def test_int8_engine_source_must_follow_tensorrt_rules(tmp_path):
    """An INT8 file made by an older edgecat (int32 bias DequantizeLinear) is refused before the
    build, with the command that re-makes it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(8, 8),
                      classes=["cat", "dog"], preprocessing="tf")
    bias = helper.make_node("DequantizeLinear", ["b32", "bs"], ["b"], name="bias_dq")
    conv = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")
    g = helper.make_graph([bias, conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 8, 8])],
                          [numpy_helper.from_array(np.ones(2, np.int32), "b32"),
                           numpy_helper.from_array(np.float32(0.1), "bs"),
                           numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "b" / "m.onnx"))
    b.add_artifact("onnx-int8-trt", "m.onnx", format="onnx", precision="int8")
    with pytest.raises(EdgecatError, match=r"dq-int8-input.*re-make it with `edgecat export .* --int8"):
        trtx._source_for(b, "int8")


@pytest.mark.skipif(has_gpu(), reason="this machine has a GPU")
def test_target_check_names_the_selected_device():
    with pytest.raises(EdgecatError, match="no CUDA device 3"):
        trtx.current_gpu(3)


@needs_tf
def test_ort_tensorrt_ep_refuses_cpu_int8_and_keys_its_cache_on_content(tiny_bundle, synth_data):
    from edgecat.export.quantize import quantize_int8
    from edgecat.runtime.onnxruntime.runner import OnnxRuntimeTensorRT

    def runtime(precision):  # the provider itself is absent here: exercise the artifact/cache choice
        rt = OnnxRuntimeTensorRT.__new__(OnnxRuntimeTensorRT)
        rt.bundle, rt.precision, rt.options = Bundle.open(tiny_bundle), precision, {}
        return rt

    quantize_int8(Bundle.open(tiny_bundle), "cpu", calib=synth_data / "train", calib_size=16)
    with pytest.raises(EdgecatError, match="model.int8.onnx is the CPU flavour and TensorRT cannot build it"):
        runtime("int8").artifact_for("int8")
    quantize_int8(Bundle.open(tiny_bundle), "trt", calib=synth_data / "train", calib_size=16)
    first = runtime("int8").engine_cache_dir()
    assert runtime("int8").artifact_for("int8") == "onnx-int8-trt"
    assert first.name.startswith(Bundle.open(tiny_bundle).artifacts["onnx-int8-trt"]["sha256"][:16] + "-")
    quantize_int8(Bundle.open(tiny_bundle), "trt", calib=synth_data / "train", calib_size=20)  # re-calibrated
    assert runtime("int8").engine_cache_dir() != first
    assert runtime("fp32").engine_cache_dir() != first


@pytest.mark.parametrize("precision, fp16, int8", [("fp32", False, False), ("fp16", True, True),
                                                  ("int8", True, True)])
def test_ort_tensorrt_ep_options_carry_the_batch_profile_and_precision(tmp_path, precision, fp16, int8):
    """The provider options built for each precision (a pure function): an explicit profile so one
    engine serves batch 1..max (no rebuild per new batch size), FP16 kernels allowed for INT8's
    unquantized layers, FP32 with neither flag and TF32 off (the provider has no TF32 option)."""
    from edgecat.runtime.onnxruntime.runner import tensorrt_ep_environment, tensorrt_ep_options

    opts = tensorrt_ep_options(precision, "image", (224, 224, 3), (1, 8, 32), tmp_path / "trt_cache" / "x")
    assert opts["trt_profile_min_shapes"] == "image:1x224x224x3"
    assert opts["trt_profile_opt_shapes"] == "image:8x224x224x3"
    assert opts["trt_profile_max_shapes"] == "image:32x224x224x3"
    assert opts["trt_fp16_enable"] is (precision != "fp32")
    assert opts["trt_int8_enable"] is (precision == "int8")
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "trt_cache" / "x")
    assert tensorrt_ep_environment(precision) == ({"NVIDIA_TF32_OVERRIDE": "0"} if precision == "fp32" else {})


def test_ort_tensorrt_ep_profile_follows_the_bundle_and_refuses_a_larger_batch(tmp_path):
    from edgecat.runtime.onnxruntime.runner import OnnxRuntimeTensorRT

    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(48, 64),
                      classes=["cat", "dog"], preprocessing="tf")
    (tmp_path / "b" / "model.onnx").write_bytes(b"onnx")
    b.add_artifact("onnx-fp32", "model.onnx", format="onnx", precision="fp32", input="image")
    rt = OnnxRuntimeTensorRT.__new__(OnnxRuntimeTensorRT)  # the provider itself is absent here
    rt.bundle, rt.precision, rt.options = b, "fp32", {"batch": "1,4,16"}
    name, opts = rt.provider_options()[0]
    assert name == "TensorrtExecutionProvider"
    assert (opts["trt_profile_min_shapes"], opts["trt_profile_max_shapes"]) == ("image:1x48x64x3", "image:16x48x64x3")
    default = OnnxRuntimeTensorRT.__new__(OnnxRuntimeTensorRT)
    default.bundle, default.precision, default.options = b, "fp32", {}
    assert default.provider_options()[0][1]["trt_profile_max_shapes"] == "image:32x48x64x3"
    assert default.engine_cache_dir() != rt.engine_cache_dir()  # another profile: another engine
    rt.max_batch = 16
    with pytest.raises(EdgecatError, match="batch 17 exceeds the onnxruntime-trt profile's maximum 16"):
        rt._run(np.zeros((17, 48, 64, 3), np.float32))


# ---------------------------------------------------------------------- real TensorRT (GPU only)
SHARED = Path(os.environ.get("EDGECAT_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")
NEEDS_TRT_GPU = pytest.mark.skipif(not (HAS_TRT and has_gpu()), reason="needs TensorRT and an NVIDIA GPU")
#: engine profile for the GPU tests: its max batch is the largest batch the tests feed
PROFILE = (1, 8, 16)


def _images(size: tuple[int, int], n: int = 16) -> np.ndarray:
    """Real validation photos where ../shared is, synthetic otherwise."""
    from edgecat import imaging

    folder = SHARED / "data" / "cats-vs-dogs" / "validation"
    if folder.is_dir():
        files = imaging.list_images([folder])
        files = [files[i] for i in np.random.default_rng(0).choice(len(files), n, replace=False)]
        return np.stack([imaging.load_for_model(f, size) for f in files]).astype(np.float32)
    return np.random.default_rng(0).integers(0, 256, (n, *size, 3)).astype(np.float32)


@pytest.fixture
def engine_bundle(request, tmp_path, synth_data):
    """A bundle of the parametrized backbone with FP32/FP16/INT8-trt ONNX: EDGECAT_TEST_BUNDLE(_RESNET50)
    when set (GPU boxes without TensorFlow), else built here (MobileNetV2 48 px, ResNet50 64 px)."""
    import shutil

    from edgecat.export.fp16 import export_fp16
    from edgecat.export.quantize import quantize_int8

    backbone = request.param
    env = os.environ.get("EDGECAT_TEST_BUNDLE" + ("_RESNET50" if backbone == "resnet50" else ""))
    if env:
        root = tmp_path / "bundle"
        shutil.copytree(env, root)
    elif backbone == "mobilenet_v2":
        root = request.getfixturevalue("tiny_bundle")
    else:
        pytest.importorskip("tensorflow")
        from conftest import _make_bundle

        root = _make_bundle(tmp_path / "r50", "resnet50", 64, synth_data, onnx=True)
    b = Bundle.open(root)
    calib = SHARED / "data" / "cats-vs-dogs" / "train"
    quantize_int8(b, "trt", calib=calib if calib.is_dir() else synth_data / "train", calib_size=32)
    export_fp16(b, tolerance=0.05)
    return Bundle.open(root)


@pytest.mark.gpu
@NEEDS_TRT_GPU
@pytest.mark.parametrize("engine_bundle", ["mobilenet_v2", "resnet50"], indirect=True)
def test_engines_build_and_match_onnxruntime(engine_bundle):
    """FP32, FP16 and INT8 engines of both backbones, strongly typed, each against what ONNX Runtime
    computes from the file it was built from, on a batch the profile allows (16 <= max 16)."""
    from edgecat.export.fp16 import fp16_parity
    from edgecat.export.onnx import onnx_outputs
    from edgecat.export.trt_rules import check_tensorrt_onnx
    from edgecat.runtime import open_runtime

    b = engine_bundle
    assert check_tensorrt_onnx(b.artifact_path("onnx-int8-trt")) == []
    built = trtx.build_engines(b, ["fp32", "fp16", "int8"], batch=PROFILE, workspace_gb=1.0)
    target = trtx.current_target()
    b = Bundle.open(b.path)
    x = _images(b.input_size, PROFILE[2])
    ref32 = b.class_probs(onnx_outputs(b.artifact_path("onnx-fp32"), x))
    for e in built:
        entry = b.artifacts[e.key]
        assert e.file == trtx.engine_filename(target, e.precision) and entry["mode"] == "strongly-typed"
        assert entry["source"] == trtx.SOURCE[e.precision] and entry["tf32"] == (e.precision != "fp32")
        assert entry["batch"] == {"min": 1, "opt": 8, "max": 16}
        assert entry["parity"]["label_agreement"] >= 0.9  # recorded by build_engines, in allowed batches
        with open_runtime(b, "tensorrt", e.precision, cuda_graph=False) as rt:
            assert rt.max_batch == PROFILE[2]
            got = rt.infer(x)
        if e.precision == "fp32":  # TF32 off: FP32 means FP32
            assert np.max(np.abs(got - ref32)) <= 1e-3
        elif e.precision == "fp16":
            fp16_parity(b, ref32, got, "the FP16 engine", tolerance=0.05)  # raises past the logit bound
        else:  # INT8: the same Q/DQ arithmetic ONNX Runtime simulates (accumulation order aside)
            sim = b.class_probs(onnx_outputs(b.artifact_path("onnx-int8-trt"), x, simulate_qdq=True))
            agree = np.mean(np.argmax(sim, 1) == np.argmax(got, 1))
            assert agree >= 0.9 and np.mean(np.abs(sim - got)) <= 0.05, (agree, np.abs(sim - got).mean())
    with open_runtime(b, "tensorrt", "fp32") as rt:
        with pytest.raises(EdgecatError, match="exceeds the engine's maximum 16"):
            rt.infer(np.concatenate([x, x[:1]]))
    assert list(b.path.glob("timing.*.cache"))


@pytest.mark.gpu
@NEEDS_TRT_GPU
@pytest.mark.parametrize("engine_bundle", ["mobilenet_v2"], indirect=True)
def test_cuda_graph_path_matches_plain_enqueue_across_batch_sizes(engine_bundle):
    """One graph per context, re-captured whenever the batch size changes (also back to an earlier
    size: a graph kept from before would replay kernels set up for another shape)."""
    from edgecat.runtime import open_runtime

    b = engine_bundle
    trtx.build_engines(b, ["fp16"], batch=PROFILE, workspace_gb=1.0)
    b = Bundle.open(b.path)
    x = _images(b.input_size, PROFILE[2])
    sizes = (1, 4, 16, 4, 4, 1)
    with open_runtime(b, "tensorrt", "fp16", cuda_graph=True) as graph, \
            open_runtime(b, "tensorrt", "fp16", cuda_graph=False) as plain:
        for n in sizes:
            g, p = graph.infer(x[:n]), plain.infer(x[:n])
            assert g.shape == p.shape == (n, 2)
            np.testing.assert_allclose(g, p, atol=1e-5)
        assert graph.use_graph, "capture failed (see the warning logged with the CUDA error)"
        assert graph.graph_captures == 5  # 1, 4, 16, 4, (4 replayed), 1
        assert plain.graph_captures == 0
