"""What can run here: the answer to "why is my backend skipped?" before anyone runs a benchmark.

Every probe is cheap and never raises: a missing library is reported as absent, not as an error.
TensorFlow is looked up by its installed version, not imported (an import costs seconds and
prints nothing useful here). The choice at the end says which backend and precision edgecat
uses by default on this machine and which one is likely fastest, and why.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecat import __version__, machine
from edgecat.errors import EdgecatError, first_line

#: CPU flags that decide ONNX Runtime's speed: AVX2/FMA for fp32, VNNI for int8 dot products
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimd", "asimddp")


@dataclass
class Checks:
    """One machine's report; ``as_dict`` is the ``--json`` output."""

    edgecat: str
    python: str
    platform: str
    tensorflow: dict[str, Any]
    onnxruntime: dict[str, Any]
    tensorrt: dict[str, Any]
    openvino: dict[str, Any]
    litert: dict[str, Any]
    gpu: dict[str, Any]
    opencv: dict[str, Any]
    cameras: list[str]
    memory: dict[str, Any]
    cpu: dict[str, Any]
    choice: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tensorflow_info() -> dict[str, Any]:
    version = _version("tensorflow") or _version("tensorflow-cpu") or _version("tf-nightly")
    return {"installed": version is not None, "version": version, "keras": _version("keras"),
            "tf2onnx": _version("tf2onnx")}


def onnxruntime_info() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"installed": False, "version": None, "providers": [], "error": str(exc)}
    return {"installed": True, "version": ort.__version__, "providers": list(ort.get_available_providers()),
            "device": ort.get_device()}


def tensorrt_info() -> dict[str, Any]:
    if importlib.util.find_spec("tensorrt") is None:
        return {"installed": False, "version": None}
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # the wheel without its libraries
        return {"installed": False, "version": _version("tensorrt"), "error": first_line(exc)}
    return {"installed": True, "version": str(trt.__version__)}


def openvino_info() -> dict[str, Any]:
    """OpenVINO's version and the devices it can compile for here (CPU, GPU, NPU)."""
    if importlib.util.find_spec("openvino") is None:
        return {"installed": False, "version": None, "devices": []}
    try:
        import openvino as ov

        core = ov.Core()
        devices = list(core.available_devices)
        names = {}
        for device in devices:
            with contextlib.suppress(Exception):  # a device without the property is still listed
                names[device] = str(core.get_property(device, "FULL_DEVICE_NAME"))
    except Exception as exc:  # noqa: BLE001 - a wheel without its libraries is a finding
        return {"installed": False, "version": _version("openvino"), "devices": [],
                "error": first_line(exc) or type(exc).__name__}
    return {"installed": True, "version": _version("openvino") or str(ov.__version__).split("-")[0],
            "devices": devices, "device_names": names}


def litert_info() -> dict[str, Any]:
    """LiteRT (ai-edge-litert), which runs the bundle's .tflite files with XNNPACK on the CPU."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        return {"installed": False, "version": None}
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401 - the import is the probe
    except Exception as exc:  # noqa: BLE001
        return {"installed": False, "version": _version("ai-edge-litert"),
                "error": first_line(exc) or type(exc).__name__}
    return {"installed": True, "version": _version("ai-edge-litert")}


def gpu_info() -> dict[str, Any]:
    from edgecat.runtime.cuda import current_gpu

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        name, cc = current_gpu()
    except EdgecatError:
        return {"found": False, "name": None, "compute_capability": None, "cuda_visible_devices": visible}
    except Exception as exc:  # noqa: BLE001 - a broken driver is a finding, not a crash
        return {"found": False, "name": None, "compute_capability": None, "cuda_visible_devices": visible,
                "error": first_line(exc) or type(exc).__name__}
    return {"found": True, "name": name, "compute_capability": cc, "cuda_visible_devices": visible}


def opencv_info() -> dict[str, Any]:
    try:
        import cv2
    except ImportError as exc:
        return {"installed": False, "version": None, "error": str(exc)}
    build = cv2.getBuildInformation()
    return {"installed": True, "version": cv2.__version__, "gstreamer": _build_flag(build, "GStreamer"),
            "ffmpeg": _build_flag(build, "FFMPEG"), "v4l2": _build_flag(build, "v4l/v4l2")}


def _build_flag(build: str, name: str) -> bool:
    """``GStreamer: YES (1.22)`` in OpenCV's build information -> True."""
    m = re.search(rf"^\s*{re.escape(name)}:\s*(\S+)", build, re.MULTILINE)
    return bool(m and m.group(1).upper() == "YES")


