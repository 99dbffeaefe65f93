"""``--backend auto``: the fastest backend x precision on THIS machine, chosen by measurement.

The order of ONNX Runtime, OpenVINO and LiteRT (and FP32/FP16/INT8 within each) changes with the CPU
(VNNI/AMX, ARM dot-product) and library versions, so it cannot be fixed in code. On first use on a
machine every available backend x exported precision is timed on a few real images from the bundle
(batch 1, interleaved rounds, median), then the fastest is checked for label agreement with FP32 on
the bundle's validation images; one below the bundle's ``agreement_threshold`` (manifest, default
0.995) is refused and the next fastest is checked. The winner is remembered in the manifest under
``autoselect``, keyed by CPU/GPU model and library versions, so later runs reuse it at no cost; a
re-exported artifact or a library upgrade makes a new measurement.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.bundle import Bundle, now_iso
from edgecat.errors import EdgecatError

log = logging.getLogger(__name__)

DEFAULT_AGREEMENT = 0.995
#: backend -> (python module that must be importable, precision -> artifact key)
ONNX = {p: artifacts.onnx(p).key for p in artifacts.PRECISIONS}
TFLITE = {p: artifacts.find("tflite", p).key for p in artifacts.PRECISIONS}
ENGINES = {p: artifacts.find("engine", p).key for p in artifacts.PRECISIONS}
CANDIDATES: dict[str, tuple[str, dict[str, str]]] = {
    "onnxruntime": ("onnxruntime", ONNX),
    "openvino": ("openvino", ONNX),
    "litert": ("ai_edge_litert", TFLITE),
    "onnxruntime-cuda": ("onnxruntime", ONNX),
    "tensorrt": ("tensorrt", ENGINES),
}
GPU_BACKENDS = ("onnxruntime-cuda", "tensorrt")
LIB_DISTS = ("onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "tensorrt")
MANIFEST_KEY = "autoselect"


@dataclass
class Timing:
    backend: str
    precision: str
    threads: int | None = None  # None: the runtime's default (GPU backends)
    ms: float | None = None  # median ms per image, batch 1
    agreement: float | None = None  # label agreement with FP32 on the validation images
    status: str = "timed"  # timed | chosen | refused | failed | unchecked
    note: str = ""


@dataclass
class Choice:
    backend: str
    precision: str
    reason: str
    timings: list[Timing] = field(default_factory=list)
    threads: int | None = None
    machine: str = ""
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement_threshold(bundle: Bundle) -> float:
    return float(bundle.manifest.get("agreement_threshold", DEFAULT_AGREEMENT))


# ------------------------------------------------------------------------------ machine identity
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in LIB_DISTS:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_key(threads: int | None = None) -> str:
    """CPU model | GPU models | library versions | threads: what the ranking depends on."""
    libs = ",".join(f"{k}={v}" for k, v in sorted(library_versions().items()))
    gpus = ",".join(gpu_models()) or "no-gpu"
    return f"{cpu_model()} | {gpus} | {libs} | threads={threads or 'default'}"


# ------------------------------------------------------------------------------ candidates
def candidates(bundle: Bundle, precision: str | None = None, gpu: bool | None = None) -> list[tuple[str, str]]:
    """(backend, precision) pairs whose library is importable and whose artifact is in the bundle."""
    gpu = bool(gpu_models()) if gpu is None else gpu
    out = []
    for backend, (module, keys) in CANDIDATES.items():
        if backend in GPU_BACKENDS and not gpu:
            continue
        if importlib.util.find_spec(module) is None:
            continue
        for prec, key in keys.items():
            if (precision in (None, "auto", prec)) and bundle.has(key):
                out.append((backend, prec))
    return out


def fingerprint(bundle: Bundle, pairs: list[tuple[str, str]]) -> str:
    """Hash of the candidate artifacts: a re-export invalidates a remembered choice."""
    keys = sorted({CANDIDATES[b][1][p] for b, p in pairs})
    h = hashlib.sha256("|".join(f"{k}={bundle.artifacts[k].get('sha256')}" for k in keys).encode())
    return h.hexdigest()[:16]


def sample_images(bundle: Bundle, n: int) -> tuple[np.ndarray, str]:
    """Real images: validation files from splits.json, else the parity images."""
    from edgecat.export.onnx import parity_images

    return parity_images(bundle, n=n)


def validation_images(bundle: Bundle, limit: int) -> tuple[np.ndarray, str, bool]:
    """(images, what they are, real): the bundle's validation photos; where this machine has none
    (a bundle copied to a device), its parity images, which may be synthetic (``real`` False)."""
    from edgecat import imaging
    from edgecat.export.precision_table import labelled_set

    files, _, what = labelled_set(bundle, None, limit)
    images = imaging.load_batch(files, bundle.input_size).images
    if not len(images):
        sample, sample_what = sample_images(bundle, min(limit, 32))
        return sample, sample_what, False
    return images, f"{len(images)} images from {what}", True


def recorded_agreement(bundle: Bundle, backend: str, precision: str) -> tuple[float, str] | None:
    """The label agreement with FP32 the export's precision table recorded for the file ``backend``
    runs at ``precision`` (measured on real labelled photos), with what it was measured on."""
    entry = bundle.artifacts.get(CANDIDATES[backend][1][precision], {}).get("accuracy") or {}
    if entry.get("agreement_with_fp32") is None:
        return None
    what = f"{entry.get('images')} images from {entry.get('data')}, recorded at export"
    return float(entry["agreement_with_fp32"]), what


# ------------------------------------------------------------------------------ measurement
def thread_options(backend: str, threads: int | None) -> list[int | None]:
    """Threads to try: the user's, else physical cores and 1. On a CPU that other processes keep
    busy, one thread measured faster than two (no waiting on a descheduled worker), so the count
    is measured like the rest rather than fixed."""
    from edgecat.runtime.base import physical_cores

    if backend in GPU_BACKENDS:
        return [threads]
    if threads:
        return [threads]
    return sorted({physical_cores(), 1}, reverse=True)


def time_candidates(bundle: Bundle, configs: list[tuple[str, str, int | None]], images: np.ndarray,
                    rounds: int = 5, warmup: int = 3) -> list[Timing]:
    """Median ms per image at batch 1, all runtimes open at once and timed in interleaved rounds,
    so a burst of load on a shared machine hits every candidate alike."""
    from edgecat.runtime import open_runtime

    timings, runtimes = [], []
    for backend, prec, threads in configs:
        t = Timing(backend, prec, threads)
        try:
            rt = open_runtime(bundle, backend, prec, **({"threads": threads} if threads else {}))
            for _ in range(warmup):
                rt.infer(images[:1])
            runtimes.append((t, rt, []))
        except EdgecatError as exc:
            t.status, t.note = "failed", str(exc)[:200]
        timings.append(t)
    try:
        for _ in range(rounds):
            for _, rt, samples in runtimes:
                for img in images:
                    t0 = time.perf_counter()
                    rt.infer(img[None])
                    samples.append((time.perf_counter() - t0) * 1000.0)
    finally:
        for t, rt, samples in runtimes:
            rt.close()
            if samples:
                t.ms = round(statistics.median(samples), 3)
    return timings


def label_agreement(bundle: Bundle, backend: str, precision: str, images: np.ndarray,
                    ref: np.ndarray, batch: int = 16, **options: Any) -> float:
    from edgecat.runtime import open_runtime

    with open_runtime(bundle, backend, precision, **options) as rt:
        probs = np.concatenate([rt.infer(images[i:i + batch]) for i in range(0, len(images), batch)])
    return float(np.mean(np.array(bundle.labels_from_probs(probs)) == ref))


def _reference_labels(bundle: Bundle, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """FP32 labels: ONNX Runtime on model.onnx, else LiteRT FP32 (a LiteRT-only device bundle)."""
    from edgecat.runtime import open_runtime

    backend = "onnxruntime" if bundle.has(ONNX["fp32"]) else "litert"
    with open_runtime(bundle, backend, "fp32") as rt:
        probs = np.concatenate([rt.infer(images[i:i + batch]) for i in range(0, len(images), batch)])
    return np.array(bundle.labels_from_probs(probs))


def _no_candidates(bundle: Bundle, precision: str | None) -> str:
    """Why auto has nothing to pick from: no export at the asked precision (named with the commands
    that make one), or no installed runtime for the exports there are."""
    if precision not in (None, "auto"):
        keys = {ONNX[precision], TFLITE[precision]}
        if not any(bundle.has(k) for k in keys):
            made_by = " or ".join(f"`{artifacts.export_command(bundle.path, k)}`" for k in sorted(keys))
            return f"--backend auto: {bundle.path} has no {precision} export yet: run {made_by}"
    return (f"--backend auto: no runtime here can open an export of {bundle.path} "
            "(run `edgecat export BUNDLE`, or install onnxruntime / edgecat[openvino] / edgecat[litert])")


def _agreement(bundle: Bundle, t: Timing, timings: list[Timing],
               val: tuple[np.ndarray, np.ndarray, str, bool]) -> tuple[float, str]:
    """Label agreement with FP32 of ``t``'s file and what it was measured on. Labels do not depend on
    the thread count, so one figure per backend x precision. Without labelled photos on this machine
    the export's recorded figure wins over one on synthetic images, which agree on anything."""
    images, ref, what, real = val
    known = next((u.agreement for u in timings if (u.backend, u.precision) == (t.backend, t.precision)
                  and u.agreement is not None), None)
    if known is not None:
        return known, what
    recorded = None if real else recorded_agreement(bundle, t.backend, t.precision)
    if recorded is not None:
        return recorded
    return label_agreement(bundle, t.backend, t.precision, images, ref,
                           **({"threads": t.threads} if t.threads else {})), what


