"""How bench measures a row, both after ``warmup`` untimed runs, with the clock and loop of
:mod:`edgecat.timing` (the ones ``--backend auto`` times its candidates with):

* **model-only**: one prepared batch through the runtime's model call, again and again;
* **end-to-end**: image file -> probability: read + decode (``decode``), resize + batch + dtype
  (``preprocess``), model call (``inference``), class probabilities + labels (``postprocess``). The
  four stages are contiguous intervals of one clock, so they add up to the end-to-end time.

All latencies are per image (a batch's time divided by its size), in milliseconds. Also here: the
machine line of the report and the process's peak memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import backends, imaging, machine, timing
from edgecat.bench.report import STAGES, BenchConfig, Latency, MachineInfo
from edgecat.bundle import Bundle, tool_versions
from edgecat.splits import ImageSet

Tick = Callable[[float], None]


def machine_info(device: int = 0) -> MachineInfo:
    """The machine line; ``gpu`` is CUDA device ``device`` (the ordinal the GPU runtimes were given,
    among the devices CUDA_VISIBLE_DEVICES / --device leave visible)."""
    try:
        import psutil

        physical, logical = psutil.cpu_count(logical=False), psutil.cpu_count()
    except ImportError:
        physical, logical = None, machine.logical_cores()
    gpu = None
    with contextlib.suppress(Exception):
        from edgecat.runtime.cuda import current_gpu

        gpu = " ".join(current_gpu(device))
    libs = ("numpy", "cv2", "onnxruntime", "tensorrt")
    if "tensorflow" in sys.modules:  # versions of what this run loaded, not of everything installed
        libs += ("tensorflow", "keras")
    return MachineInfo(platform=platform.platform(), processor=machine.cpu_model(), physical_cores=physical,
                       logical_cores=logical, usable_cores=machine.physical_cores(), load_avg=machine.load_avg(),
                       gpu=gpu, versions=tool_versions(*libs))


def reset_peak_rss() -> None:
    """Linux lets a process reset its RSS high-water mark, so each row gets its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:
        return None


def skip_reason(backend: str) -> str | None:
    """Why a backend cannot run here, known before trying (the rest comes from opening it)."""
    if backend in backends.keras_backends():
        try:
            missing = importlib.util.find_spec("tensorflow") is None
        except (ImportError, ValueError):
            missing = True
        if missing:
            return "TensorFlow not installed"
    return None


def model_only(rt: Any, batch: np.ndarray, cfg: BenchConfig, tick: Tick) -> Latency:
    for _ in range(cfg.warmup):
        rt.infer_raw(batch)
    prepared = rt.prepare(batch)  # the model call alone, on an already prepared batch
    times = timing.repeat(lambda: timing.ms_per_item(lambda: rt.run_prepared(prepared), len(batch)),
                          timing.Budget(cfg.iters, cfg.seconds), tick)
    return Latency.of(times)


@dataclass
class EndToEnd:
    latency: Latency
    stages: dict[str, float]
    correct: int
    labelled: int


class _FileRun:
    """Batches of files taken in turn (wrapping round), timed stage by stage; remembers whether each
    labelled file got its label right the first time it was seen."""

    def __init__(self, rt: Any, bundle: Bundle, images: ImageSet, batch_size: int, reduced: bool | None) -> None:
        self.rt, self.bundle, self.images, self.reduced = rt, bundle, images, reduced
        n = len(images.files)
        starts = itertools.count(0, batch_size)
        self.batches: Iterator[list[int]] = ([(s + i) % n for i in range(batch_size)] for s in starts)
        self.seen: dict[int, bool] = {}
        self.sums = dict.fromkeys(STAGES, 0.0)

    def once(self, record: bool = True) -> float:
        """One batch end to end: its ms per image (stages added to :attr:`sums` when ``record``)."""
        idx, size = next(self.batches), self.bundle.input_size
        t0 = time.perf_counter()
        decoded = [imaging.decode_image(self.images.files[i], size, self.reduced) for i in idx]
        t1 = time.perf_counter()
        prepared = self.rt.prepare(imaging.to_batch([imaging.resize(im, size) for im in decoded], dtype="uint8"))
        t2 = time.perf_counter()
        raw = self.rt.run_prepared(prepared)
        t3 = time.perf_counter()
        labels = self.bundle.labels_from_probs(self.bundle.class_probs(raw))
        t4 = time.perf_counter()
        if record:
            for i, name in zip(idx, labels):
                if i not in self.seen and self.images.labels[i] is not None:
                    self.seen[i] = self.bundle.classes.index(name) == self.images.labels[i]
            for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                self.sums[stage] += (b - a) * 1000.0 / len(idx)
        return (t4 - t0) * 1000.0 / len(idx)


def end_to_end(rt: Any, bundle: Bundle, images: ImageSet, batch_size: int, cfg: BenchConfig,
               tick: Tick) -> EndToEnd:
    run = _FileRun(rt, bundle, images, batch_size, cfg.reduced_decode)
    for _ in range(cfg.warmup):
        run.once(record=False)
    totals = timing.repeat(run.once, timing.Budget(cfg.iters, cfg.seconds), tick)
    means = {k: v / len(totals) for k, v in run.sums.items()}
    return EndToEnd(Latency.of(totals), means, sum(run.seen.values()), len(run.seen))


__all__ = ["EndToEnd", "end_to_end", "machine_info", "model_only", "peak_rss_mb", "reset_peak_rss", "skip_reason"]
