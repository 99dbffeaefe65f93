"""A bench run: every backend x precision x batch of a :class:`BenchConfig`, one row each.

Everything runs through the runtime interface and the shared image path (:mod:`edgecat.imaging`),
so the figures are what ``predict`` and ``stream`` really do. No TensorFlow is imported unless a
Keras backend is asked for (and then only if it is installed; otherwise that row is skipped).

``--backend auto`` is benched like any other row, on the runtime :func:`edgecat.select.open_backend`
opens for it (the choice remembered for this machine in the manifest, else one measured now in a
child process; ``auto_refresh`` measures again). Its rows keep ``backend: "auto"`` and say what it
resolved to (``auto_backend``, ``precision``, ``threads``); the report also carries the choice it
returned: the candidates it measured and why it picked the winner. Precision ``auto`` (auto picks
the precision too) is meaningful only for the auto backend; it is the auto backend's precision when
none is given, as for ``predict``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgecat import artifacts, imaging
from edgecat.backends import auto_candidates
from edgecat.bench.measure import end_to_end, machine_info, model_only, peak_rss_mb, reset_peak_rss, skip_reason
from edgecat.bench.report import AUTO, DEFAULT_BACKENDS, BenchConfig, BenchReport, BenchResult, BundleInfo
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError, first_line
from edgecat.splits import ImageSet, image_set

log = logging.getLogger(__name__)

#: Progress callback: (description of the current combination, fraction done 0..1)
ProgressFn = Callable[[str, float], None]


def _open(bundle: Bundle, backend: str, precision: str, batch: int, cfg: BenchConfig, options: dict[str, Any],
          choices: dict[str, Any]) -> tuple[Any, BenchResult]:
    """The row's runtime, and its result row named after what runs: for auto, the backend and
    precision it resolved to (the choice, first per asked precision, goes into the report)."""
    from edgecat.select import open_backend

    rt, choice = open_backend(bundle, backend, precision, **options)
    res = BenchResult(backend, precision, batch, target_ms=cfg.target_ms, threads=rt.options.get("threads"))
    if choice is not None:
        choices.setdefault(precision, choice)
        res = dataclasses.replace(res, precision=choice.precision, asked_precision=precision,
                                  auto_backend=choice.backend)
    return rt, res


def _measure(rt: Any, res: BenchResult, bundle: Bundle, images: ImageSet, cfg: BenchConfig,
             progress: ProgressFn | None) -> None:
    """Fill ``res`` with the model-only and end-to-end figures of ``rt``."""
    phases = 2 if cfg.end_to_end else 1

    def ticker(phase: int) -> Callable[[float], None]:
        def tick(frac: float) -> None:
            if progress:
                progress(res.label, (phase + frac) / phases)
        return tick

    res.artifact = rt.artifact_key
    res.model_mb = rt.model_bytes / 1e6 if rt.model_bytes else None
    files = [images.files[i % len(images.files)] for i in range(res.batch)]
    res.model_only = model_only(rt, imaging.load_batch(files, bundle.input_size).images, cfg, ticker(0))
    if cfg.end_to_end:
        e2e = end_to_end(rt, bundle, images, res.batch, cfg, ticker(1))
        res.end_to_end, res.stages_ms = e2e.latency, e2e.stages
        if e2e.labelled:
            res.accuracy, res.accuracy_images = e2e.correct / e2e.labelled, e2e.labelled
    with contextlib.suppress(Exception):  # a best-effort figure; never fails the row
        value = rt.gpu_memory_bytes()
        res.gpu_mem_mb = value / 2**20 if value is not None else None


def _one(bundle: Bundle, backend: str, precision: str, batch: int, images: ImageSet, cfg: BenchConfig,
         progress: ProgressFn | None, options: dict[str, Any] | None = None,
         choices: dict[str, Any] | None = None) -> BenchResult:
    reason = skip_reason(backend)
    if reason:
        return BenchResult(backend, precision, batch, status="skipped", reason=reason, target_ms=cfg.target_ms)
    reset_peak_rss()
    try:
        rt, res = _open(bundle, backend, precision, batch, cfg, cfg.options if options is None else options,
                        {} if choices is None else choices)
    except EdgecatError as exc:
        return BenchResult(backend, precision, batch, status="skipped", reason=str(exc), target_ms=cfg.target_ms)
    try:
        with rt:
            _measure(rt, res, bundle, images, cfg, progress)
    except EdgecatError as exc:
        res.status, res.reason = "failed", str(exc)
        return res
    except Exception as exc:  # noqa: BLE001 - one broken runtime must not end the whole bench
        log.debug("bench %s failed", res.label, exc_info=True)
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
        others = [AUTO] + [b.name for b in auto_candidates(gpu=True) if precision in b.precisions]
        return BenchResult(backend, precision, batch, status="skipped", target_ms=cfg.target_ms,
                           reason=f"{backend} runs {'/'.join(runs)} only ({precision}: --backend "
                                  f"{', '.join(others[:-1])} or {others[-1]})")
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
    info = BundleInfo(path=str(bundle.path), name=bundle.name, backbone=bundle.backbone,
                      input_size=list(bundle.input_size), classes=bundle.classes)
    device = cfg.options.get("device", 0)  # the tensorrt runtime's CUDA ordinal (openvino's is a name)
    return BenchReport(bundle=info, machine=machine_info(int(device) if str(device).isdigit() else 0),
                       config=conf, results=results, auto_choices=choices)


__all__ = ["ProgressFn", "add_speedups", "default_backends", "run_bench"]
