"""The GPU stack edgecat meets on a device, checked on a CPU: which TensorRT is refused, how a CUDA
runtime newer than the driver is reported, what the `tensorrt` extra installs, and which GPU bench
names. TensorRT, cuda-python and the driver exist on no machine here, so each is a stand-in module
or program that answers as the real one does (names and values from their headers)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from enum import IntEnum
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport pyproject installs there
    import tomli as tomllib

from conftest import has_gpu
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError

ROOT = Path(__file__).resolve().parents[1]


class cudaError_t(IntEnum):  # noqa: N801 - cuda-python's name; values from CUDA's driver_types.h
    cudaSuccess = 0
    cudaErrorInitializationError = 3
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


def _cudart(count_error: cudaError_t, count: int = 0, driver: int = 12060, runtime: int = 13000):
    """cuda-python's runtime module as it answers on a Jetson (driver for CUDA 12.6): the device count
    call fails with ``count_error``; the version calls work without a usable device."""
    ok = cudaError_t.cudaSuccess
    return SimpleNamespace(
        cudaError_t=cudaError_t,
        cudaGetDeviceCount=lambda: (count_error, count),
        cudaDriverGetVersion=lambda: (ok, driver),
        cudaRuntimeGetVersion=lambda: (ok, runtime),
        cudaGetErrorString=lambda err: (ok, b"initialization error"),
    )


def _tensorrt_module(version: str) -> ModuleType:
    trt = ModuleType("tensorrt")
    trt.__version__ = version
    return trt


def _bundle(tmp_path: Path) -> Bundle:
    return Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(32, 32),
                         classes=["cat", "dog"], preprocessing="tf")


def _install(monkeypatch, cudart: SimpleNamespace, trt_version: str = "10.3.0") -> None:
    """Put the stand-ins where ``import tensorrt`` and ``from cuda.bindings import runtime`` find them."""
    cuda, bindings = ModuleType("cuda"), ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, cudart
    for name, mod in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", cudart),
                      ("tensorrt", _tensorrt_module(trt_version))):
        monkeypatch.setitem(sys.modules, name, mod)


# ------------------------------------------------------------------------- cuda-python vs the driver
def test_tensorrt_extra_keeps_cuda_python_below_13():
    """cuda-python 13 needs driver 580+; JetPack 6 ships a 540-series driver (CUDA 12.2/12.6)."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["tensorrt"]
    (req,) = [Requirement(r) for r in extra if Requirement(r).name == "cuda-python"]
    assert not req.specifier.contains("13.0.0") and not req.specifier.contains("13.4.4")
    assert req.specifier.contains("12.6.2") and req.specifier.contains("12.2.1")


def test_runtime_newer_than_driver_is_named_with_the_cuda_python_that_fits(tmp_path, monkeypatch):
    """cudaErrorInsufficientDriver is not "no GPU": it names both CUDA versions and the pin to install."""
    from edgecat.runtime import open_runtime

    _install(monkeypatch, _cudart(cudaError_t.cudaErrorInsufficientDriver))
    with pytest.raises(EdgecatError) as info:
        open_runtime(_bundle(tmp_path), "tensorrt", "fp16")
    msg = str(info.value)
    assert "none is visible" not in msg and "\n" not in msg
    assert "cudaErrorInsufficientDriver" in msg
    assert "this NVIDIA driver (CUDA 12.6) is older than the CUDA 13.0 runtime that cuda-python" in msg
    assert 'pip install "cuda-python>=12.6,<12.7"' in msg


@pytest.mark.parametrize("error, count, want", [
    (cudaError_t.cudaErrorNoDevice, 0, "the tensorrt backend needs an NVIDIA GPU; none is visible here"),
    (cudaError_t.cudaSuccess, 0, "the tensorrt backend needs an NVIDIA GPU; none is visible here"),
    (cudaError_t.cudaErrorInitializationError, 0,
     "cannot use CUDA: CUDA error cudaErrorInitializationError: initialization error"),
])
def test_only_no_device_means_no_gpu(tmp_path, monkeypatch, error, count, want):
    from edgecat.runtime import open_runtime

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _install(monkeypatch, _cudart(error, count))
    with pytest.raises(EdgecatError) as info:
        open_runtime(_bundle(tmp_path), "tensorrt", "fp16")
    assert want in str(info.value)


