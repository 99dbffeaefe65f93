"""The GPU and CUDA as every GPU backend sees them: TensorRT import, device probing (driver API, then
nvidia-smi) and cuda-python's runtime API. Used by the TensorRT and ONNX Runtime runtimes, the engine
build, bench's machine line, ``edgecat check`` and the tests' GPU markers; imports nothing heavy.

Two version rules live here because both fail far from their cause otherwise:

- TensorRT older than 10 cannot build edgecat's engines (no strongly typed networks: an FP16/INT8
  engine would be built without its precision), so :func:`require_tensorrt` refuses it before any work.
- cuda-python brings its own CUDA runtime. A runtime newer than the NVIDIA driver fails every call
  with ``cudaErrorInsufficientDriver`` (cuda-python 13 needs driver 580+, JetPack 6 ships a 540-series
  driver with CUDA 12.2/12.6) while TensorRT's engine build, which uses the driver directly, works.
  :func:`cuda_error_message` names that error and the cuda-python that fits the driver; only
  ``cudaErrorNoDevice`` means "no GPU".
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from typing import Any

from edgecat.errors import EdgecatError, MissingDependencyError

#: the oldest TensorRT whose engines edgecat builds and runs: strongly typed networks (precision from
#: the ONNX graph) and the name-based tensor API arrived in TensorRT 10
MIN_TENSORRT = (10, 0)
#: cudaError_t names that mean "the CUDA runtime cuda-python brings does not fit this driver"
DRIVER_MISMATCH = ("cudaErrorInsufficientDriver", "cudaErrorSystemDriverMismatch",
                   "cudaErrorCompatNotSupportedOnDevice")
NO_DEVICE = "cudaErrorNoDevice"


def tensorrt_version_problem(version: str) -> str | None:
    """Why TensorRT ``version`` cannot build or run edgecat's engines (None when it can)."""
    try:
        major_minor = tuple(int(p) for p in str(version).split(".")[:2])
    except ValueError:
        return None  # a development build with an odd version string: let TensorRT itself decide
    if major_minor >= MIN_TENSORRT:
        return None
    return (f"TensorRT {version} is too old: edgecat builds strongly typed engines with TensorRT 10.x or 11.x "
            "(JetPack 6.1 and 6.2 ship TensorRT 10.3; JetPack 6.0 ships 8.6 and JetPack 5 ships 8.5: upgrade "
            "JetPack, or run the ONNX files with --backend onnxruntime-cuda)")


def require_tensorrt() -> Any:
    """Import tensorrt or fail with one line saying how to get it, or that this version is too old."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(
            "TensorRT is not installed: on a Jetson it comes with JetPack (python3-libnvinfer); on a "
            "desktop GPU: pip install tensorrt"
        ) from exc
    except OSError as exc:  # the wheel is there but libnvinfer/CUDA libraries are not
        raise MissingDependencyError(f"TensorRT cannot load its libraries: {exc}") from exc
    problem = tensorrt_version_problem(str(getattr(trt, "__version__", "")))
    if problem:
        raise MissingDependencyError(problem)
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
                "the tensorrt backend needs cuda-python for CUDA streams and buffers: pip install "
                "'edgecat[tensorrt]' (cuda-python 12.x; on a Jetson the one matching JetPack's CUDA: "
                "JetPack 6.1/6.2 \"cuda-python>=12.6,<12.7\")"
            ) from exc
    return cudart


def device_memory_used(cudart: Any) -> int:
    """Bytes in use on the current CUDA device (all processes), for bench's GPU memory column."""
    free, total = cuda_check(cudart.cudaMemGetInfo(), cudart)
    return int(total) - int(free)


