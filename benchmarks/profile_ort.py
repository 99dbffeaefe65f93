"""Where ONNX Runtime spends a batch-1 inference: per-operator time from ORT's own profiler, and
the same model timed at 1..N threads with spinning on/off, interleaved so machine load hits all
settings alike.

    .venv/bin/python benchmarks/profile_ort.py BUNDLE [--precision int8] [--runs 100]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np

from edgecat import artifacts
from edgecat.machine import usable_cpus
from edgecat.bundle import Bundle
from edgecat.runtime.onnxruntime.loader import open_session, session_options


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("bundle")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--runs", type=int, default=100)
    a = ap.parse_args()

    bundle = Bundle.open(a.bundle)
    path = str(bundle.artifact_path(artifacts.onnx(a.precision).key))
    h, w = bundle.input_size
    x = np.random.default_rng(0).uniform(0, 255, (1, h, w, 3)).astype(np.float32)
    print(f"load average: {os.getloadavg()}")

    # 1) per-operator profile (single thread: the sum of kernel times is the model's work)
    opts = session_options(threads=1)
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    sess = open_session(path, opts)
    name = sess.get_inputs()[0].name
    for _ in range(10):
        sess.run(None, {name: x})
    events = json.load(open(sess.end_profiling()))
    per_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values())
    print(f"{a.precision} kernel time per run (1 thread, profiled): {total / 10 / 1000:.2f} ms")
    for op, us in per_op.most_common(10):
        print(f"  {op:28s} {us / 10 / 1000:6.2f} ms  {100 * us / total:5.1f}%")

    # 2) threads x spinning, interleaved
    settings = [(t, s) for t in range(1, usable_cpus() + 1) for s in (False, True)]
    sessions = {}
    for t, s in settings:
        sessions[(t, s)] = open_session(path, session_options(t, s))
    times: dict[tuple[int, bool], list[float]] = {k: [] for k in settings}
    for _ in range(a.runs):
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            sess.run(None, {name: x})
            times[k].append((time.perf_counter() - t0) * 1000)
    for (t, s), v in times.items():
        print(f"threads={t} spinning={s!s:5}: p50 {np.percentile(v, 50):.2f} ms  p90 {np.percentile(v, 90):.2f} ms")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
