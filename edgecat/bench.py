"""Per-image latency of every backend x precision x batch, side by side, against a target.

Everything runs through the runtime interface and the shared image path (:mod:`edgecat.imaging`),
so the figures are what ``predict`` and ``stream`` really do. No TensorFlow is imported unless a
Keras backend is asked for (and then only if it is installed; otherwise that row is skipped).

Two measurements per combination, both after ``warmup`` untimed runs:

* **model-only**: one prepared batch through the runtime's model call, again and again
  (``Runtime.last_inference_ms``);
* **end-to-end**: image file -> probability: read + decode (``decode``), resize + batch + dtype
  (``preprocess``), model call (``inference``), class probabilities + labels (``postprocess``). The
  four stages are contiguous intervals of one clock, so they add up to the end-to-end time.

All latencies are per image (a batch's time divided by its size), in milliseconds.

``--backend auto`` is benched like any other row, on the runtime ``open_runtime(bundle, "auto", ...)``
returns (the choice remembered for this machine in the manifest, else one measured now in a child
process; ``auto_refresh`` measures again). Its rows keep ``backend: "auto"`` and say what it resolved to
(``auto_backend``, ``precision``, ``threads``); the report also carries the candidates it measured and
why it picked the winner. Precision ``auto`` (auto picks the precision too) is meaningful only for the
auto backend; it is the auto backend's precision when none is given, as for ``predict``.

JSON report (``schema: "edgecat-bench"``, ``schema_version: 1``; stable: fields are only ever added;
``threads``, ``auto_backend``, ``asked_precision``, ``auto`` and ``auto_choices`` were added with
``--backend auto``)::

    {
      "schema": "edgecat-bench", "schema_version": 1, "created": ISO-8601 UTC,
      "bundle": {"path", "name", "backbone", "input_size": [h, w], "classes": [...]},
      "machine": {"platform", "processor", "physical_cores", "logical_cores", "load_avg": [1, 5, 15],
                  "gpu": str | null, "versions": {"edgecat", "python", "numpy", "onnxruntime", ...}},
      "config": {"backends", "precisions", "batches", "images", "warmup", "iters", "seconds",
                 "target_ms", "options"},
      "results": [{
        "backend", "precision", "batch",
        "status": "ok" | "skipped" | "failed", "reason": str | null,
        "artifact": str | null, "model_mb": float | null,
        "model_only":  {"p50", "p90", "p99", "mean", "std", "min", "iters"} | null,
        "end_to_end":  {"p50", "p90", "p99", "mean", "std", "min", "iters"} | null,
        "stages_ms": {"decode", "preprocess", "inference", "postprocess"} | null   (means per image),
        "fps": float | null                       (images/s end-to-end, else model-only),
        "accuracy": float | null, "accuracy_images": int,
        "peak_rss_mb": float | null, "gpu_mem_mb": float | null,
        "target_ms": float, "passed": bool | null (p99 end-to-end, else model-only, <= target),
        "speedup_vs_keras_predict": float | null  (keras-predict model-only p50 at the same batch
                                                   / this row's model-only p50, same run),
        "speedup_e2e_vs_keras_predict": float | null,
        "threads": int | null                     (the runtime's CPU threads; null: its default),
        "auto_backend": str | null                (auto rows: the backend auto resolved to; "precision"
                                                   is then the precision it picked),
        "asked_precision": str | null             (auto rows: the precision asked for; "auto": auto picked it)
      }],
      "auto": {                                   (null unless an auto row opened; the first asked precision)
        "asked_precision": "auto" | "fp32" | ..., "backend", "precision", "threads": int | null,
        "reason": str, "reused": bool (remembered for this machine, not measured in this run),
        "machine": str (the key it is remembered under),
        "timings": [{"backend", "precision", "threads", "ms", "agreement",
                     "status": "timed" | "chosen" | "refused" | "failed" | "unchecked", "note"}],
        "line": str                               (the one-line summary bench prints)
      } | null,
      "auto_choices": [same objects, one per asked precision of the auto rows]
    }
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts, imaging
from edgecat.bundle import Bundle, now_iso, tool_versions
from edgecat.errors import EdgecatError, first_line

log = logging.getLogger(__name__)

SCHEMA = "edgecat-bench"
SCHEMA_VERSION = 1
DEFAULT_BACKENDS = ("keras-predict", "keras", "onnxruntime")
AUTO = "auto"
DEFAULT_TARGET_MS = 50.0
#: without --iters/--seconds: stop a measurement at DEFAULT_ITERS or DEFAULT_SECONDS, whichever first
DEFAULT_ITERS = 100
DEFAULT_SECONDS = 10.0
MIN_ITERS = 5
STAGES = ("decode", "preprocess", "inference", "postprocess")
KERAS_BACKENDS = artifacts.kind("keras").backends

#: Progress callback: (description of the current combination, fraction done 0..1)
ProgressFn = Callable[[str, float], None]


@dataclass
class BenchConfig:
    #: None: :func:`default_backends` of the bundle (DEFAULT_BACKENDS, plus auto where it has exports)
    backends: list[str] | None = None
    #: None: fp32, and auto for the auto backend (what predict runs without --precision)
    precisions: list[str] | None = None
    batches: list[int] = field(default_factory=lambda: [1])
    images: str | None = None
    warmup: int = 10
    iters: int | None = None
    seconds: float | None = None
    target_ms: float = DEFAULT_TARGET_MS
    end_to_end: bool = True
    reduced_decode: bool | None = None  # None: imaging.REDUCED_DECODE (off unless EDGECAT_REDUCED_DECODE=1)
    options: dict[str, Any] = field(default_factory=dict)  # runtime options: threads, url, ...
    auto_refresh: bool = False  # auto rows: measure again instead of reusing the remembered choice

    def validate(self) -> None:
        from edgecat.artifacts import PRECISIONS
        from edgecat.runtime import BACKENDS

        if self.backends is not None and not self.backends:
            raise EdgecatError("no backend given (--backend auto,keras-predict,keras,onnxruntime,...)")
        for b in self.backends or ():
            if b != AUTO and b not in BACKENDS:
                raise EdgecatError(f"unknown backend '{b}' (choose from: {AUTO}, {', '.join(BACKENDS)})")
        if self.precisions is not None and not self.precisions:
            raise EdgecatError("no precision given (--precision fp32,fp16,int8,auto)")
        for p in self.precisions or ():
            if p != AUTO and p not in PRECISIONS:
                raise EdgecatError(f"unknown precision '{p}' (choose from: {', '.join(PRECISIONS)}, {AUTO})")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise EdgecatError(f"--batch sizes must be whole numbers >= 1 (got {self.batches})")
        if self.warmup < 0:
            raise EdgecatError("--warmup must be >= 0")
        if self.iters is not None and self.iters < 1:
            raise EdgecatError("--iters must be >= 1")
        if self.seconds is not None and self.seconds <= 0:
            raise EdgecatError("--seconds must be > 0")
        if self.target_ms <= 0:
            raise EdgecatError("--target-ms must be > 0")


@dataclass
class Latency:
    """Per-image latency statistics in ms."""

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    iters: int

    @classmethod
    def of(cls, per_image_ms: list[float] | np.ndarray) -> Latency:
        a = np.asarray(per_image_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(a.mean()), float(a.std()), float(a.min()), int(a.size))


@dataclass
class BenchResult:
    backend: str
    precision: str
    batch: int
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    artifact: str | None = None
    model_mb: float | None = None
    model_only: Latency | None = None
    end_to_end: Latency | None = None
    stages_ms: dict[str, float] | None = None
    fps: float | None = None
    accuracy: float | None = None
    accuracy_images: int = 0
    peak_rss_mb: float | None = None
    gpu_mem_mb: float | None = None
    target_ms: float = DEFAULT_TARGET_MS
    passed: bool | None = None
    speedup_vs_keras_predict: float | None = None
    speedup_e2e_vs_keras_predict: float | None = None
    threads: int | None = None
    auto_backend: str | None = None
    asked_precision: str | None = None  # auto rows: the precision asked for ("auto": auto picked it)

    @property
    def label(self) -> str:
        backend = f"{self.backend}->{self.auto_backend}" if self.auto_backend else self.backend
        return f"{backend}/{self.prec_text}/b{self.batch}"

    @property
    def prec_text(self) -> str:
        """The precision, marked when auto picked it (so auto rows asked fp32 and auto stay apart)."""
        return f"{self.precision} (auto)" if self.asked_precision == "auto" else self.precision

    @property
    def headline(self) -> Latency | None:
        """End-to-end where measured, else model-only: what the target is judged on."""
        return self.end_to_end or self.model_only


@dataclass
class BenchReport:
    bundle: dict[str, Any]
    machine: dict[str, Any]
    config: dict[str, Any]
    results: list[BenchResult]
    created: str = field(default_factory=now_iso)
    #: asked precision -> the choice behind the auto rows (edgecat.autoselect.Choice)
    auto_choices: dict[str, Any] = field(default_factory=dict)

    def auto_dicts(self) -> list[dict[str, Any]]:
        from edgecat.autoselect import explain

        return [{"asked_precision": asked, **choice.to_dict(), "line": explain(choice)[1]}
                for asked, choice in self.auto_choices.items()]

    def to_dict(self) -> dict[str, Any]:
        from edgecat.redact import redact_obj

        autos = self.auto_dicts()
        return redact_obj({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.created,
                           "bundle": self.bundle, "machine": self.machine, "config": self.config,
                           "results": [dataclasses.asdict(r) for r in self.results],  # a Triton URL's password
                           "auto": autos[0] if autos else None, "auto_choices": autos})

    def write_json(self, path: str | Path) -> Path:
        from edgecat.fsutil import write_json

        write_json(path, self.to_dict())
        return Path(path)


# ----------------------------------------------------------------------------------- inputs
@dataclass
class ImageSet:
    files: list[Path]
    labels: list[int | None]
    synthetic: bool = False

    @property
    def labelled(self) -> bool:
        return any(lab is not None for lab in self.labels)


def image_set(bundle: Bundle, images: str | Path | None, workdir: Path, n_synthetic: int = 32) -> ImageSet:
    """Files to time end to end. Class folders named like the bundle's classes give accuracy.
    Without ``images``: synthetic JPEGs at twice the input size (decode + resize are still real)."""
    if images is None:
        from edgecat.synthetic import make_image, write_image

        rng = np.random.default_rng(0)
        h, _ = bundle.input_size
        files = []
        for i in range(n_synthetic):
            p = workdir / f"synthetic-{i:03d}.jpg"
            write_image(p, make_image(i % 2, size=2 * h, rng=rng))
            files.append(p)
        return ImageSet(files, [None] * len(files), synthetic=True)
    root = Path(images)
    if not root.exists():
        raise EdgecatError(f"image folder not found: {root}")
    files = imaging.list_images([root])
    if not files:
        raise EdgecatError(f"no images in {root} (looked for {', '.join(sorted(imaging.IMAGE_EXTENSIONS))})")
    from edgecat.data import check_images  # cached by path+size+mtime: repeat runs cost nothing

    checks = check_images([str(f) for f in files])
    bad = [f for f in files if checks[str(f)].status == "skipped"]
    if bad:
        log.warning("bench: leaving out %d unreadable image(s) in %s, e.g. %s (%s)", len(bad), root,
                    bad[0].name, checks[str(bad[0])].reason)
        files = [f for f in files if checks[str(f)].status != "skipped"]
        if not files:
            raise EdgecatError(f"no readable images in {root} ({len(bad)} corrupt or not images)")
    index = {c.lower(): i for i, c in enumerate(bundle.classes)}
    labels: list[int | None] = []
    for f in files:
        rel = f.relative_to(root).parts if root.is_dir() else ()
        labels.append(_class_of(rel[0], index) if len(rel) > 1 else None)
    # a fixed shuffle, so a short run still sees every class
    order = list(range(len(files)))
    random.Random(0).shuffle(order)
    return ImageSet([files[i] for i in order], [labels[i] for i in order])


def _class_of(folder: str, index: dict[str, int]) -> int | None:
    """Folder name -> class index; 'cats' and 'dogs' folders count for classes 'cat' and 'dog'."""
    name = folder.lower()
    for cand in (name, name[:-1] if name.endswith("s") else None, name[:-2] if name.endswith("es") else None):
        if cand and cand in index:
            return index[cand]
    return None


# ----------------------------------------------------------------------------------- machine
def machine_info(device: int = 0) -> dict[str, Any]:
    """The machine line; ``gpu`` is CUDA device ``device`` (the ordinal the GPU runtimes were given,
    among the devices CUDA_VISIBLE_DEVICES / --device leave visible)."""
    try:
        import psutil

        physical, logical = psutil.cpu_count(logical=False), psutil.cpu_count()
    except ImportError:
        physical, logical = None, os.cpu_count()
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    with contextlib.suppress(Exception):
        from edgecat.runtime.cuda import current_gpu

        gpu = " ".join(current_gpu(device))
    return {"platform": platform.platform(), "processor": cpu, "physical_cores": physical,
            "logical_cores": logical, "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "gpu": gpu, "versions": tool_versions("numpy", "cv2", "onnxruntime", "tensorrt", "tensorflow", "keras")
            if _tf_loaded() else tool_versions("numpy", "cv2", "onnxruntime", "tensorrt")}


def _tf_loaded() -> bool:
    import sys

    return "tensorflow" in sys.modules


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
    if backend in KERAS_BACKENDS:
        try:
            missing = importlib.util.find_spec("tensorflow") is None
        except (ImportError, ValueError):
            missing = True
        if missing:
            return "TensorFlow not installed"
    return None


# ----------------------------------------------------------------------------------- timing
class _Budget:
    """Stop after ``iters`` runs, or ``seconds``, or (defaults) whichever of 100 runs / 10 s first."""

    def __init__(self, iters: int | None, seconds: float | None) -> None:
        if iters is None and seconds is None:
            iters, seconds, self.floor = DEFAULT_ITERS, DEFAULT_SECONDS, MIN_ITERS
        else:
            self.floor = 1
        self.iters, self.seconds = iters, seconds
        self.t0 = time.perf_counter()

    def done(self, n: int) -> bool:
        if self.iters is not None and n >= self.iters:
            return True
        if self.seconds is not None and n >= self.floor and time.perf_counter() - self.t0 >= self.seconds:
            return True
        return False

    def fraction(self, n: int) -> float:
        parts = []
        if self.iters:
            parts.append(n / self.iters)
        if self.seconds:
            parts.append((time.perf_counter() - self.t0) / self.seconds)
        return min(1.0, max(parts) if parts else 1.0)


def _model_only(rt: Any, batch: np.ndarray, cfg: BenchConfig, tick: Callable[[float], None]) -> Latency:
    for _ in range(cfg.warmup):
        rt.infer_raw(batch)
    prepared = rt.prepare(batch)
    times: list[float] = []
    budget = _Budget(cfg.iters, cfg.seconds)
    while not budget.done(len(times)):
        t0 = time.perf_counter()
        rt.run_prepared(prepared)  # the model call alone, on an already prepared batch
        times.append((time.perf_counter() - t0) * 1000.0 / len(batch))
        tick(budget.fraction(len(times)))
    return Latency.of(times)


@dataclass
class _E2E:
    latency: Latency
    stages: dict[str, float]
    correct: int
    labelled: int


def _end_to_end(rt: Any, bundle: Bundle, images: ImageSet, batch_size: int, cfg: BenchConfig,
                tick: Callable[[float], None]) -> _E2E:
    size = bundle.input_size
    n_files = len(images.files)
    seen: dict[int, bool] = {}
    pos = 0

    def one(record: bool) -> tuple[float, dict[str, float]]:
        nonlocal pos
        idx = [(pos + i) % n_files for i in range(batch_size)]
        pos += batch_size
        t0 = time.perf_counter()
        decoded = [imaging.decode_image(images.files[i], size, cfg.reduced_decode) for i in idx]
        t1 = time.perf_counter()
        batch = imaging.to_batch([imaging.resize(im, size) for im in decoded], dtype="uint8")
        prepared = rt.prepare(batch)
        t2 = time.perf_counter()
        raw = rt.run_prepared(prepared)
        t3 = time.perf_counter()
        probs = bundle.class_probs(raw)
        labels = bundle.labels_from_probs(probs)
        t4 = time.perf_counter()
        if record:
            for i, name in zip(idx, labels):
                if i not in seen and images.labels[i] is not None:
                    seen[i] = bundle.classes.index(name) == images.labels[i]
        ms = [(b - a) * 1000.0 / batch_size for a, b in ((t0, t1), (t1, t2), (t2, t3), (t3, t4))]
        return (t4 - t0) * 1000.0 / batch_size, dict(zip(STAGES, ms))

    for _ in range(cfg.warmup):
        one(False)
    totals: list[float] = []
    sums = dict.fromkeys(STAGES, 0.0)
    budget = _Budget(cfg.iters, cfg.seconds)
    while not budget.done(len(totals)):
        total, stages = one(True)
        totals.append(total)
        for k, v in stages.items():
            sums[k] += v
        tick(budget.fraction(len(totals)))
    means = {k: v / len(totals) for k, v in sums.items()}
    return _E2E(Latency.of(totals), means, sum(seen.values()), len(seen))


# ----------------------------------------------------------------------------------- the run
def _open(bundle: Bundle, res: BenchResult, options: dict[str, Any], choices: dict[str, Any]) -> Any:
    """The row's runtime. For auto: the one it resolved to; the row then shows what that is, and the
    choice (first per asked precision) goes into the report."""
    from edgecat.runtime import open_runtime

    rt = open_runtime(bundle, res.backend, res.precision, **options)
    choice = getattr(rt, "auto_choice", None)
    if choice is not None:
        choices.setdefault(res.precision, choice)
        res.asked_precision = res.precision
        res.auto_backend, res.precision = choice.backend, choice.precision
    res.threads = rt.options.get("threads")
    return rt


def _one(bundle: Bundle, backend: str, precision: str, batch: int, images: ImageSet, cfg: BenchConfig,
         progress: ProgressFn | None, options: dict[str, Any] | None = None,
         choices: dict[str, Any] | None = None) -> BenchResult:
    res = BenchResult(backend, precision, batch, target_ms=cfg.target_ms)
    reason = skip_reason(backend)
    if reason:
        res.status, res.reason = "skipped", reason
        return res
    reset_peak_rss()
    try:
        rt = _open(bundle, res, cfg.options if options is None else options, {} if choices is None else choices)
    except EdgecatError as exc:
        res.status, res.reason = "skipped", str(exc)
        return res
    label = res.label
    phases = 2 if cfg.end_to_end else 1

    def ticker(phase: int) -> Callable[[float], None]:
        def tick(frac: float) -> None:
            if progress:
                progress(label, (phase + frac) / phases)
        return tick

    try:
        with rt:
            res.artifact = rt.artifact_key
            res.model_mb = rt.model_bytes / 1e6 if rt.model_bytes else None
            size = bundle.input_size
            sample = imaging.load_batch([images.files[i % len(images.files)] for i in range(batch)], size).images
            res.model_only = _model_only(rt, sample, cfg, ticker(0))
            if cfg.end_to_end:
                e2e = _end_to_end(rt, bundle, images, batch, cfg, ticker(1))
                res.end_to_end, res.stages_ms = e2e.latency, e2e.stages
                if e2e.labelled:
                    res.accuracy, res.accuracy_images = e2e.correct / e2e.labelled, e2e.labelled
            with contextlib.suppress(Exception):  # a best-effort figure; never fails the row
                value = rt.gpu_memory_bytes()
                res.gpu_mem_mb = value / 2**20 if value is not None else None
    except EdgecatError as exc:
        res.status, res.reason = "failed", str(exc)
        return res
    except Exception as exc:  # noqa: BLE001 - one broken runtime must not end the whole bench
        log.debug("bench %s failed", label, exc_info=True)
        res.status, res.reason = "failed", f"{type(exc).__name__}: {first_line(exc)[:200]}"
        return res
    res.peak_rss_mb = peak_rss_mb()
    head = res.headline
    res.fps = 1000.0 / head.mean if head and head.mean > 0 else None
    res.passed = bool(head.p99 <= cfg.target_ms) if head else None
    return res


def add_speedups(results: list[BenchResult]) -> None:
    """Speed-up of each row over keras-predict at the same batch, measured in the same run."""
    base = {r.batch: r for r in results if r.backend == "keras-predict" and r.status == "ok"}
    for r in results:
        b = base.get(r.batch)
        if r.status != "ok" or b is None:
            continue
        if r.model_only and b.model_only and r.model_only.p50 > 0:
            r.speedup_vs_keras_predict = b.model_only.p50 / r.model_only.p50
        if r.end_to_end and b.end_to_end and r.end_to_end.p50 > 0:
            r.speedup_e2e_vs_keras_predict = b.end_to_end.p50 / r.end_to_end.p50


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edgecat-bench-") as d:
        yield Path(d)


def default_backends(bundle: Bundle) -> list[str]:
    """DEFAULT_BACKENDS, plus auto where the bundle has an export it can pick from (predict's default
    then), so the table shows what auto picks beside the baselines; without exports auto would only skip."""
    from edgecat.runtime import default_backend

    return [*DEFAULT_BACKENDS, AUTO] if default_backend(bundle) == AUTO else list(DEFAULT_BACKENDS)


def _row(bundle: Bundle, backend: str, precision: str, batch: int, images: ImageSet, cfg: BenchConfig,
         progress: ProgressFn, choices: dict[str, Any]) -> BenchResult:
    """One combination: skipped up front when the backend cannot run that precision."""
    if backend == AUTO:  # re-measured once per asked precision with auto_refresh, then reused
        fresh = cfg.auto_refresh and precision not in choices
        return _one(bundle, backend, precision, batch, images, cfg, progress,
                    {**cfg.options, "refresh": True} if fresh else cfg.options, choices)
    if precision == AUTO:
        return BenchResult(backend, precision, batch, status="skipped", target_ms=cfg.target_ms,
                           reason=f"precision auto is picked by measurement: with --backend auto only, not {backend}")
    runs = artifacts.precisions_of(backend)
    if precision not in runs:
        return BenchResult(backend, precision, batch, status="skipped", target_ms=cfg.target_ms,
                           reason=f"{backend} runs {'/'.join(runs)} only ({precision}: --backend auto, "
                                  "onnxruntime, openvino, litert or tensorrt)")
    return _one(bundle, backend, precision, batch, images, cfg, progress)


def run_bench(bundle: Bundle | str | Path, config: BenchConfig | None = None,
              progress: ProgressFn | None = None) -> BenchReport:
    """Measure every backend x precision x batch of ``config`` on ``bundle``; unavailable
    combinations come back as ``skipped`` rows with the reason, and the run goes on."""
    cfg = config or BenchConfig()
    cfg.validate()
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    backends = cfg.backends or default_backends(bundle)
    combos = [(b, p, n) for b in backends for p in (cfg.precisions or [AUTO if b == AUTO else "fp32"])
              for n in cfg.batches]
    results: list[BenchResult] = []
    choices: dict[str, Any] = {}
    with _workdir() as work:
        images = image_set(bundle, cfg.images, work)
        for i, (backend, precision, batch) in enumerate(combos):
            def sub(label: str, frac: float, i: int = i) -> None:
                if progress:
                    progress(label, (i + frac) / len(combos))

            log.debug("bench %s/%s/b%d", backend, precision, batch)
            res = _row(bundle, backend, precision, batch, images, cfg, sub, choices)
            results.append(res)
            if progress:
                progress(res.label, (i + 1) / len(combos))
    add_speedups(results)
    conf = dataclasses.asdict(cfg)
    conf["backends"] = backends
    conf["precisions"] = list(dict.fromkeys(p for _, p, _ in combos))  # as asked (auto rows: "auto")
    conf["images"] = str(cfg.images) if cfg.images else None
    conf["synthetic_images"] = images.synthetic
    conf["num_images"] = len(images.files)
    bundle_info = {"path": str(bundle.path), "name": bundle.name, "backbone": bundle.backbone,
                   "input_size": list(bundle.input_size), "classes": bundle.classes}
    device = cfg.options.get("device", 0)  # the tensorrt runtime's CUDA ordinal (openvino's is a name)
    return BenchReport(bundle=bundle_info, machine=machine_info(int(device) if str(device).isdigit() else 0),
                       config=conf, results=results,
                       auto_choices=choices)


# ----------------------------------------------------------------------------------- output
#: wide layout: one row per run, every figure in one line (needs ~135 columns)
WIDE_COLUMNS = ("backend", "prec", "batch", "status", "MB", "acc", "model p50", "e2e p50", "e2e p99",
                "decode/pre/infer/post", "FPS", "vs keras-predict", "target")
#: narrow layout (80-130 columns): latency and verdict first, then where the time goes
LATENCY_COLUMNS = ("backend", "prec", "batch", "status", "model\np50", "e2e\np50", "e2e\np99", "FPS", "target")
DETAIL_COLUMNS = ("run", "MB", "acc", "decode", "prep", "infer", "post", "vs keras\npredict")


def _key(header: str) -> str:
    """Column header (maybe on two lines) -> the key of the figure it shows."""
    return "vs keras-predict" if header.startswith("vs keras") else header.replace("\n", " ")


def _fmt(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _backend_cell(r: BenchResult) -> str:
    """auto rows say what auto resolved to, and with how many threads."""
    if r.auto_backend is None:
        return r.backend
    return f"{r.backend} -> {r.auto_backend}" + (f" ({r.threads} thr)" if r.threads else "")


def _cells(r: BenchResult, note: int | None) -> dict[str, str]:
    """Every figure of one row as text, keyed by what it is (layouts pick and name columns)."""
    if r.status != "ok":
        colour = "yellow" if r.status == "skipped" else "red"
        return {"backend": _backend_cell(r), "prec": r.prec_text, "batch": str(r.batch),
                "status": f"[{colour}]{r.status} [{note}][/]"}
    e2e, st = r.end_to_end, r.stages_ms or {}
    return {
        "backend": _backend_cell(r), "prec": r.prec_text, "batch": str(r.batch), "status": "[green]ok[/]",
        "MB": _fmt(r.model_mb, ".1f"), "acc": _fmt(r.accuracy, ".3f"),
        "model p50": _fmt(r.model_only.p50 if r.model_only else None),
        "e2e p50": _fmt(e2e.p50 if e2e else None), "e2e p99": _fmt(e2e.p99 if e2e else None),
        "decode/pre/infer/post": "/".join(f"{st[s]:.2f}" for s in STAGES) if st else "-",
        "decode": _fmt(st.get("decode")), "prep": _fmt(st.get("preprocess")),
        "infer": _fmt(st.get("inference")), "post": _fmt(st.get("postprocess")),
        "FPS": _fmt(r.fps, ".0f"),
        "vs keras-predict": f"{r.speedup_vs_keras_predict:.1f}x" if r.speedup_vs_keras_predict else "-",
        "target": "[green]pass[/]" if r.passed else "[red]FAIL[/]", "run": r.label,
    }


def _table(columns: tuple[str, ...], rows: list[dict[str, str]], title: str | None) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in columns:
        key = _key(col)
        left = key in ("backend", "prec", "status", "target", "run")
        table.add_column(col, justify="left" if left else "right", no_wrap=key not in ("backend", "run"),
                         min_width=max(len(part) for part in col.split("\n")))
    for row in rows:
        table.add_row(*(row.get(_key(c), "-") for c in columns))
    return table


AUTO_COLUMNS = ("backend", "prec", "threads", "ms", "agreement", "status")


def render_auto(report: BenchReport) -> list[Any]:
    """Per asked precision of the auto rows: the candidates auto measured (batch 1 median ms per
    image, label agreement with FP32, verdict) and the one line saying what it picked and why."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from edgecat.autoselect import explain

    out: list[Any] = []
    for asked, choice in report.auto_choices.items():
        rows, line = explain(choice)
        table = Table(title=f"--backend auto --precision {asked}: candidates (batch 1, median ms per image)",
                      title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True)
        for col in AUTO_COLUMNS:
            table.add_column(col, justify="right" if col in ("threads", "ms", "agreement") else "left",
                             no_wrap=col != "status")
        for row in rows:
            table.add_row(*row)
        out += [Text(""), table, Text(line)]
    return out