def measure(bundle: Bundle, precision: str | None = None, threads: int | None = None, images: int = 8,
            rounds: int = 5, validation_limit: int = 1000, gpu: bool | None = None) -> Choice:
    """Time every candidate, then check agreement from the fastest down until one passes."""
    pairs = candidates(bundle, precision, gpu)
    if not pairs:
        raise EdgecatError(_no_candidates(bundle, precision))
    configs = [(b, p, n) for b, p in pairs for n in thread_options(b, threads)]
    sample, what = sample_images(bundle, images)
    timings = time_candidates(bundle, configs, sample, rounds=rounds)
    threshold = agreement_threshold(bundle)
    val: tuple[np.ndarray, np.ndarray, str, bool] | None = None
    for t in sorted((t for t in timings if t.ms is not None), key=lambda t: t.ms or 0.0):
        if val is None:
            images_, val_what, real = validation_images(bundle, validation_limit)
            val = (images_, _reference_labels(bundle, images_), val_what, real)
        t.agreement, on = _agreement(bundle, t, timings, val)
        if t.agreement >= threshold:
            t.status = "chosen"
            for u in timings:
                if u.status == "timed" and u.agreement is None:
                    u.status, u.note = "unchecked", "slower than the choice"
            fastest_fp32 = min((u.ms for u in timings if u.precision == "fp32" and u.ms), default=None)
            gain = f", {fastest_fp32 / t.ms:.2f}x the fastest FP32" if fastest_fp32 and t.ms else ""
            reason = (f"fastest that keeps labels: {t.ms:.2f} ms/image at batch 1 with {t.threads or 'default'} "
                      f"thread(s) on {what}{gain}; "
                      f"agreement with FP32 {100 * t.agreement:.2f}% >= {100 * threshold:.1f}% on {on}")
            return Choice(t.backend, t.precision, reason, timings, machine=machine_key(threads), threads=t.threads)
        t.status = "refused"
        t.note = f"agreement {100 * t.agreement:.2f}% < {100 * threshold:.1f}%"
    raise EdgecatError("--backend auto: no backend x precision here keeps the bundle's labels "
                       f"(agreement threshold {threshold:.3f}); see `edgecat bench`")


