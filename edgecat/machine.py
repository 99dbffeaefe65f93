"""Facts about this machine, read once: CPU model and flags, cores, NVIDIA GPUs, library versions.

``--backend auto`` keys its remembered choice by them, bench and ``edgecat checks`` report them, and
INT8 export asks for VNNI; all of them read the same figures from here. Nothing here imports a
runtime library (GPUs come from the driver's /proc files, versions from package metadata).
"""

from __future__ import annotations

import contextlib
import functools
import math
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


#: where Linux describes each CPU's core (``cpuN/topology``)
SYS_CPU = Path("/sys/devices/system/cpu")


def physical_cores() -> int:
    """The physical cores this process may use: runtime threads default to it. Hyper-threads slow down
    conv-heavy inference, and threads beyond the CPUs that taskset, a cgroup cpuset or a CPU quota
    (``docker --cpuset-cpus`` / ``--cpus``, Kubernetes limits) leave take turns on one core: ONNX
    Runtime INT8 on 2 threads pinned to one core of a 2-core Xeon ran 7.1 ms against 3.1 ms on one
    (benchmarks/README.md, "Fewer cores than the machine has")."""
    cpus = _affinity()
    cores = cores_of(frozenset(cpus)) if cpus else None
    if cores is None:
        cores = machine_physical_cores()
        if cpus:
            cores = min(cores, len(cpus))
    return _within_quota(cores)


def usable_cpus() -> int:
    """Logical CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    cpus = _affinity()
    return _within_quota(len(cpus) if cpus else logical_cores())


def _within_quota(n: int) -> int:
    """``n`` CPUs, no more than a cgroup CPU quota lets run at once (rounded up), at least one."""
    quota = cpu_quota()
    return max(1, min(n, math.ceil(quota)) if quota is not None else n)


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


@functools.lru_cache(maxsize=8)
def cores_of(cpus: frozenset[int], sys_cpu: Path = SYS_CPU) -> int | None:
    """Physical cores among ``cpus``: the distinct sets of hardware threads that share a core
    (``topology/core_cpus_list``; ``thread_siblings_list`` on older kernels), as psutil counts them.
    Package and core ids are no key: ARM boards with several clusters number the cores of each
    cluster from 0 in one package. None where sysfs does not say."""
    seen = set()
    for cpu in cpus:
        topo = sys_cpu / f"cpu{cpu}" / "topology"
        for name in ("core_cpus_list", "thread_siblings_list"):
            with contextlib.suppress(OSError):
                seen.add((topo / name).read_text().strip())
                break
        else:
            return None
    return len(seen) or None


def machine_physical_cores() -> int:
    """The machine's physical cores, whatever this process may use (what ``edgecat checks`` reports)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:  # noqa: BLE001 - psutil missing or unable to read this machine
        pass
    return os.cpu_count() or 1


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` ("QUOTA PERIOD", "max PERIOD" when unlimited) -> CPUs allowed."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_us: str, period_us: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 when unlimited) -> CPUs allowed."""
    try:
        quota, period = int(quota_us.strip()), int(period_us.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpu_quota(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs a cgroup CPU limit allows this process (the tightest of its cgroup and the ones above
    it, cgroup v1 or v2), None without a limit or where cgroups cannot be read."""
    limits: list[float] = []
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = Path(path.strip().lstrip("/"))
        if ".." in rel.parts:  # a cgroup outside this namespace: nothing of it is mounted here
            continue
        chain = (rel, *rel.parents)  # its own cgroup, then the ones above it up to the root
        if controllers == "":  # cgroup v2: one unified hierarchy
            for folder in chain:
                with contextlib.suppress(OSError):
                    if (n := parse_cpu_max((root / folder / "cpu.max").read_text())) is not None:
                        limits.append(n)
        elif "cpu" in controllers.split(","):
            for base in (root / controllers, root / "cpu", root / "cpu,cpuacct"):
                if not base.is_dir():
                    continue
                # a container sees its own cgroup mounted as the controller's root
                for folder in chain if (base / rel).is_dir() else (Path("."),):
                    with contextlib.suppress(OSError):
                        n = parse_cfs_quota((base / folder / "cpu.cfs_quota_us").read_text(),
                                            (base / folder / "cpu.cfs_period_us").read_text())
                        if n is not None:
                            limits.append(n)
                break
    return min(limits) if limits else None


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


__all__ = ["cores_of", "cpu_flags", "cpu_model", "cpu_quota", "gpu_models", "has_vnni", "library_versions", "load_avg",
           "logical_cores", "machine_physical_cores", "parse_cfs_quota", "parse_cpu_max", "physical_cores",
           "usable_cpus"]
