"""``--backend auto``: the fastest backend x precision on THIS machine, chosen by measurement.

A policy above the runtimes: :mod:`edgecat.runtime` opens what it is told; this module decides what
to tell it. The order of ONNX Runtime, OpenVINO and LiteRT (and FP32/FP16/INT8 within each) changes
with the CPU (VNNI/AMX, ARM dot-product) and library versions, so it cannot be fixed in code. On first
use on a machine every available backend x exported precision (the backends the table in
:mod:`edgecat.backends` lets auto try) is timed on a few real images from the bundle (batch 1,
interleaved rounds, median), then judged from the fastest down against FP32 by the rules of
:mod:`edgecat.int8_guard`: on the bundle's labelled validation photos, accuracy may drop at most
0.3 points and at most 0.3% of the answers FP32 is confident about may flip (the bundle's own bounds
under ``int8_guard`` in the manifest win); where this machine has no photos, the figures the export
recorded on them are judged instead. The first candidate that passes is chosen; each refusal names the
rule that refused it. The winner, its figures and the bounds are remembered in the manifest under
``autoselect``, keyed by CPU/GPU model, library versions, threads and the cores this process may
use, so later runs reuse it at no cost; a re-exported artifact, a library upgrade or a container with
fewer cores makes a new measurement.

Callers that accept ``auto`` (predict, evaluate, stream, bench, the API) open through
:func:`open_backend`, which returns the runtime and the :class:`Choice` behind it (None for a named
backend).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts, backends, imaging, int8_guard, machine, splits, timing
from edgecat.bundle import Bundle, now_iso
from edgecat.errors import EdgecatError
from edgecat.runtime import Runtime, open_runtime, resolve_defaults
from edgecat.runtime.base import run_chunked

log = logging.getLogger(__name__)

AUTO = backends.AUTO
MANIFEST_KEY = "autoselect"
#: a runner-up's model-only time may be this factor of the choice's and still be timed by a stream
#: (edgecat.stream.shape_trial): how a runtime shares the cores with decoding is not in that figure
RUNNER_UP_WITHIN = 1.15


@dataclass
class Timing:
    backend: str
    precision: str
    threads: int | None = None  # None: the runtime's default (GPU backends)
    ms: float | None = None  # median ms per image, batch 1
    agreement: float | None = None  # label agreement with FP32 on the images it was judged on
    status: str = "timed"  # timed | chosen | refused | failed | unchecked
    note: str = ""  # why refused (the guard's reason, naming its rule) or failed
    rule: str | None = None  # the int8_guard rule that refused it
    fidelity: dict[str, Any] | None = None  # int8_guard.Fidelity figures against FP32 where judged


@dataclass
class Choice:
    backend: str
    precision: str
    reason: str
    timings: list[Timing] = field(default_factory=list)
    threads: int | None = None
    machine: str = ""
    reused: bool = False
    limits: dict[str, float] = field(default_factory=dict)  # the int8_guard bounds it was judged by
    judged_on: str = ""  # the images (or the export's record) the figures come from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **changes: Any) -> Choice:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["timings"] = [Timing(**{k: v for k, v in t.items() if k in Timing.__dataclass_fields__})
                            for t in known.get("timings", [])]
        return cls(**{**known, **changes})


# ------------------------------------------------------------------------------ machine identity
def machine_key(threads: int | None = None) -> str:
    """CPU model | GPU models | library versions | threads | usable cores: what the ranking depends on
    (a container or taskset with fewer cores than the machine is measured again)."""
    libs = ",".join(f"{k}={v}" for k, v in sorted(machine.library_versions().items()))
    gpus = ",".join(machine.gpu_models()) or "no-gpu"
    cores = machine.physical_cores()
    return f"{machine.cpu_model()} | {gpus} | {libs} | threads={threads or 'default'} | cores={cores}"


# ------------------------------------------------------------------------------ candidates
def artifact_key(backend: str, precision: str) -> str:
    """The file ``backend`` runs at ``precision`` (an auto candidate always has one)."""
    key = backends.get(backend).artifact_key(precision)
    if key is None:
        raise EdgecatError(f"{backend} runs no {precision} file")
    return key


def candidates(bundle: Bundle, precision: str | None = None, gpu: bool | None = None) -> list[tuple[str, str]]:
    """(backend, precision) pairs whose library is importable and whose artifact is in the bundle."""
    gpu = bool(machine.gpu_models()) if gpu is None else gpu
    out = []
    for b in backends.auto_candidates(gpu):
        if not b.installed:
            continue
        for prec in artifacts.PRECISIONS:
            key = b.artifact_key(prec)
            if key and precision in (None, AUTO, prec) and bundle.has(key):
                out.append((b.name, prec))
    return out


def fingerprint(bundle: Bundle, pairs: list[tuple[str, str]]) -> str:
    """Hash of the candidate artifacts: a re-export invalidates a remembered choice."""
    keys = sorted({artifact_key(b, p) for b, p in pairs})
    h = hashlib.sha256("|".join(f"{k}={bundle.artifacts[k].get('sha256')}" for k in keys).encode())
    return h.hexdigest()[:16]


def recorded_verdict(bundle: Bundle, backend: str, precision: str,
                     limits: int8_guard.Limits) -> tuple[int8_guard.Verdict, str] | None:
    """The guard's verdict on the figures the export's precision table recorded for the file
    ``backend`` runs at ``precision`` (measured on real photos), with what they were measured on;
    None when the export recorded none (an older edgecat, or no photos at export either)."""
    entry = bundle.artifacts.get(artifact_key(backend, precision), {}).get("accuracy") or {}
    own = (entry.get(int8_guard.BY_BACKEND) or {}).get(backend)
    if isinstance(own, dict) and isinstance(own.get("fidelity"), dict):
        entry = {**entry, **own}  # this runtime's own figures on the same photos, where the export had it
    recorded = entry.get("fidelity")
    if precision == "fp32" and recorded is None and entry.get("agreement_with_fp32") is not None:
        recorded = {"images": entry.get("images") or 0, "agreement": entry["agreement_with_fp32"],
                    "confident": 0, "confident_flips": 0, "confident_flip_rate": 0.0}  # FP32 is the reference
    v = int8_guard.judge_recorded(recorded, limits) if isinstance(recorded, dict) else None
    if v is None:
        return None
    return v, f"{entry.get('images')} images from {entry.get('data')}, recorded at export"


# ------------------------------------------------------------------------------ measurement
def thread_options(backend: str, threads: int | None) -> list[int | None]:
    """Threads to try: the user's, else physical cores and 1. On a CPU that other processes keep
    busy, one thread measured faster than two (no waiting on a descheduled worker), so the count
    is measured like the rest rather than fixed."""
    if backends.get(backend).device == "gpu" or threads:
        return [threads]
    return sorted({machine.physical_cores(), 1}, reverse=True)


def _threads(threads: int | None) -> dict[str, Any]:
    return {"threads": threads} if threads else {}


def time_candidates(bundle: Bundle, configs: list[tuple[str, str, int | None]], images: np.ndarray,
                    rounds: int = 5, warmup: int = 3) -> list[Timing]:
    """Median ms per image at batch 1, all runtimes open at once and timed in interleaved rounds,
    so a burst of load on a shared machine hits every candidate alike."""
    timings, runtimes = [], []
    for backend, prec, threads in configs:
        t = Timing(backend, prec, threads)
        try:
            rt = open_runtime(bundle, backend, prec, **_threads(threads))
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
                    samples.append(timing.ms_per_item(lambda rt=rt, img=img: rt.infer(img[None])))
    finally:
        for t, rt, samples in runtimes:
            rt.close()
            if samples:
                t.ms = round(statistics.median(samples), 3)
    return timings


def predicted_probs(bundle: Bundle, backend: str, precision: str, images: np.ndarray, batch: int = 16,
                    **options: Any) -> np.ndarray:
    """Class probabilities [n, classes] of the file ``backend`` runs at ``precision``."""
    with open_runtime(bundle, backend, precision, **options) as rt:
        return np.asarray(bundle.class_probs(run_chunked(rt, images, batch)))


def reference_probs(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """FP32's probabilities: ONNX Runtime on model.onnx, else LiteRT FP32 (a LiteRT-only device bundle)."""
    backend = "onnxruntime" if bundle.has(artifacts.onnx("fp32").key) else "litert"
    return predicted_probs(bundle, backend, "fp32", images)