def choose_backend(bundle: Bundle, precision: str | None = None, threads: int | None = None,
                   refresh: bool = False, save: bool = True, **kwargs: Any) -> Choice:
    """The remembered choice for this machine when it still applies, else :func:`measure` and record it."""
    pairs = candidates(bundle, precision, kwargs.get("gpu"))
    key = machine_key(threads)
    slot = f"{key} | precision={precision or 'auto'}"
    known = bundle.manifest.get(MANIFEST_KEY, {}).get(slot)
    fp = fingerprint(bundle, pairs) if pairs else ""
    if known and not refresh and known.get("artifacts") == fp and (known["backend"], known["precision"]) in pairs:
        timings = [Timing(**t) for t in known.get("timings", [])]
        return Choice(known["backend"], known["precision"], known["reason"], timings, machine=key,
                      threads=known.get("threads"), reused=True)
    choice = measure(bundle, precision, threads, **kwargs)
    log.debug("--backend auto chose %s/%s: %s", choice.backend, choice.precision, choice.reason)
    if save:
        record = {**choice.to_dict(), "artifacts": fp, "created": now_iso()}
        record.pop("reused", None)
        bundle.manifest.setdefault(MANIFEST_KEY, {})[slot] = record
        try:
            bundle.save()
        except OSError as exc:  # a read-only bundle on a device: the choice just is not remembered
            log.warning("--backend auto: cannot remember the choice in %s (%s)", bundle.path, exc)
    return choice


