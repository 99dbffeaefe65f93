"""Facts about this machine, read once: CPU model and flags, cores, NVIDIA GPUs, library versions.

``--backend auto`` keys its remembered choice by them, bench and ``edgecat checks`` report them, and
INT8 export asks for VNNI; all of them read the same figures from here. Nothing here imports a
runtime library (GPUs come from the driver's /proc files, versions from package metadata).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from edgecat.backends import RUNTIME_DISTS


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo key (empty where there is no such file)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip().lower(), value.strip())
    return out


def cpu_model() -> str:
    """``model name`` (x86), ``Hardware``/``cpu model`` (ARM, MIPS), else what platform says."""
    info = _cpuinfo()
    for key in ("model name", "hardware", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """x86 ``flags`` or ARM ``Features``."""
    info = _cpuinfo()
    return set((info.get("flags") or info.get("features") or "").split())


def has_vnni() -> bool:
    """VNNI (u8*s8 dot products without saturation): x86 CPUs without it want reduce_range INT8."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def physical_cores() -> int:
    """Threads default to physical cores: hyper-threads slow down conv-heavy inference."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # noqa: BLE001 - psutil missing or unable to read this machine
        pass
    return os.cpu_count() or 1


def logical_cores() -> int:
    return os.cpu_count() or 1


def gpu_models() -> list[str]:
    """NVIDIA GPUs from the driver's /proc files (no CUDA import needed to tell machines apart)."""
    out = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            line = next(x for x in info.read_text().splitlines() if x.startswith("Model:"))
            out.append(line.split(":", 1)[1].strip())
        except (OSError, StopIteration):
            continue
    return out


def library_versions(dists: tuple[str, ...] = RUNTIME_DISTS) -> dict[str, str]:
    """Installed versions of ``dists`` (default: the runtimes auto measures), missing ones left out."""
    from importlib import metadata

    out = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_avg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


__all__ = ["cpu_flags", "cpu_model", "gpu_models", "has_vnni", "library_versions", "load_avg", "logical_cores",
           "physical_cores"]
