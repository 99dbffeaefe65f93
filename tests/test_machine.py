"""Cores a process may use: the runtimes' default thread count must follow taskset, cgroup cpusets and
CPU quotas, not the machine's core count (two threads pinned to one core take turns on it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecat import machine

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, want", [
    ("150000 100000\n", 1.5),
    ("100000 100000", 1.0),
    ("max 100000\n", None),
    ("", None),
    ("garbage here", None),
])
def test_cgroup_v2_cpu_max(text, want):
    assert machine.parse_cpu_max(text) == want


@pytest.mark.parametrize("quota, period, want", [("50000\n", "100000\n", 0.5), ("-1\n", "100000\n", None),
                                                 ("x", "100000", None)])
def test_cgroup_v1_cfs_quota(quota, period, want):
    assert machine.parse_cfs_quota(quota, period) == want


def _cgroup(root: Path, rel: str, **files: str) -> None:
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text)


def test_quota_is_the_tightest_of_the_cgroup_and_those_above(tmp_path):
    """cgroup v2 and v1: a pod-level or slice-level limit above the process's own cgroup counts too."""
    root, proc = tmp_path / "cgroup", tmp_path / "self-cgroup"
    _cgroup(root, "kubepods", cpu__max="max 100000\n")
    _cgroup(root, "kubepods/pod1", cpu__max="150000 100000\n")
    _cgroup(root, "kubepods/pod1/ctr", cpu__max="300000 100000\n")
    proc.write_text("0::/kubepods/pod1/ctr\n")
    assert machine.cpu_quota(root, proc) == 1.5
    # a namespaced container sees its own cgroup as the root, limit included (docker --cpus=2 on v2)
    docker = tmp_path / "v2-namespaced"
    _cgroup(docker, ".", cpu__max="200000 100000\n")
    proc.write_text("0::/\n")
    assert machine.cpu_quota(docker, proc) == 2.0
    _cgroup(docker, ".", cpu__max="max 100000\n")
    assert machine.cpu_quota(docker, proc) is None

    v1 = tmp_path / "v1"
    _cgroup(v1, "cpu,cpuacct/slice", cpu__cfs_quota_us="100000\n", cpu__cfs_period_us="100000\n")
    _cgroup(v1, "cpu,cpuacct/slice/child", cpu__cfs_quota_us="-1\n", cpu__cfs_period_us="100000\n")
    proc.write_text("4:cpu,cpuacct:/slice/child\n3:memory:/slice/child\n")
    assert machine.cpu_quota(v1, proc) == 1.0  # the slice's limit, though the child's own is unlimited
    # a v1 container has its own cgroup mounted as the controller's root
    bind = tmp_path / "v1-bind"
    _cgroup(bind, "cpu,cpuacct", cpu__cfs_quota_us="50000\n", cpu__cfs_period_us="100000\n")
    proc.write_text("4:cpu,cpuacct:/docker/abc\n")
    assert machine.cpu_quota(bind, proc) == 0.5


def test_quota_ignores_what_it_cannot_trust(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "self-cgroup"
    _cgroup(root, ".", cpu__max="100000 100000\n")  # a limit on the root a bad line must not reach
    proc.write_text("garbage without colons\n0::/../../elsewhere\n")
    assert machine.cpu_quota(root, proc) is None
    assert machine.cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_cores_are_counted_by_shared_hardware_threads(tmp_path):
    """Two hyper-threads of one core are one core; an ARM board whose clusters each number their
    cores from 0 in one package still has one core per CPU."""

    def sysfs(name: str, siblings: dict[int, str], field: str = "core_cpus_list") -> Path:
        for cpu, group in siblings.items():
            topo = tmp_path / name / f"cpu{cpu}" / "topology"
            topo.mkdir(parents=True)
            (topo / field).write_text(group + "\n")
            (topo / "core_id").write_text(f"{cpu % 4}\n")  # restarts in each cluster: no key
            (topo / "physical_package_id").write_text("0\n")
        return tmp_path / name

    smt = sysfs("smt", {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert machine.cores_of(frozenset({0, 1, 2, 3}), smt) == 2
    assert machine.cores_of(frozenset({0, 2}), smt) == 1
    arm = sysfs("arm", {cpu: str(cpu) for cpu in range(8)}, field="thread_siblings_list")
    assert machine.cores_of(frozenset(range(8)), arm) == 8
    assert machine.cores_of(frozenset({0, 9}), arm) is None  # a CPU sysfs does not describe


def test_runtime_threads_follow_a_one_core_affinity_mask():
    """As ``taskset -c N`` or ``docker --cpuset-cpus N`` start a process: ONNX Runtime's and OpenVINO's
    default thread counts, auto's thread candidates and the remembered choice's key see one core."""
    if not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a CPU affinity mask with two or more CPUs to narrow")
    cpu = min(os.sched_getaffinity(0))
    code = f"""
import json, os
os.sched_setaffinity(0, {{{cpu}}})
from edgecat import machine, select
from edgecat.runtime.onnxruntime.loader import session_options
from edgecat.runtime.openvino.loader import compile_config
out = {{"physical": machine.physical_cores(), "cpus": machine.usable_cpus(),
        "ort": session_options().intra_op_num_threads, "auto": select.thread_options("onnxruntime", None),
        "key": select.machine_key()}}
try:
    import openvino.properties as props
    out["ov"] = compile_config()[props.inference_num_threads]
except ImportError:
    pass
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["physical"] == got["cpus"] == got["ort"] == 1, got
    assert got.get("ov", 1) == 1 and got["auto"] == [1], got
    assert got["key"].endswith("| cores=1")
    assert machine.physical_cores() <= min(len(os.sched_getaffinity(0)), machine.machine_physical_cores())