def cameras() -> list[str]:
    """V4L2 capture nodes (USB and CSI cameras on Linux; Jetson's CSI also shows up as /dev/video*)."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))


def memory_info(path: str | Path = ".") -> dict[str, Any]:
    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        import psutil

        vm = psutil.virtual_memory()
        out["ram_total_gb"] = round(vm.total / 1e9, 1)
        out["ram_available_gb"] = round(vm.available / 1e9, 1)
    with contextlib.suppress(OSError):
        usage = shutil.disk_usage(path)
        out["disk_free_gb"] = round(usage.free / 1e9, 1)
        out["disk_path"] = str(Path(path).resolve())
    return out


def cpu_info() -> dict[str, Any]:
    return {"model": machine.cpu_model(), "arch": platform.machine(),
            "physical_cores": machine.machine_physical_cores(), "logical_cores": machine.logical_cores(),
            "usable_cores": machine.physical_cores(),
            "flags": [f for f in CPU_FLAGS if f in machine.cpu_flags()]}


def choose(report: Checks) -> dict[str, Any]:
    """Which backend/precision edgecat uses by default here, and which is likely fastest, with why."""
    providers = report.onnxruntime.get("providers", [])
    gpu = report.gpu.get("found", False)
    flags = set(report.cpu.get("flags", []))
    default = ("auto", "auto") if report.onnxruntime.get("installed") else ("keras", "fp32")
    if gpu and report.tensorrt.get("installed"):
        fastest = ("tensorrt", "int8", "TensorRT on " + str(report.gpu.get("name"))
                   + " (fp16 when no INT8 export)")
    elif gpu and "CUDAExecutionProvider" in providers:
        fastest = ("onnxruntime-cuda", "fp16", "ONNX Runtime's CUDA provider on " + str(report.gpu.get("name")))
    elif report.onnxruntime.get("installed"):
        vnni = flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}
        guess = " (a guess from the CPU flags; `--backend auto` measures it per bundle)"
        fastest = ("onnxruntime", "int8" if vnni else "fp32",
                   (f"CPU with {', '.join(sorted(vnni))}: int8 dot products" if vnni
                    else "CPU without VNNI: int8 gains little, fp16 runs slower than fp32 on CPU") + guess)
    elif report.tensorflow.get("installed"):
        fastest = ("keras", "fp32", "only TensorFlow is installed")
    else:
        fastest = (None, None, "no runtime installed: pip install onnxruntime")
    return {"default_backend": default[0], "default_precision": default[1],
            "default_note": "predict/evaluate/stream use auto (the fastest backend x precision measured here "
                            "whose labels agree with FP32) when the bundle has exports, else keras fp32",
            "fastest_backend": fastest[0], "fastest_precision": fastest[1], "why": fastest[2],
            "bench": (f"edgecat bench BUNDLE --backend {fastest[0]} --precision {fastest[1]}"
                      if fastest[0] else None)}


def run_checks(path: str | Path = ".") -> Checks:
    """Probe this machine (``path``: where free disk space is measured)."""
    report = Checks(
        edgecat=__version__, python=sys.version.split()[0], platform=platform.platform(),
        tensorflow=tensorflow_info(), onnxruntime=onnxruntime_info(), tensorrt=tensorrt_info(),
        openvino=openvino_info(), litert=litert_info(), gpu=gpu_info(), opencv=opencv_info(), cameras=cameras(),
        memory=memory_info(path), cpu=cpu_info(),
    )
    report.choice = choose(report)
    return report


def _absent(info: dict[str, Any], hint: str) -> str:
    """``absent: pip install ...``, or why an installed library does not load."""
    if info.get("error"):
        return f"absent ({info['version']} installed, does not load: {info['error']})"
    return f"absent: {hint}"


def _devices(info: dict[str, Any]) -> str:
    names = info.get("device_names", {})
    return ", ".join(f"{d} ({names[d]})" if names.get(d) else d for d in info.get("devices", [])) or "none"


def summary_lines(report: Checks) -> list[tuple[str, str]]:
    """(what, finding) pairs for a two-column table."""
    tf, ort, trt, gpu, cv, mem, cpu = (report.tensorflow, report.onnxruntime, report.tensorrt, report.gpu,
                                       report.opencv, report.memory, report.cpu)
    ov, lite = report.openvino, report.litert

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    ch = report.choice
    usable = "" if cpu["usable_cores"] == cpu["physical_cores"] else f", {cpu['usable_cores']} usable here"
    return [
        ("edgecat", f"{report.edgecat} (Python {report.python}, {report.platform})"),
        ("TensorFlow", f"{tf['version']} (keras {tf['keras']}, tf2onnx {tf['tf2onnx']})" if tf["installed"]
         else "absent: train/export ONNX need pip install 'edgecat[train]'"),
        ("ONNX Runtime", f"{ort['version']}, providers: {', '.join(ort['providers'])}" if ort["installed"]
         else "absent"),
        ("TensorRT", trt["version"] if trt["installed"] else "absent" + (f" ({trt['error']})" if trt.get("error") else "")),
        ("OpenVINO", f"{ov['version']}, devices: {_devices(ov)}" if ov["installed"]
         else _absent(ov, "pip install 'edgecat[openvino]'")),
        ("LiteRT", f"{lite['version']} (.tflite files, XNNPACK on the CPU)" if lite["installed"]
         else _absent(lite, "pip install 'edgecat[litert]'")),
        ("GPU", f"{gpu['name']}, compute capability {gpu['compute_capability']}" if gpu["found"]
         else "none found (no CUDA driver/device)"),
        ("OpenCV", f"{cv['version']}, GStreamer {yes(cv['gstreamer'])}, FFmpeg {yes(cv['ffmpeg'])}, "
                   f"V4L2 {yes(cv['v4l2'])}" if cv["installed"] else "absent"),
        ("cameras", ", ".join(report.cameras) or "none (/dev/video*)"),
        ("memory", f"{mem.get('ram_available_gb')} GB free of {mem.get('ram_total_gb')} GB RAM, "
                   f"{mem.get('disk_free_gb')} GB free disk at {mem.get('disk_path')}"),
        ("CPU", f"{cpu['model']} ({cpu['physical_cores']} cores / {cpu['logical_cores']} threads{usable}), "
                f"flags: {', '.join(cpu['flags']) or 'none of ' + ', '.join(CPU_FLAGS)}"),
        ("default", f"{ch['default_backend']} {ch['default_precision']} ({ch['default_note']})"),
        ("fastest here", f"{ch['fastest_backend']} {ch['fastest_precision']}: {ch['why']}"),
    ]


__all__ = ["Checks", "choose", "run_checks", "summary_lines"]