def render_table(report: BenchReport, width: int | None = None) -> Any:
    """A rich table in the spirit of Ultralytics' benchmark table, readable at ``width`` columns:
    one wide table where it fits, else a latency table and a where-the-time-goes table. Rows that
    did not run say why in numbered notes below; then what ``--backend auto`` picked and why."""
    from rich.console import Console, Group
    from rich.text import Text

    target = report.config.get("target_ms", DEFAULT_TARGET_MS)
    b = report.bundle
    title = (f"edgecat bench: {b['name']} ({b['backbone']} {b['input_size'][0]}x{b['input_size'][1]}), "
             f"ms per image, target p99 <= {target:g} ms")
    notes: list[str] = []
    rows = []
    for r in report.results:
        if r.status != "ok":
            notes.append(f"[{len(notes) + 1}] {r.label} {r.status}: {r.reason}")
        rows.append(_cells(r, len(notes) if r.status != "ok" else None))
    note_text = [Text(n, style="dim") for n in notes]
    wide = _table(WIDE_COLUMNS, rows, title)
    needed = Console(width=1000).measure(wide).maximum
    auto = render_auto(report)
    if width is None or needed <= width:
        return Group(wide, *note_text, *auto)
    parts = [_table(LATENCY_COLUMNS, rows, title)]
    ok_rows = [row for row, r in zip(rows, report.results) if r.status == "ok"]
    if ok_rows:
        parts.append(_table(DETAIL_COLUMNS, ok_rows, "where the time goes (ms per image), size, accuracy"))
    return Group(*parts, *note_text, *auto)


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """Per-image latency per backend/precision/batch (p50 bar, p90-p99 whisker), target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgecat.fsutil import atomic_path

    rows = [r for r in report.results if r.status == "ok" and r.headline]
    target = float(report.config.get("target_ms", DEFAULT_TARGET_MS))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    if rows:
        x = np.arange(len(rows))
        e2e = [r.end_to_end.p50 if r.end_to_end else np.nan for r in rows]
        model = [r.model_only.p50 if r.model_only else np.nan for r in rows]
        p99 = [r.headline.p99 for r in rows]  # type: ignore[union-attr]
        ax.bar(x - 0.2, model, 0.4, label="model-only p50")
        ax.bar(x + 0.2, e2e, 0.4, label="end-to-end p50")
        ax.scatter(x + 0.2, p99, marker="_", s=200, color="black", label="p99", zorder=3)
        ax.set_xticks(x, [r.label.replace("/", "\n") for r in rows], fontsize=8)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no backend ran", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(target, color="red", linestyle="--", label=f"target {target:g} ms")
    ax.set_ylabel("ms per image (log)")
    b = report.bundle
    ax.set_title(f"{b['name']}: {b['backbone']} {b['input_size'][0]}x{b['input_size'][1]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path


__all__ = [
    "AUTO",
    "SCHEMA",
    "SCHEMA_VERSION",
    "BenchConfig",
    "BenchReport",
    "BenchResult",
    "Latency",
    "add_speedups",
    "default_backends",
    "render_auto",
    "render_table",
    "run_bench",
    "write_plot",
]