def measure_in_child(bundle: Bundle, precision: str | None, threads: int | None, refresh: bool = False) -> Choice:
    """Measure (and record) in a child process, so the caller loads only the winner's library.
    A stream that had loaded and released OpenVINO beside ONNX Runtime died with SIGSEGV on SIGTERM
    instead of flushing its sinks; one library per process avoids that class of interaction."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from edgecat.autoselect import choose_backend; from edgecat.bundle import Bundle; "
            "c = choose_backend(Bundle.open(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3]) or None, "
            "refresh=sys.argv[4] == '1'); "
            "print(json.dumps(c.to_dict()))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle.path), precision or "", str(threads or 0),
                          "1" if refresh else "0"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["measurement failed"])[-1]
        msg = last.split(": ", 1)[-1].removeprefix("--backend auto: ")  # the child's EdgecatError line
        raise EdgecatError(f"--backend auto: {msg[:300]}")
    d = json.loads(out.stdout.strip().splitlines()[-1])
    d["timings"] = [Timing(**t) for t in d.get("timings", [])]
    bundle.refresh()  # the child recorded the choice in the manifest
    if not remembered(bundle, precision, threads):  # the child could not write (a read-only bundle)
        log.warning("auto: cannot remember the choice in %s (not writable?): every run measures again; "
                    "pass --backend %s --precision %s to skip that", bundle.path, d["backend"], d["precision"])
    return Choice(**d)


def remembered(bundle: Bundle, precision: str | None, threads: int | None) -> bool:
    pairs = candidates(bundle, precision)
    known = bundle.manifest.get(MANIFEST_KEY, {}).get(f"{machine_key(threads)} | precision={precision or 'auto'}")
    return bool(known and pairs and known.get("artifacts") == fingerprint(bundle, pairs))


def open_auto(bundle: Bundle, precision: str | None = None, refresh: bool = False, **options: Any) -> Any:
    """The runtime ``--backend auto`` stands for; ``precision`` None/'auto' lets auto pick it too.
    A first measurement (or any with ``refresh``) runs in a child process (see :func:`measure_in_child`)."""
    from edgecat.runtime import open_runtime

    if precision == "auto":
        precision = None
    threads = options.get("threads")
    if not refresh and remembered(bundle, precision, threads):
        choice = choose_backend(bundle, precision, threads=threads)
    else:
        log.info("auto: timing runtimes x precisions on this machine (once)")
        choice = measure_in_child(bundle, precision, threads, refresh=refresh)
    if choice.threads and not options.get("threads"):
        options = {**options, "threads": choice.threads}
    # short enough for one 80-column line; `edgecat bench BUNDLE --backend auto` shows the why
    log.info("auto -> %s/%s, %s thread(s), %s", choice.backend, choice.precision,
             options.get("threads") or "default", "remembered" if choice.reused else "measured now")
    rt = open_runtime(bundle, choice.backend, choice.precision, **options)
    rt.auto_choice = choice
    return rt


def explain(choice: Choice) -> tuple[list[list[str]], str]:
    """Rows (backend, precision, threads, ms, agreement, status) and one line: what bench prints for auto."""
    rows = []
    for t in sorted(choice.timings, key=lambda t: (t.ms is None, t.ms or 0.0)):
        rows.append([t.backend, t.precision, str(t.threads or "default"), "-" if t.ms is None else f"{t.ms:.2f}",
                     "-" if t.agreement is None else f"{100 * t.agreement:.2f}%",
                     t.status + (f" ({t.note})" if t.note else "")])
    how = "remembered for this machine" if choice.reused else "measured now"
    threads = f"{choice.threads} thread(s)" if choice.threads else "default threads"
    return rows, f"auto -> {choice.backend}/{choice.precision}, {threads} ({how}): {choice.reason}"