@dataclass
class Evidence:
    """What candidates are judged on: images, their true classes where known, FP32's answers."""

    images: np.ndarray
    labels: np.ndarray | None
    reference: np.ndarray
    what: str
    real: bool


def evidence(bundle: Bundle, limit: int) -> Evidence:
    """The bundle's labelled validation photos on this machine (less any INT8 was calibrated on), at
    most ``limit``; its parity images (maybe synthetic, ``real`` False) where there are none."""
    from edgecat.export.quantize import calibration_images

    calibrated, _, _ = calibration_images(bundle)
    files, labels, what, _ = splits.labelled_set(bundle, None, limit, exclude=calibrated or None)
    loaded = imaging.load_batch(files, bundle.input_size)
    if len(loaded.files):
        images = loaded.images  # uint8, as the runtimes take it: a quarter of float32's memory
        y = np.array([labels[i] for i in loaded.kept]) if labels is not None else None
        return Evidence(images, y, reference_probs(bundle, images), f"{len(images)} labelled images from {what}",
                        True)
    images, what = splits.parity_images(bundle, n=min(limit, 32))
    return Evidence(images, None, reference_probs(bundle, images), what, False)


def _no_candidates(bundle: Bundle, precision: str | None) -> str:
    """Why auto has nothing to pick from: no export at the asked precision (named with the commands
    that make one), or no installed runtime for the exports there are."""
    if precision not in (None, AUTO):
        keys = {k for b in backends.auto_candidates(gpu=False) if (k := b.artifact_key(precision))}
        if not any(bundle.has(k) for k in keys):
            made_by = " or ".join(f"`{artifacts.export_command(bundle.path, k)}`" for k in sorted(keys))
            return f"--backend auto: {bundle.path} has no {precision} export yet: run {made_by}"
    extras = " / ".join(b.dist if not b.extra else f"edgecat[{b.extra}]"
                        for b in backends.auto_candidates(gpu=False))
    return (f"--backend auto: no runtime here can open an export of {bundle.path} "
            f"(run `edgecat export BUNDLE`, or install {extras})")


