"""Triton model repository (`export --triton`) and the Triton runtime (`bench --backend triton`).

The repository is checked against Triton's own ModelConfig schema (tritonclient ships it) and
against ONNX Runtime's view of the exported graph. Tests marked `triton` talk to a real server named
by EDGECAT_TRITON_URL and are skipped where none answers; nothing here fakes a server.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.export.triton import model_name, write_repository
from edgecat.fsutil import sha256_file

text_format = pytest.importorskip("google.protobuf.text_format")


def _model_config_schema():
    """Triton's ModelConfig protobuf module. Every tritonclient wheel ships it under
    tritonclient/grpc/, but that package's __init__ needs grpcio ([grpc] extra): without it, load
    the generated module by path (it only needs protobuf)."""
    import importlib.util

    try:
        from tritonclient.grpc import model_config_pb2

        return model_config_pb2
    except ImportError:
        pytest.skip("tritonclient is not installed (pip install 'edgecat[triton]')")
    except RuntimeError:  # tritonclient without grpcio
        spec = importlib.util.find_spec("tritonclient")
        path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
        mod_spec = importlib.util.spec_from_file_location("edgecat_test_model_config_pb2", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
        return module


model_config_pb2 = _model_config_schema()


def parse_config(path: Path):
    """Parse config.pbtxt strictly: an unknown field or bad enum raises ParseError."""
    return text_format.Parse(path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())


def _add_fake_engine(bundle: Bundle, max_batch: int = 8) -> str:
    """A TensorRT-engine artifact entry (bytes are not a real engine: only the repository layout
    and config are checked here; loading plans is a GPU test of the TensorRT exporter)."""
    path = bundle.path / "model.testgpu-sm89-trt10.8.0.fp16.engine"
    path.write_bytes(b"not-a-real-engine")
    key = "trt-fp16"  # as edgecat.export.tensorrt records engines
    bundle.add_artifact(key, path, format="tensorrt", precision="fp16", gpu="TestGPU",
                        tensorrt_version="10.8.0", batch={"min": 1, "opt": 4, "max": max_batch})
    return key


def test_repository_config_parses_and_matches_the_onnx_graph(tiny_bundle, tmp_path):
    import onnxruntime as ort

    bundle = Bundle.open(tiny_bundle)
    repo = write_repository(bundle, tmp_path / "repo", max_batch=16)
    name = model_name(bundle, "onnx-fp32")
    model_dir = repo / name
    assert sorted(p.name for p in repo.iterdir()) == [name]  # keras is not servable: one model

    cfg = parse_config(model_dir / "config.pbtxt")
    assert cfg.name == name
    assert cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 16
    assert cfg.HasField("dynamic_batching")
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_AUTO
    (inp,), (out,) = cfg.input, cfg.output
    assert inp.data_type == model_config_pb2.TYPE_FP32 and out.data_type == model_config_pb2.TYPE_FP32
    assert list(inp.dims) == [48, 48, 3]
    assert list(out.dims) == [1]  # binary: one sigmoid output
    assert (model_dir / out.label_filename).read_text().split() == ["dog"]

    # the served file is the bundle's file, byte for byte, and its I/O is what the config says
    onnx_file = model_dir / "1" / "model.onnx"
    assert sha256_file(onnx_file) == bundle.artifacts["onnx-fp32"]["sha256"]
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (gin,), (gout,) = sess.get_inputs(), sess.get_outputs()
    assert gin.name == inp.name and gin.shape[1:] == list(inp.dims)
    assert gout.name == out.name and gout.shape[1:] == list(out.dims)
    assert gin.type == "tensor(float)"


def test_repository_serves_engines_as_tensorrt_plans(tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle)
    key = _add_fake_engine(bundle, max_batch=8)
    repo = write_repository(bundle, tmp_path / "repo", max_batch=32)
    model_dir = repo / model_name(bundle, key)
    cfg = parse_config(model_dir / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan"
    assert (model_dir / "1" / "model.plan").read_bytes() == b"not-a-real-engine"
    assert cfg.max_batch_size == 8  # capped at the engine profile's max batch
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert "10.8.0" in (model_dir / "config.pbtxt").read_text()  # says which TensorRT can load it
    assert (repo / model_name(bundle, "onnx-fp32") / "1" / "model.onnx").exists()


def test_rewrite_keeps_other_models_and_options_apply(tiny_bundle, tmp_path):
    repo = tmp_path / "repo"
    other = repo / "someone-elses-model"
    other.mkdir(parents=True)
    (other / "config.pbtxt").write_text('name: "someone-elses-model"\n')
    bundle = Bundle.open(tiny_bundle)
    write_repository(bundle, repo, max_batch=4, instance_kind="cpu", instances=2)
    write_repository(bundle, repo, max_batch=4, instance_kind="cpu", instances=2)  # idempotent
    assert (other / "config.pbtxt").exists()
    cfg = parse_config(repo / model_name(bundle, "onnx-fp32") / "config.pbtxt")
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert cfg.instance_group[0].count == 2
    assert not [p for p in repo.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_repository_refuses_bad_input(tiny_bundle, tmp_path):
    bundle = Bundle.open(tiny_bundle)
    with pytest.raises(EdgecatError, match="max-batch"):
        write_repository(bundle, tmp_path / "r0", max_batch=0)
    # a model that no longer matches the manifest is never published
    (tiny_bundle / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(EdgecatError, match="sha256"):
        write_repository(Bundle.open(tiny_bundle), tmp_path / "r1")
    assert not (tmp_path / "r1" / model_name(bundle, "onnx-fp32")).exists()
    bundle = Bundle.open(tiny_bundle)
    bundle.remove_artifact("onnx-fp32")
    with pytest.raises(EdgecatError, match="--onnx"):
        write_repository(bundle, tmp_path / "r2")


def test_model_name_is_path_and_url_safe(tiny_bundle):
    bundle = Bundle.open(tiny_bundle)
    bundle.manifest["name"] = "cats / dogs v2"
    assert model_name(bundle, "onnx-int8") == "cats_dogs_v2-onnx-int8"


# ------------------------------------------------------------------ runtime without a server
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_runtime_says_clearly_when_no_server_answers(tiny_bundle):
    from edgecat.runtime.triton.runner import TritonRuntime

    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(EdgecatError, match=r"Triton server at 127\.0\.0\.1:\d+ does not answer"):
        TritonRuntime(Bundle.open(tiny_bundle), url=url, timeout=2)


def test_runtime_without_tritonclient(tiny_bundle, monkeypatch):
    from edgecat.runtime.triton.runner import TritonRuntime

    monkeypatch.setitem(sys.modules, "tritonclient.http", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"edgecat\[triton\]"):
        TritonRuntime(Bundle.open(tiny_bundle), url="localhost:1")


# ------------------------------------------------------------------ against a real Triton server
TRITON_URL = os.environ.get("EDGECAT_TRITON_URL")


def _server_answers(url: str | None) -> bool:
    if not url:
        return False
    try:
        import tritonclient.http as httpclient

        from edgecat.runtime.triton.runner import server_url

        return bool(httpclient.InferenceServerClient(url=server_url(url), connection_timeout=3).is_server_live())
    except Exception:  # noqa: BLE001
        return False


needs_triton = pytest.mark.skipif(not _server_answers(TRITON_URL),
                                  reason="no Triton server answers at EDGECAT_TRITON_URL")


@pytest.mark.triton
@needs_triton
def test_served_model_matches_onnxruntime(tiny_bundle, tmp_path):
    """Upload the tiny model to the server (explicit model-control mode, as deploy/triton runs it)
    and check the served probabilities against ONNX Runtime on the same images."""
    import tritonclient.http as httpclient
    from google.protobuf import json_format

    from edgecat.runtime import open_runtime
    from edgecat.runtime.triton.runner import TritonRuntime, server_url

    bundle = Bundle.open(tiny_bundle)
    bundle.manifest["name"] = f"edgecat-test-{os.getpid()}"
    repo = write_repository(bundle, tmp_path / "repo", max_batch=4)
    name = model_name(bundle, "onnx-fp32")
    cfg = parse_config(repo / name / "config.pbtxt")
    client = httpclient.InferenceServerClient(url=server_url(TRITON_URL))
    try:
        client.load_model(
            name,
            config=json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
            files={"file:1/model.onnx": (repo / name / "1" / "model.onnx").read_bytes()},
        )
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"server does not accept model uploads (start it in explicit mode): {exc}")
    try:
        batch = np.random.default_rng(0).uniform(0, 255, (6, 48, 48, 3)).astype(np.float32)
        with open_runtime(bundle, "onnxruntime") as local:
            want = local.infer(batch)
        with TritonRuntime(bundle, url=TRITON_URL) as served:
            assert served.model_name == name
            got = served.infer(batch)  # 6 > max_batch 4: sent as two requests
            assert served.last_inference_ms > 0
        assert got.shape == want.shape == (6, 2)
        np.testing.assert_allclose(got, want, atol=1e-4)
    finally:
        client.unload_model(name)


def test_repository_leaves_out_a_deleted_artifact(tiny_bundle, tmp_path):
    """A listed file deleted to save space (``missing``) is skipped, not fatal to the repository."""
    bundle = Bundle.open(tiny_bundle)
    key = _add_fake_engine(bundle)
    bundle.artifact_path(key).unlink()
    repo = write_repository(Bundle.open(tiny_bundle), tmp_path / "repo", max_batch=8)
    assert sorted(p.name for p in repo.iterdir()) == [model_name(bundle, "onnx-fp32")]
