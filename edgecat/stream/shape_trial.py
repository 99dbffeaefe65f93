"""The serial/overlap choice measured on the stream's own video file, once per machine and model.

Core counts alone do not say which shape wins. On 2-core CPUs, one model file on two threads
(benchmarks/README.md, "How the stream picks its shape"): ONNX Runtime FP32 on an AVX2 EPYC ran
fastest serial, while on an AVX-512 VNNI Xeon OpenVINO INT8 ran 1.1-1.4x faster overlapped than
serial and LiteRT INT8 faster serial than overlapped: XNNPACK's threads suffer a decoder taking one
of their cores, OpenVINO's do not. So where :func:`edgecat.stream.serial.choose_pipeline` would
judge a long enough video file read by a CPU model, ``--pipeline auto`` times the candidates on the
file's first frames (decode, resize, colour swap, model, and the hand-off of each answer to the
output stage), in alternated blocks, and runs the fastest from frame 0. Where the stream chose the
model's threads itself, a third candidate runs the model on one thread fewer beside the capture
thread (cores - 1 for the model, one core for decoding): on that Xeon, OpenVINO at 160 px ran
1.04-1.11x faster so than overlapped on two threads, at 224 px 0.94-1.05x. The result is
remembered in the bundle manifest's ``autoselect`` section (the device's own, unsigned), under a
slot for this machine, model file, threads, usable cores and frame size, so later runs start at once.

Where the caller left ``--batch`` at 1, a last candidate runs overlapped on TRIAL_BATCH frames per
model call (the frames the capture thread has already decoded, none waited for). On a 2-core
AVX-512 VNNI Xeon, OpenVINO INT8 at 224 px (a static batch-2 compile) ran 1.46-1.48 ms per image at
batch 2 against 1.63-1.76 ms at batch 1, and the stream 453-473 FPS against 403-434 overlapped one
frame at a time (benchmarks/README.md); on an AVX2 EPYC, LiteRT and ONNX Runtime ran no faster
batched. So the trial, not a rule, decides.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import statistics
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any

import numpy as np

from edgecat.bundle import Bundle, now_iso
from edgecat.stream.base import Frame, model_batch
from edgecat.stream.capture import CaptureConfig, SourceThread
from edgecat.stream.readers import _cv2, make_reader
from edgecat.stream.serial import SerialSource
from edgecat.stream.uri import SourceSpec

log = logging.getLogger(__name__)

SHAPES = ("serial", "overlap")
#: shorter files keep the rule: the trial decodes up to len(blocks) x (WARMUP_FRAMES + BLOCK_FRAMES) frames again
TRIAL_MIN_FRAMES = 300
ROUNDS = 2  # candidates in order, then in reverse, this many times: a drift of the machine hits all
WARMUP_FRAMES = 5  # per block, untimed: a fresh decoder's first frames
BLOCK_FRAMES = 25  # timed frames per block, unless BLOCK_SECONDS run out first (a slow model)
BLOCK_SECONDS = 0.4
SLOT_PREFIX = "stream-pipeline"
TRIAL_BATCH = 2  # frames per model call of the batched candidate


@dataclass(frozen=True)
class Candidate:
    shape: str  # serial | overlap
    threads: int  # the model's CPU threads
    batch: int = 1  # frames per model call at most (overlap: those already decoded)
    model: str = ""  # a runner-up runtime ("openvino/int8"); "": the stream's own

    @property
    def label(self) -> str:
        return (f"{self.model} " if self.model else "") + f"{self.shape} t{self.threads}" + (
            f" batch {self.batch}" if self.batch > 1 else "")


def candidates(threads: int, lean: bool, batch: int = 1, model: str = "") -> list[Candidate]:
    """Serial and overlap at the model's threads; with ``lean``, overlap on one thread fewer too;
    with ``batch`` > 1, overlap at the model's threads on up to that many frames per call."""
    out = [Candidate("serial", threads, model=model), Candidate("overlap", threads, model=model)]
    if lean and threads > 1:
        out.append(Candidate("overlap", threads - 1, model=model))
    if batch > 1:
        out.append(Candidate("overlap", threads, batch, model=model))
    return out