def _verdict(bundle: Bundle, t: Timing, timings: list[Timing], ev: Evidence,
             limits: int8_guard.Limits) -> tuple[int8_guard.Verdict, str]:
    """The guard's verdict on ``t``'s file and what it was judged on. Answers do not depend on the
    thread count, so one verdict per backend x precision. Without labelled photos on this machine the
    export's recorded figures win over ones on synthetic images, which agree on anything."""
    known = next((u for u in timings if (u.backend, u.precision) == (t.backend, t.precision)
                  and u.fidelity is not None and u is not t), None)
    if known is not None:
        fid = int8_guard.Fidelity(**known.fidelity)  # type: ignore[arg-type]
        return int8_guard.verdict(fid, limits), ev.what
    recorded = None if ev.real else recorded_verdict(bundle, t.backend, t.precision, limits)
    if recorded is not None:
        return recorded
    probs = predicted_probs(bundle, t.backend, t.precision, ev.images, **_threads(t.threads))
    return int8_guard.judge(ev.reference, probs, ev.labels, limits, bundle.threshold), ev.what


def pick(timings: list[Timing],
         judge: Callable[[Timing], tuple[int8_guard.Verdict, str]]) -> tuple[Timing, str] | None:
    """The fastest timed candidate the guard accepts, and what it was judged on; ``judge`` is asked
    from the fastest down, and only until one passes. Marks each timing: chosen, refused (with the
    rule and its figures), unchecked (slower than the choice)."""
    for t in sorted((t for t in timings if t.ms is not None), key=lambda t: t.ms or 0.0):
        v, on = judge(t)
        t.agreement, t.fidelity = v.fidelity.agreement, v.fidelity.to_dict()
        if v.ok:
            t.status = "chosen"
            for u in timings:
                if u.status == "timed" and u.fidelity is None:
                    u.status, u.note = "unchecked", "slower than the choice"
            return t, on
        t.status, t.rule, t.note = "refused", v.rule, v.reason
    return None