def cuda_python_version() -> str | None:
    """The installed cuda-python (or its cuda-bindings part), None when neither is installed."""
    from importlib import metadata

    for dist in ("cuda-python", "cuda-bindings"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _cuda_version(cudart: Any, call: str) -> tuple[int, int] | None:
    """(major, minor) from cudaDriverGetVersion / cudaRuntimeGetVersion (12060 -> (12, 6)); both answer
    without a usable device, which is what a mismatch message needs."""
    try:
        err, value = getattr(cudart, call)()
    except Exception:  # noqa: BLE001 - only used to word an error that is already being raised
        return None
    if getattr(err, "value", err) != 0 or not value:
        return None
    return int(value) // 1000, (int(value) % 1000) // 10


def cuda_python_pin(driver: tuple[int, int]) -> str:
    """The cuda-python whose CUDA runtime is the driver's own CUDA version (on Tegra a newer runtime
    fails): (12, 6) -> ``cuda-python>=12.6,<12.7`` (JetPack 6.1/6.2)."""
    return f"cuda-python>={driver[0]}.{driver[1]},<{driver[0]}.{driver[1] + 1}"


def cuda_error_message(err: Any, cudart: Any = None) -> str:
    """One line for a CUDA runtime error, named as CUDA names it; for a runtime newer than the driver,
    what each side is and the cuda-python to install."""
    name = str(getattr(err, "name", None) or err)
    if name in DRIVER_MISMATCH:
        driver = _cuda_version(cudart, "cudaDriverGetVersion") if cudart is not None else None
        runtime = _cuda_version(cudart, "cudaRuntimeGetVersion") if cudart is not None else None
        have = cuda_python_version()
        runtime_text = f"CUDA {runtime[0]}.{runtime[1]} runtime" if runtime else "CUDA runtime"
        brings = f"the {runtime_text} that cuda-python{' ' + have if have else ''} brings"
        fix = (f'pip install "{cuda_python_pin(driver)}"' if driver
               else 'pip install "cuda-python==<the CUDA version of your driver>.*"')
        where = f"this NVIDIA driver (CUDA {driver[0]}.{driver[1]})" if driver else "this NVIDIA driver"
        return (f"CUDA error {name}: {where} is older than {brings}; install the "
                f"cuda-python that matches the driver: {fix} (JetPack 6.1/6.2: cuda-python 12.6.x; "
                "see deploy/jetson/README.md)")
    description = ""
    if cudart is not None:
        try:
            _, text = cudart.cudaGetErrorString(err)
            description = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # noqa: BLE001 - the name alone is still a precise error
            description = ""
    return f"CUDA error {name}" + (f": {description}" if description else "")


def cuda_device_count(cudart: Any, who: str = "the tensorrt backend") -> int:
    """Visible CUDA devices through cuda-python. ``cudaErrorNoDevice`` (or none) is "no GPU"; any other
    error (a driver older than cuda-python's runtime above all) is reported by name, never as a missing GPU."""
    result = cudart.cudaGetDeviceCount()
    err, count = result[0], (result[1] if len(result) > 1 else 0)
    name = str(getattr(err, "name", None) or err)
    if getattr(err, "value", err) != 0 and name != NO_DEVICE:
        raise EdgecatError(f"{who} cannot use CUDA: " + cuda_error_message(err, cudart))
    if name == NO_DEVICE or not count:
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        note = f" (CUDA_VISIBLE_DEVICES={hidden})" if hidden is not None else ""
        raise EdgecatError(f"{who} needs an NVIDIA GPU; none is visible here{note}")
    return int(count)


def cuda_check(result: Any, cudart: Any = None) -> Any:
    """Unpack a cuda-python ``(err, value...)`` tuple, turning an error into one line that names it
    (``cudart``, when given, words a driver mismatch with the versions on both sides)."""
    if isinstance(result, tuple):
        err, rest = result[0], result[1:]
    else:
        err, rest = result, ()
    code = getattr(err, "value", err)
    if code != 0:
        raise EdgecatError(cuda_error_message(err, cudart))
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def gpu_memory_used() -> int | None:
    """Device memory in use (all processes) through cuda-python, None when it is not installed."""
    try:
        return device_memory_used(import_cudart())
    except Exception:  # noqa: BLE001 - a missing cuda-python only leaves bench's column empty
        return None


def gpu_stack() -> list[str]:
    """One line per layer of the GPU stack the tensorrt backend needs (TensorRT, the GPU, cuda-python
    against the driver), each ending in "ok" or in what to do: the first check on a new device."""
    lines = []
    try:
        lines.append(f"TensorRT {require_tensorrt().__version__}: ok")
    except EdgecatError as exc:
        lines.append(str(exc))
    try:
        name, cc = current_gpu()
        lines.append(f"GPU {name}, compute capability {cc}: ok")
    except EdgecatError as exc:
        lines.append(str(exc))
    try:
        cudart = import_cudart()
        count = cuda_device_count(cudart, "cuda-python")
        driver = _cuda_version(cudart, "cudaDriverGetVersion")
        runtime = _cuda_version(cudart, "cudaRuntimeGetVersion")
        lines.append(f"cuda-python {cuda_python_version()}: CUDA {'.'.join(map(str, runtime or ('?',)))} runtime, "
                     f"driver for CUDA {'.'.join(map(str, driver or ('?',)))}, {count} device(s): ok")
    except EdgecatError as exc:
        lines.append(str(exc))
    return lines


__all__ = ["MIN_TENSORRT", "cuda_check", "cuda_device_count", "cuda_error_message",
           "cuda_python_pin", "cuda_python_version", "current_gpu", "gpu_stack", "device_memory_used", "gpu_memory_used",
           "import_cudart", "require_tensorrt", "tensorrt_version_problem"]