def blocks(cands: list[Candidate]) -> list[Candidate]:
    """The order the candidates are timed in (A B C C B A, twice)."""
    return [*cands, *reversed(cands)] * ROUNDS


@dataclass
class ShapeTrial:
    fps: dict[str, float]  # median frames per second of each candidate's blocks, by label
    frames: dict[str, int]  # timed frames per candidate
    cands: list[Candidate]

    @property
    def best(self) -> Candidate:
        return max(self.cands, key=lambda c: self.fps[c.label])


class _Results:
    """What the stream does with each answer, in the same thread as the model (serial) or handed to
    an output thread through a queue (overlap): the hand-off is part of what the shapes cost. The
    work stands in for a JSON-lines event, the cheapest sink."""

    def __init__(self, threaded: bool) -> None:
        self._q: queue.Queue[tuple[int, np.ndarray] | None] | None = queue.Queue(maxsize=4) if threaded else None
        self._thread = threading.Thread(target=self._drain, name="trial-output", daemon=True) if threaded else None
        if self._thread is not None:
            self._thread.start()

    @staticmethod
    def _write(index: int, p: np.ndarray) -> None:
        json.dumps({"frame": index, "probabilities": [float(x) for x in np.ravel(p)], "time": time.time()})

    def _drain(self) -> None:
        assert self._q is not None
        while (item := self._q.get()) is not None:
            self._write(*item)

    def put(self, index: int, p: np.ndarray) -> None:
        if self._q is None:
            self._write(index, p)
        else:
            self._q.put((index, p))

    def close(self) -> None:
        if self._q is not None and self._thread is not None:
            self._q.put(None)
            self._thread.join()


def _timed(next_frames: Callable[[int], list[Frame]], runtime: Any, threaded_output: bool,
           batch: int) -> tuple[int, float]:
    """Frames run and seconds taken after the warm-up frames; ``next_frames(k)`` gives up to ``k``
    frames ([] at the end)."""
    out = _Results(threaded_output)
    n, first_timed, t0 = 0, 0, 0.0
    try:
        while n < WARMUP_FRAMES + BLOCK_FRAMES:
            frames = next_frames(min(batch, WARMUP_FRAMES + BLOCK_FRAMES - n))
            if not frames:
                break
            for f, p in zip(frames, runtime.infer(model_batch(frames))):
                out.put(f.index, p)
            n += len(frames)
            if not t0 and n >= WARMUP_FRAMES:
                t0, first_timed = time.perf_counter(), n
            elif t0 and time.perf_counter() - t0 > BLOCK_SECONDS:
                break
    finally:
        out.close()
    if not t0 or n == first_timed:
        return 0, 0.0
    return n - first_timed, time.perf_counter() - t0


def _serial_block(spec: SourceSpec, cfg: CaptureConfig, runtime: Any, batch: int) -> tuple[int, float]:
    reader = make_reader(spec, cfg.camera, None if cfg.full_frames else cfg.model_size)
    reader.open()
    source = SerialSource(0, spec, cfg, reader)

    def next_frames(k: int) -> list[Frame]:
        frames: list[Frame] = []
        while len(frames) < k and (f := source.next()) is not None:
            frames.append(f)
        return frames

    try:
        return _timed(next_frames, runtime, threaded_output=False, batch=batch)
    finally:
        source.join()


def _overlap_block(spec: SourceSpec, cfg: CaptureConfig, runtime: Any, batch: int) -> tuple[int, float]:
    source = SourceThread(0, spec, dataclasses.replace(cfg, read_ahead=max(cfg.read_ahead, batch + 1)))
    source.open()
    source.start()

    def next_frames(k: int) -> list[Frame]:  # as the stream gathers: one waited for, the ready ones
        item = source.get(timeout=5.0)
        return [item, *source.get_ready(k - 1)] if isinstance(item, Frame) else []

    try:
        return _timed(next_frames, runtime, threaded_output=True, batch=batch)
    finally:
        source.stop()
        source.join()