def _choice(t: Timing, timings: list[Timing], what: str, on: str, limits: int8_guard.Limits,
            threads: int | None) -> Choice:
    fastest_fp32 = min((u.ms for u in timings if u.precision == "fp32" and u.ms), default=None)
    gain = f", {fastest_fp32 / t.ms:.2f}x the fastest FP32" if fastest_fp32 and t.ms else ""
    verdict = int8_guard.verdict(int8_guard.Fidelity(**t.fidelity), limits) if t.fidelity else None
    kept = verdict.reason if verdict is not None else "FP32"
    reason = (f"fastest that keeps the answers: {t.ms:.2f} ms/image at batch 1 with {t.threads or 'default'} "
              f"thread(s) on {what}{gain}; against FP32: {kept} (judged on {on})")
    return Choice(t.backend, t.precision, reason, timings, machine=machine_key(threads), threads=t.threads,
                  limits=limits.to_dict(), judged_on=on)


def measure(bundle: Bundle, precision: str | None = None, threads: int | None = None, images: int = 8,
            rounds: int = 5, validation_limit: int = 1000, gpu: bool | None = None) -> Choice:
    """Time every candidate, then judge them against FP32 from the fastest down until one passes."""
    pairs = candidates(bundle, precision, gpu)
    if not pairs:
        raise EdgecatError(_no_candidates(bundle, precision))
    configs = [(b, p, n) for b, p in pairs for n in thread_options(b, threads)]
    sample, what = splits.parity_images(bundle, n=images)
    timings = time_candidates(bundle, configs, sample, rounds=rounds)
    limits = int8_guard.limits_from_manifest(bundle.manifest)
    loaded: list[Evidence] = []  # loaded for the first check only

    def judge(t: Timing) -> tuple[int8_guard.Verdict, str]:
        if not loaded:
            loaded.append(evidence(bundle, validation_limit))
        return _verdict(bundle, t, timings, loaded[0], limits)

    picked = pick(timings, judge)
    if picked is not None:
        return _choice(picked[0], timings, what, picked[1], limits, threads)
    refused = "; ".join(f"{t.backend}/{t.precision}: {t.note}" for t in timings if t.status == "refused")
    raise EdgecatError("--backend auto: no backend x precision here keeps FP32's answers within the bundle's "
                       f"bounds ({_bounds(limits)}): {refused}"[:400] + "; see `edgecat bench`")


def runners_up(bundle: Bundle, choice: Choice, limit: int = 1) -> list[Timing]:
    """Other runtimes, at the choice's threads, whose model-only time was within RUNNER_UP_WITHIN of
    the choice's and whose file is FP32 or passes the same bounds by the export's recorded figures:
    what a stream may time beside the choice (on a 2-core Xeon at 160 px, LiteRT INT8 1.22 ms and
    OpenVINO INT8 1.26 ms alone, but 500 against 677 FPS in a stream's trial, each in its best
    shape). The fastest first, one per backend."""
    chosen = next((t for t in choice.timings if t.status == "chosen"), None)
    if chosen is None or not chosen.ms:
        return []
    limits = int8_guard.limits_from_manifest(bundle.manifest)
    out: list[Timing] = []
    for t in sorted((t for t in choice.timings if t.ms), key=lambda t: t.ms or 0.0):
        if (t.backend == choice.backend or t.threads != chosen.threads or t.status in ("refused", "failed")
                or (t.ms or 0.0) > chosen.ms * RUNNER_UP_WITHIN or any(u.backend == t.backend for u in out)):
            continue
        recorded = None if t.precision == "fp32" else recorded_verdict(bundle, t.backend, t.precision, limits)
        if t.precision == "fp32" or (recorded is not None and recorded[0].ok):  # FP32 is the reference
            out.append(t)
    return out[:limit]