def test_cuda_python_pin_follows_the_driver():
    from edgecat.runtime.cuda import cuda_python_pin

    assert cuda_python_pin((12, 2)) == "cuda-python>=12.2,<12.3"  # JetPack 6.0
    assert cuda_python_pin((12, 6)) == "cuda-python>=12.6,<12.7"  # JetPack 6.1 / 6.2
    req = Requirement(cuda_python_pin((12, 6)))
    assert req.specifier.contains("12.6.2") and not req.specifier.contains("12.8.0")
    assert not req.specifier.contains("12.4.0")


def test_gpu_stack_lines_end_in_ok_when_everything_fits(monkeypatch):
    """What the first-run checklist prints on a working device (stand-ins for TensorRT, cuda-python
    and, through nvidia-smi, the GPU)."""
    from edgecat.runtime import cuda

    _install(monkeypatch, _cudart(cudaError_t.cudaSuccess, count=1, runtime=12060))
    monkeypatch.setattr(cuda, "current_gpu", lambda device=0: ("Orin", "8.7"))
    monkeypatch.setattr(cuda, "cuda_python_version", lambda: "12.6.2.post1")
    assert cuda.gpu_stack() == ["TensorRT 10.3.0: ok", "GPU Orin, compute capability 8.7: ok",
                                "cuda-python 12.6.2.post1: CUDA 12.6 runtime, driver for CUDA 12.6, 1 device(s): ok"]
    _install(monkeypatch, _cudart(cudaError_t.cudaErrorInsufficientDriver), trt_version="8.6.2")
    lines = cuda.gpu_stack()
    assert lines[0].startswith("TensorRT 8.6.2 is too old") and "cudaErrorInsufficientDriver" in lines[2]


# ------------------------------------------------------------------------- TensorRT 8.6 (JetPack 6.0)
def test_tensorrt_8_is_refused_with_one_line_naming_what_works(monkeypatch):
    from edgecat.runtime.cuda import require_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", _tensorrt_module("8.6.2"))
    with pytest.raises(EdgecatError) as info:
        require_tensorrt()
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("TensorRT 8.6.2 is too old: edgecat builds strongly typed engines with TensorRT 10.x "
                          "or 11.x")
    assert "JetPack 6.1 and 6.2 ship TensorRT 10.3" in msg
    for ok in ("10.3.0", "10.16.1.11", "11.4.0.106"):
        monkeypatch.setitem(sys.modules, "tensorrt", _tensorrt_module(ok))
        assert require_tensorrt().__version__ == ok


def test_export_trt_with_tensorrt_8_fails_before_any_work(tmp_path):
    """`edgecat export B --trt` where `import tensorrt` gives 8.6.2: one error line, no traceback, and
    it says so before looking for a GPU (there is none here either)."""
    stand_in = tmp_path / "site" / "tensorrt"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text('__version__ = "8.6.2"\n')
    b = _bundle(tmp_path)
    (b.path / "model.onnx").write_bytes(b"onnx")
    b.add_artifact("onnx-fp32", "model.onnx", format="onnx", precision="fp32")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(ROOT)])}
    env.pop("COLUMNS", None)
    r = subprocess.run([sys.executable, "-m", "edgecat", "export", str(b.path), "--trt"], capture_output=True,
                       text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT 8.6.2 is too old"), r.stderr
    assert not list(b.path.glob("*.engine"))


# ------------------------------------------------------------------------- bench's machine line
NVIDIA_SMI = textwrap.dedent("""\
    #!/bin/sh
    # stand-in for nvidia-smi: "-i N --query-gpu=name,compute_cap --format=csv,noheader"
    case "$2" in
      0) echo "NVIDIA A100-SXM4-40GB, 8.0" ;;
      1) echo "NVIDIA GeForce RTX 4090, 8.9" ;;
      *) echo "No devices were found" >&2; exit 6 ;;
    esac
""")


@pytest.mark.skipif(has_gpu(), reason="a real driver here answers before the stand-in nvidia-smi")
def test_bench_names_the_gpu_the_runtimes_were_given(tiny_bundle, tmp_path, monkeypatch):
    from edgecat.bench import BenchConfig, run_bench

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = BenchConfig(backends=["onnxruntime"], batches=[1], warmup=0, iters=1, end_to_end=False,
                      options={"device": 1})
    assert run_bench(tiny_bundle, cfg).machine["gpu"] == "NVIDIA GeForce RTX 4090 8.9"
    cfg.options = {}
    assert run_bench(tiny_bundle, cfg).machine["gpu"] == "NVIDIA A100-SXM4-40GB 8.0"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what --device 1 sets: ordinal 0 is physical GPU 1
    assert run_bench(tiny_bundle, cfg).machine["gpu"] == "NVIDIA GeForce RTX 4090 8.9"
