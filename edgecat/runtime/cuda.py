"""The GPU and CUDA as every GPU backend sees them: TensorRT import, device probing (driver API, then
nvidia-smi) and cuda-python's runtime API. Used by the TensorRT and ONNX Runtime runtimes, the engine
build, bench's machine line, ``edgecat check`` and the tests' GPU markers; imports nothing heavy."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from typing import Any

from edgecat.errors import EdgecatError, MissingDependencyError


def require_tensorrt() -> Any:
    """Import tensorrt or fail with one line saying how to get it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); on a "
            "desktop GPU: pip install tensorrt"
        ) from exc
    except OSError as exc:  # the wheel is there but libnvinfer/CUDA libraries are not
        raise MissingDependencyError(f"TensorRT cannot load its libraries: {exc}") from exc
    return trt


def _gpu_from_driver(device: int = 0) -> tuple[str, str] | None:
    """Name and compute capability of CUDA device ``device`` (an ordinal among the visible devices,
    as the runtime's ``cudaSetDevice`` uses) through the CUDA driver API (libcuda, also on Jetson)."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return None
    dev = ctypes.c_int()
    count = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= device:
        return None
    if cuda.cuDeviceGet(ctypes.byref(dev), device) != 0:
        return None
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    return name.value.decode(errors="replace").strip(), f"{major.value}.{minor.value}"


def _gpu_from_nvidia_smi(device: int = 0) -> tuple[str, str] | None:
    """nvidia-smi numbers GPUs physically; CUDA_VISIBLE_DEVICES maps the runtime's ordinal to one."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and device >= len(visible):
        return None
    ident = visible[device] if visible else str(device)
    try:
        out = subprocess.run([exe, "-i", ident, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    if "," not in line:
        return None
    name, cc = (s.strip() for s in line.rsplit(",", 1))
    return name, cc


def current_gpu(device: int = 0) -> tuple[str, str]:
    """(name, compute capability) of CUDA device ``device``, or an EdgecatError when there is none."""
    found = _gpu_from_driver(device) or _gpu_from_nvidia_smi(device)
    if not found:
        what = ("none was found here (no CUDA driver/device)" if device == 0
                else f"there is no CUDA device {device} here")
        raise EdgecatError(f"TensorRT needs an NVIDIA GPU and {what}")
    return found


def import_cudart() -> Any:
    """cuda-python's runtime API module, whichever layout the installed version has."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise MissingDependencyError(
                "the tensorrt backend needs cuda-python for CUDA streams and buffers: "
                "pip install cuda-python (on a Jetson: the version matching JetPack's CUDA)"
            ) from exc
    return cudart


def device_memory_used(cudart: Any) -> int:
    """Bytes in use on the current CUDA device (all processes), for bench's GPU memory column."""
    free, total = cuda_check(cudart.cudaMemGetInfo())
    return int(total) - int(free)


def cuda_check(result: Any) -> Any:
    """Unpack a cuda-python ``(err, value...)`` tuple, turning an error into one line."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    code = getattr(err, "value", err)
    if code != 0:
        raise EdgecatError(f"CUDA error: {getattr(err, 'name', err)}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def gpu_memory_used() -> int | None:
    """Device memory in use (all processes) through cuda-python, None when it is not installed."""
    try:
        return device_memory_used(import_cudart())
    except Exception:  # noqa: BLE001 - a missing cuda-python only leaves bench's column empty
        return None


__all__ = ["cuda_check", "current_gpu", "device_memory_used", "gpu_memory_used", "import_cudart",
           "require_tensorrt"]