def _bounds(limits: int8_guard.Limits) -> str:
    return (f"accuracy drop <= {100 * limits.max_accuracy_drop:.2f} points, confident answers flipped "
            f"<= {100 * limits.max_confident_flips:.2f}%")


# ------------------------------------------------------------------------------ remembering
def _slot(precision: str | None, threads: int | None) -> tuple[str, str]:
    key = machine_key(threads)
    return key, f"{key} | precision={precision or AUTO}"


def recall(bundle: Bundle, precision: str | None = None, threads: int | None = None,
           gpu: bool | None = None) -> Choice | None:
    """The choice remembered for this machine, while it still applies (same artifacts, a candidate
    still here); None otherwise. The one reader of the manifest's record."""
    pairs = candidates(bundle, precision, gpu)
    key, slot = _slot(precision, threads)
    known = bundle.manifest.get(MANIFEST_KEY, {}).get(slot)
    if not (known and pairs and known.get("artifacts") == fingerprint(bundle, pairs)
            and (known.get("backend"), known.get("precision")) in pairs):
        return None
    return Choice.from_dict(known, machine=key, reused=True)


def _remember(bundle: Bundle, choice: Choice, precision: str | None, threads: int | None,
              gpu: bool | None) -> None:
    pairs = candidates(bundle, precision, gpu)
    record = {**choice.to_dict(), "artifacts": fingerprint(bundle, pairs), "created": now_iso()}
    record.pop("reused", None)
    bundle.manifest.setdefault(MANIFEST_KEY, {})[_slot(precision, threads)[1]] = record
    try:
        bundle.save()
    except OSError as exc:  # a read-only bundle on a device: the choice just is not remembered
        log.warning("--backend auto: cannot remember the choice in %s (%s)", bundle.path, exc)


def choose_backend(bundle: Bundle, precision: str | None = None, threads: int | None = None,
                   refresh: bool = False, save: bool = True, **kwargs: Any) -> Choice:
    """The remembered choice for this machine when it still applies, else :func:`measure` and record it."""
    known = None if refresh else recall(bundle, precision, threads, kwargs.get("gpu"))
    if known is not None:
        return known
    choice = measure(bundle, precision, threads, **kwargs)
    log.debug("--backend auto chose %s/%s: %s", choice.backend, choice.precision, choice.reason)
    if save:
        _remember(bundle, choice, precision, threads, kwargs.get("gpu"))
    return choice


def measure_in_child(bundle: Bundle, precision: str | None, threads: int | None, refresh: bool = False) -> Choice:
    """Measure (and record) in a child process, so the caller loads only the winner's library.
    A stream that had loaded and released OpenVINO beside ONNX Runtime died with SIGSEGV on SIGTERM
    instead of flushing its sinks; one library per process avoids that class of interaction. The
    child is ``python -m edgecat.select`` (not multiprocessing: spawn re-runs a caller's unguarded
    script, fork copies its threads); it writes the choice, or its error line, to a JSON file."""
    with tempfile.TemporaryDirectory(prefix="edgecat-auto-") as tmp:
        result = Path(tmp) / "choice.json"
        args = [sys.executable, "-m", "edgecat.select", str(bundle.path), precision or "", str(threads or 0),
                "1" if refresh else "0", str(result)]
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        try:
            out = json.loads(result.read_text())
        except (OSError, ValueError):
            log.debug("auto child output: %s", proc.stderr[-2000:])
            raise EdgecatError(f"--backend auto: the measurement stopped (exit code {proc.returncode}); "
                               "pass --backend and --precision to skip it") from None
    if "error" in out:
        raise EdgecatError(f"--backend auto: {out['error'].removeprefix('--backend auto: ')[:300]}")
    bundle.refresh()  # the child recorded the choice in the manifest
    if recall(bundle, precision, threads) is None:  # the child could not write (a read-only bundle)
        log.warning("auto: cannot remember the choice in %s (not writable?): every run measures again; "
                    "pass --backend %s --precision %s to skip that", bundle.path, out["backend"], out["precision"])
    return Choice.from_dict(out)


