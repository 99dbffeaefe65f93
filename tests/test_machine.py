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


def test_quota_is_the_tightest_of_the_cgroup_and_those_above(tmp_path):
    """cgroup v2: a pod-level limit above the container's own counts too."""
    root = tmp_path / "cgroup"
    (root / "kubepods" / "pod1" / "ctr").mkdir(parents=True)
    (root / "kubepods" / "cpu.max").write_text("max 100000\n")
    (root / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    (root / "kubepods" / "pod1" / "ctr" / "cpu.max").write_text("300000 100000\n")
    proc = tmp_path / "self-cgroup"
    proc.write_text("0::/kubepods/pod1/ctr\n")
    assert machine.cpu_quota(root, proc) == 1.5
    proc.write_text("0::/\n")  # a namespaced container sees its own cgroup as the root
    (root / "cpu.max").write_text("max 100000\n")
    assert machine.cpu_quota(root, proc) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    proc.write_text("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    assert machine.cpu_quota(v1, proc) == 1.0
    assert machine.cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_runtime_threads_follow_a_one_core_affinity_mask():
    """As ``taskset -c N`` or ``docker --cpuset-cpus N`` start a process: every CPU runtime's default
    thread count, auto's thread candidates and the remembered choice's key see one core."""
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
    assert got["key"].endswith("| cores=1") and machine.physical_cores() >= 1
    here = machine.physical_cores()
    assert here <= len(os.sched_getaffinity(0)) and here <= (machine.logical_cores() or here)
