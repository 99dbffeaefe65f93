"""Every CPU runtime gives Keras' probabilities on the same images, within its precision's tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import has_gpu, has_onnxruntime_cuda, needs_tf
from edgecat import imaging
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.runtime import BACKENDS, default_backend, open_runtime


def _batch(files) -> np.ndarray:
    """The tiny bundle's input: 48 px uint8 RGB through the deployment image path."""
    return imaging.to_batch([imaging.load_for_model(f, (48, 48)) for f in files], dtype="uint8")


@pytest.fixture(scope="module")
def images(synth_data) -> np.ndarray:
    return _batch(imaging.list_images([synth_data / "validation"])[:6])


def _keras_and_onnx(bundle, batch: np.ndarray, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Keras' probabilities and the ``onnx-<precision>`` artifact's on the same batch."""
    with open_runtime(bundle, "keras") as rt:
        ref = rt.infer(batch)
    with open_runtime(bundle, "onnxruntime", precision, threads=1) as rt:
        got = rt.infer(batch)
        assert rt.artifact_key == f"onnx-{precision}"
        assert rt.model_bytes > 0
    return ref, got


@pytest.fixture(scope="module")
def quantized_bundle(tiny_bundle_src, synth_data, tmp_path_factory):
    """A private bundle with onnx-int8 (CPU flavour) and onnx-fp16 made by the export functions."""
    import shutil

    from edgecat.export.fp16 import export_fp16
    from edgecat.export.quantize import quantize_int8

    dst = tmp_path_factory.mktemp("rt") / "bundle"
    shutil.copytree(tiny_bundle_src, dst)
    bundle = Bundle.open(dst)
    quantize_int8(bundle, "cpu", calib=synth_data / "train", calib_size=16)
    export_fp16(bundle, tolerance=0.05)  # untrained random weights: fp16 drifts a little more
    return dst


@needs_tf
def test_cpu_runtimes_match_keras(tiny_bundle, images):
    with open_runtime(tiny_bundle, "keras-predict") as ref_rt:
        ref = ref_rt.infer(images)
        assert ref_rt.last_inference_ms > 0
    assert ref.shape == (len(images), 2)
    assert np.allclose(ref.sum(axis=1), 1.0, atol=1e-5)
    assert ref[:, 1].std() > 1e-4  # outputs vary with the input, so parity is not vacuous
    for backend in ("keras", "onnxruntime"):
        with open_runtime(tiny_bundle, backend) as rt:
            got = rt.infer(images)
            got_float = rt.infer(images.astype(np.float32))
        np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=backend)
        np.testing.assert_allclose(got_float, got, atol=1e-6)


@needs_tf
def test_fp16_onnx_close_to_keras(quantized_bundle, images):
    ref, got = _keras_and_onnx(quantized_bundle, images, "fp16")
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 5e-2


@needs_tf
def test_int8_onnx_tracks_keras(quantized_bundle, synth_data):
    """INT8 of a random-weight model is judged on all 48 synthetic images by how well it follows
    Keras, not by a max difference: over eight weight seeds the max ranged 0.15-0.31 with the
    quantizer working, so a max bound is either flaky or too loose to catch anything. A broken
    quantization (measured: calibration images at 2% brightness, ranges far from deployment's)
    flattens the output: std ratio <= 0.20, correlation NaN to 0.12, mean |diff| 0.09-0.34, against
    0.84-1.12, 0.59-0.88 and 0.05-0.08 when it works."""
    batch = _batch(imaging.list_images([synth_data / "train", synth_data / "validation"]))
    ref, got = (p[:, 1] for p in _keras_and_onnx(quantized_bundle, batch, "int8"))
    assert len(got) == len(batch) == 48
    assert ref.std() > 0.02  # Keras' outputs vary, so tracking them means something
    assert got.std() / ref.std() >= 0.5
    assert np.corrcoef(got, ref)[0, 1] >= 0.4
    assert np.abs(got - ref).mean() <= 0.12


@needs_tf
def test_single_image_and_default_backend(tiny_bundle, images):
    bundle = Bundle.open(tiny_bundle)
    assert default_backend(bundle) == "auto"  # a measured choice once the bundle has exports
    with open_runtime(bundle) as rt:
        one = rt.infer(images[0])  # (H, W, 3) is treated as a batch of one
        assert one.shape == (1, 2)
        assert np.isfinite(rt.last_inference_ms)


@needs_tf
def test_errors_are_one_line(tiny_bundle):
    with pytest.raises(EdgecatError, match="unknown backend 'nope'"):
        open_runtime(tiny_bundle, "nope")
    with pytest.raises(EdgecatError, match="unknown precision"):
        open_runtime(tiny_bundle, "onnxruntime", "int4")
    with pytest.raises(EdgecatError, match="needs onnx-int8.*edgecat export .* --int8 --calib DIR"):
        open_runtime(tiny_bundle, "onnxruntime", "int8")
    with pytest.raises(EdgecatError, match="fp32 only"):
        open_runtime(tiny_bundle, "keras", "fp16")


def test_every_backend_name_opens_the_runtime_of_that_name():
    """Each registered name imports (without its library: those load when a runtime opens) to the
    Runtime subclass that reports that backend in every result."""
    from edgecat.runtime import runtime_class
    from edgecat.runtime.base import Runtime

    assert {"onnxruntime", "tensorrt", "triton", "openvino", "litert", "keras"} <= set(BACKENDS)
    for name in BACKENDS:
        cls = runtime_class(name)
        assert issubclass(cls, Runtime) and cls.backend == name, (name, cls)


@needs_tf
@pytest.mark.skipif(has_gpu(), reason="checks the message on a machine without a GPU")
def test_gpu_backends_without_gpu_say_so(tiny_bundle):
    with pytest.raises(EdgecatError, match="CUDAExecutionProvider") as exc:
        open_runtime(tiny_bundle, "onnxruntime-cuda")
    assert "\n" not in str(exc.value)
    with pytest.raises(EdgecatError) as exc:
        open_runtime(tiny_bundle, "tensorrt", "fp16")
    assert "\n" not in str(exc.value)
    assert "TensorRT" in str(exc.value) or "GPU" in str(exc.value) or "cuda" in str(exc.value)


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return False
    return has_gpu()


@pytest.mark.gpu
@pytest.mark.skipif(not _has_tensorrt(), reason="needs TensorRT and an NVIDIA GPU")
@pytest.mark.parametrize("graph", [True, False])
def test_tensorrt_matches_onnxruntime(onnx_bundle, images, graph):
    from edgecat.export.tensorrt import build_engine

    bundle = Bundle.open(onnx_bundle)
    build_engine(bundle, "fp32")
    with open_runtime(bundle, "onnxruntime") as rt:
        ref = rt.infer(images)
    with open_runtime(bundle, "tensorrt", "fp32", cuda_graph=graph) as rt:
        got1 = rt.infer(images[:1])
        got = rt.infer(images)
        again = rt.infer(images[:1])  # a second graph / shape change replays correctly
    np.testing.assert_allclose(got, ref, atol=1e-3)
    np.testing.assert_allclose(got1, ref[:1], atol=1e-3)
    np.testing.assert_allclose(again, got1, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not has_onnxruntime_cuda(), reason="needs ONNX Runtime with CUDA and a GPU")
def test_onnxruntime_cuda_matches_cpu(onnx_bundle, images):
    with open_runtime(onnx_bundle, "onnxruntime") as rt:
        ref = rt.infer(images)
    with open_runtime(onnx_bundle, "onnxruntime-cuda") as rt:
        got = rt.infer(images)
    np.testing.assert_allclose(got, ref, atol=1e-3)