def run_trial(spec: SourceSpec, cfg: CaptureConfig, runtimes: dict[tuple[str, int], Any],
              cands: list[Candidate]) -> ShapeTrial:
    """Every candidate timed on the first frames of ``spec``, each block from frame 0 of its own
    reader, with ``runtimes[model, threads]``; the median block per candidate, so one block caught
    by a passing load does not decide."""
    run = {"serial": _serial_block, "overlap": _overlap_block}
    rates: dict[str, list[float]] = {c.label: [] for c in cands}
    frames = dict.fromkeys(rates, 0)
    for c in blocks(cands):
        n, seconds = run[c.shape](spec, cfg, runtimes[c.model, c.threads], c.batch)
        if n and seconds > 0:
            rates[c.label].append(n / seconds)
            frames[c.label] += n
    return ShapeTrial({k: statistics.median(r) if r else 0.0 for k, r in rates.items()}, frames, cands)


def frame_size(reader: Any) -> str:
    """``WxH`` of an open video file: the decoding work per frame, which moves the balance."""
    cv2 = _cv2()
    cap = getattr(reader, "cap", None)
    if cap is None:
        return "unknown"
    return f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"


def slot(bundle: Bundle, runtime: Any, threads: int, cores: int, size: str, full_frames: bool, lean: bool = True,
         batch_given: int = 1, others: tuple[str, ...] = ()) -> str:
    """Where the choice is remembered: what it depends on, the model file's hash included, whether
    the threads were the stream's to change (``lean``) or fixed by the caller, a ``--batch`` the
    caller set (then no batched candidate is timed), and the runner-up runtimes timed beside."""
    from edgecat.select import machine_key

    key = runtime.artifact_key
    model = f"{key}:{str(bundle.artifacts.get(key, {}).get('sha256'))[:16]}" if key else "none"
    return (f"{SLOT_PREFIX} | {machine_key(threads)} | cpus={cores} | {runtime.backend}/{runtime.precision} "
            f"| model={model} | frame={size}{' | full frames' if full_frames else ''}{'' if lean else ' | threads fixed'}"
            f"{f' | batch {batch_given}' if batch_given > 1 else ''}{' | also ' + ','.join(others) if others else ''}")


def recall(bundle: Bundle, key: str, threads: int, others: tuple[str, ...] = ()) -> Candidate | None:
    """The remembered candidate; anything else in a copied bundle's record is ignored, not trusted
    (a shape other than serial/overlap, threads outside 1..``threads``, a batch the trial does not
    time, a runtime other than the stream's own or the ``others`` timed beside it)."""
    from edgecat.select import MANIFEST_KEY

    record = bundle.manifest.get(MANIFEST_KEY, {}).get(key)
    if not isinstance(record, dict) or record.get("pipeline") not in SHAPES:
        return None
    n = record.get("threads", threads)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= threads:
        return None
    batch = record.get("batch")  # none in a record from before the batched candidate: measured again
    if isinstance(batch, bool) or batch not in (1, TRIAL_BATCH) or (batch > 1 and record["pipeline"] != "overlap"):
        return None
    model = record.get("model", "")
    if model != "" and model not in others:
        return None
    return Candidate(record["pipeline"], n, batch, model)


def remember(bundle: Bundle, key: str, trial: ShapeTrial) -> None:
    from edgecat.select import MANIFEST_KEY

    best = trial.best
    bundle.manifest.setdefault(MANIFEST_KEY, {})[key] = {
        "pipeline": best.shape, "threads": best.threads, "batch": best.batch, "model": best.model,
        "fps": {k: round(v, 1) for k, v in trial.fps.items()},
        "frames": trial.frames, "created": now_iso()}
    try:
        bundle.save()
    except OSError as exc:  # a read-only bundle: measured again next time
        log.warning("pipeline: cannot remember the measured shape in %s (%s)", bundle.path, exc)