def _child(argv: list[str]) -> int:
    """``python -m edgecat.select BUNDLE PRECISION THREADS REFRESH OUT``: what :func:`measure_in_child` runs."""
    path, precision, threads, refresh, out = argv
    try:
        choice = choose_backend(Bundle.open(path), precision or None, int(threads) or None, refresh=refresh == "1")
        payload: dict[str, Any] = choice.to_dict()
    except EdgecatError as exc:
        payload = {"error": str(exc)}
    Path(out).write_text(json.dumps(payload))
    return 0


# ------------------------------------------------------------------------------ opening
def open_auto(bundle: Bundle, precision: str | None = None, refresh: bool = False,
              **options: Any) -> tuple[Runtime, Choice]:
    """The runtime ``--backend auto`` stands for, and the choice behind it; ``precision`` None/'auto'
    lets auto pick it too. A measurement runs in a child process (see :func:`measure_in_child`)."""
    if precision == AUTO:
        precision = None
    threads = options.get("threads")
    choice = None if refresh else recall(bundle, precision, threads)
    if choice is None:
        log.info("auto: timing runtimes x precisions on this machine (once)")
        choice = measure_in_child(bundle, precision, threads, refresh=refresh)
    if choice.threads and not threads:
        options = {**options, "threads": choice.threads}
    # short enough for one 80-column line; `edgecat bench BUNDLE --backend auto` shows the why
    log.info("auto -> %s/%s, %s thread(s), %s", choice.backend, choice.precision,
             options.get("threads") or "default", "remembered" if choice.reused else "measured now")
    return open_runtime(bundle, choice.backend, choice.precision, **options), choice


def open_backend(bundle: Bundle | str | os.PathLike[str], backend: str | None = None, precision: str | None = None,
                 **options: Any) -> tuple[Runtime, Choice | None]:
    """What every command that accepts ``--backend auto`` opens: ``backend``/``precision`` as given,
    their defaults (:func:`edgecat.runtime.resolve_defaults`) where None; ``auto`` is measured (or
    recalled) here and its :class:`Choice` returned beside the runtime (None for a named backend)."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    backend, precision = resolve_defaults(bundle, backend, precision)
    if backend == AUTO:
        return open_auto(bundle, precision, **options)
    options.pop("refresh", None)  # bench passes it to every row; only auto measures
    return open_runtime(bundle, backend, precision, **options), None


def explain(choice: Choice) -> tuple[list[list[str]], str]:
    """Rows (backend, precision, threads, ms, agreement, status) and one line: what bench prints for auto."""
    rows: list[list[str]] = []
    for t in sorted(choice.timings, key=lambda t: (t.ms is None, t.ms or 0.0)):
        rows.append([t.backend, t.precision, str(t.threads or "default"), "-" if t.ms is None else f"{t.ms:.2f}",
                     "-" if t.agreement is None else f"{100 * t.agreement:.2f}%",
                     t.status + (f" ({t.note})" if t.note else "")])
    how = "remembered for this machine" if choice.reused else "measured now"
    threads = f"{choice.threads} thread(s)" if choice.threads else "default threads"
    return rows, f"auto -> {choice.backend}/{choice.precision}, {threads} ({how}): {choice.reason}"


__all__ = ["MANIFEST_KEY", "Choice", "Timing", "candidates", "choose_backend", "explain", "machine_key", "measure",
           "evidence", "open_auto", "open_backend", "pick", "recall", "reference_probs", "runners_up"]

if __name__ == "__main__":
    raise SystemExit(_child(sys.argv[1:]))
