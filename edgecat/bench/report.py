"""The bench report: what ``edgecat bench --json`` writes, as typed records.

JSON report (``schema: "edgecat-bench"``, ``schema_version: 1``; stable: fields are only ever added;
``threads``, ``auto_backend``, ``asked_precision``, ``auto`` and ``auto_choices`` were added with
``--backend auto``; ``usable_cores``, the physical cores taskset, a cpuset or a CPU quota leave this
process, and so the CPU runtimes' default threads, later)::

    {
      "schema": "edgecat-bench", "schema_version": 1, "created": ISO-8601 UTC,
      "bundle": {"path", "name", "backbone", "input_size": [h, w], "classes": [...]},
      "machine": {"platform", "processor", "physical_cores", "logical_cores", "usable_cores", "load_avg": [1, 5, 15],
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

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from edgecat import backends
from edgecat.artifacts import PRECISIONS
from edgecat.bundle import now_iso
from edgecat.errors import EdgecatError

SCHEMA = "edgecat-bench"
SCHEMA_VERSION = 1
AUTO = backends.AUTO
DEFAULT_BACKENDS = backends.DEFAULT_BENCH
DEFAULT_TARGET_MS = 50.0
STAGES = ("decode", "preprocess", "inference", "postprocess")


class BundleInfo(TypedDict):
    path: str
    name: str
    backbone: str
    input_size: list[int]
    classes: list[str]


class MachineInfo(TypedDict):
    platform: str
    processor: str
    physical_cores: int | None
    logical_cores: int | None
    usable_cores: int
    load_avg: list[float] | None
    gpu: str | None
    versions: dict[str, str]


class AutoEntry(TypedDict):
    """One asked precision of the auto rows: :class:`edgecat.select.Choice`'s fields, plus these."""

    asked_precision: str
    backend: str
    precision: str
    threads: int | None
    reason: str
    reused: bool
    machine: str
    timings: list[dict[str, Any]]
    line: str


@dataclass
class BenchConfig:
    #: None: :func:`edgecat.bench.default_backends` of the bundle (DEFAULT_BACKENDS, plus auto where it has exports)
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
        if self.backends is not None and not self.backends:
            raise EdgecatError(f"no backend given (--backend {','.join(backends.choices()[:4])},...)")
        for b in self.backends or ():
            if b not in backends.choices():
                raise EdgecatError(f"unknown backend '{b}' (choose from: {', '.join(backends.choices())})")
        if self.precisions is not None and not self.precisions:
            raise EdgecatError(f"no precision given (--precision {','.join(PRECISIONS)},{AUTO})")
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
    #: the precision that ran (auto rows: the one auto picked)
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
        return f"{self.precision} (auto)" if self.asked_precision == AUTO else self.precision

    @property
    def headline(self) -> Latency | None:
        """End-to-end where measured, else model-only: what the target is judged on."""
        return self.end_to_end or self.model_only


@dataclass
class BenchReport:
    bundle: BundleInfo
    machine: MachineInfo
    config: dict[str, Any]
    results: list[BenchResult]
    created: str = field(default_factory=now_iso)
    #: asked precision -> the choice behind the auto rows (edgecat.select.Choice)
    auto_choices: dict[str, Any] = field(default_factory=dict)

    def auto_entries(self) -> list[AutoEntry]:
        from edgecat.select import explain

        return [AutoEntry(asked_precision=asked, **choice.to_dict(), line=explain(choice)[1])  # type: ignore[typeddict-item]
                for asked, choice in self.auto_choices.items()]

    def to_dict(self) -> dict[str, Any]:
        from edgecat.redact import redact_obj

        autos = self.auto_entries()
        return redact_obj({"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": self.created,
                           "bundle": self.bundle, "machine": self.machine, "config": self.config,
                           "results": [dataclasses.asdict(r) for r in self.results],  # a Triton URL's password
                           "auto": autos[0] if autos else None, "auto_choices": autos})

    def write_json(self, path: str | Path) -> Path:
        from edgecat.fsutil import write_json

        write_json(path, self.to_dict())
        return Path(path)


__all__ = ["AUTO", "DEFAULT_BACKENDS", "DEFAULT_TARGET_MS", "SCHEMA", "SCHEMA_VERSION", "STAGES", "AutoEntry",
           "BenchConfig", "BenchReport", "BenchResult", "BundleInfo", "Latency", "MachineInfo"]