def measured_shape(bundle: Bundle, spec: SourceSpec, reader: Any, cfg: CaptureConfig, runtime: Any,
                   threads: int, cores: int, reopen: Callable[[int], Any] | None = None,
                   batch_given: int = 1,
                   others: dict[str, Callable[[int], Any]] | None = None) -> tuple[Candidate, Any, str] | None:
    """(candidate, its runtime, why) for one video file long enough to measure on; None where the
    rule decides (a short file, a file of unknown length, or a trial that failed). ``reopen(n)``
    opens the same model on ``n`` threads; without it the threads stay as they are. ``batch_given``:
    the caller's ``--batch``; at 1 the batched candidate is timed too. ``others``: runner-up runtimes
    (name -> opener on ``n`` threads) whose candidates are timed beside the stream's own. Runtimes
    this opens and does not return are closed here; ``runtime`` is the caller's to close."""
    if spec.kind != "file" or (getattr(reader, "total", None) or 0) < TRIAL_MIN_FRAMES:
        return None
    others = others or {}
    names = tuple(others)
    key = slot(bundle, runtime, threads, cores, frame_size(reader), cfg.full_frames, lean=reopen is not None,
               batch_given=batch_given, others=names)
    openers: dict[str, Callable[[int], Any] | None] = {"": reopen, **others}
    runtimes: dict[tuple[str, int], Any] = {("", threads): runtime}
    known = recall(bundle, key, threads, names)
    if known is not None and (known.model, known.threads) in runtimes:
        return known, runtime, "measured earlier on this machine"
    if known is not None and openers[known.model] is not None:
        try:
            return known, _warm(openers[known.model](known.threads)), "measured earlier on this machine"
        except Exception as exc:  # noqa: BLE001 - the rule still gives a working shape
            log.warning("pipeline: could not open %s on %d threads (%s); choosing by cores", known.model or "the model",
                        known.threads, exc)
            return None
    batch = TRIAL_BATCH if batch_given == 1 else 1
    cands = [c for name in openers for c in candidates(threads, lean=reopen is not None, batch=batch, model=name)]
    try:
        for c in cands:
            opener = openers[c.model]
            if (c.model, c.threads) in runtimes or opener is None:
                continue
            try:
                runtimes[c.model, c.threads] = _warm(opener(c.threads))
            except Exception as exc:  # noqa: BLE001 - a runner-up that cannot run here is not timed
                if not c.model:
                    raise
                log.warning("pipeline: could not open %s on %d threads (%s); not timed", c.model, c.threads, exc)
        cands = [c for c in cands if (c.model, c.threads) in runtimes]
        trial = run_trial(spec, cfg, runtimes, cands)
    except Exception as exc:  # noqa: BLE001 - the rule still gives a working shape
        log.warning("pipeline: could not time the shapes (%s); choosing by cores", exc)
        _close_others(runtimes, runtime)
        return None
    if min(trial.frames.values()) == 0:
        _close_others(runtimes, runtime)
        return None
    remember(bundle, key, trial)
    best = trial.best
    chosen = runtimes[best.model, best.threads]
    _close_others(runtimes, runtime, chosen)
    rest = ", ".join(f"{c.label} {trial.fps[c.label]:.0f}" for c in cands if c != best)
    return best, chosen, f"measured: {best.label} {trial.fps[best.label]:.0f} FPS against {rest} on the first frames"


def _warm(runtime: Any) -> Any:
    """The runtime after its untimed first call: a fresh compile's first run is not what the trial compares."""
    runtime.warm_up()
    return runtime


def _close_others(runtimes: dict[tuple[str, int], Any], *keep: Any) -> None:
    for rt in runtimes.values():
        if all(rt is not k for k in keep):
            rt.close()


__all__ = ["SHAPES", "TRIAL_BATCH", "TRIAL_MIN_FRAMES", "Candidate", "ShapeTrial", "blocks", "candidates", "measured_shape", "recall",
           "remember", "run_trial", "slot"]
