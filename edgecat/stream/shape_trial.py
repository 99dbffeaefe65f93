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
"""

from __future__ import annotations

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
from edgecat.stream.base import Frame
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


@dataclass(frozen=True)
class Candidate:
    shape: str  # serial | overlap
    threads: int  # the model's CPU threads

    @property
    def label(self) -> str:
        return f"{self.shape} t{self.threads}"


def candidates(threads: int, lean: bool) -> list[Candidate]:
    """Serial and overlap at the model's threads; with ``lean``, overlap on one thread fewer too."""
    out = [Candidate("serial", threads), Candidate("overlap", threads)]
    if lean and threads > 1:
        out.append(Candidate("overlap", threads - 1))
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


def _timed(next_frame: Any, runtime: Any, threaded_output: bool) -> tuple[int, float]:
    """Frames run and seconds taken after the warm-up frames."""
    out = _Results(threaded_output)
    n, t0 = 0, 0.0
    try:
        while n < WARMUP_FRAMES + BLOCK_FRAMES:
            frame = next_frame()
            if frame is None:
                break
            out.put(frame.index, runtime.infer(frame.model_input[None])[0])
            n += 1
            if n == WARMUP_FRAMES:
                t0 = time.perf_counter()
            elif n > WARMUP_FRAMES and time.perf_counter() - t0 > BLOCK_SECONDS:
                break
    finally:
        out.close()
    if n <= WARMUP_FRAMES:
        return 0, 0.0
    return n - WARMUP_FRAMES, time.perf_counter() - t0


def _serial_block(spec: SourceSpec, cfg: CaptureConfig, runtime: Any) -> tuple[int, float]:
    reader = make_reader(spec, cfg.camera, None if cfg.full_frames else cfg.model_size)
    reader.open()
    source = SerialSource(0, spec, cfg, reader)
    try:
        return _timed(source.next, runtime, threaded_output=False)
    finally:
        source.join()


def _overlap_block(spec: SourceSpec, cfg: CaptureConfig, runtime: Any) -> tuple[int, float]:
    source = SourceThread(0, spec, cfg)
    source.open()
    source.start()

    def next_frame() -> Frame | None:
        item = source.get(timeout=5.0)
        return item if isinstance(item, Frame) else None

    try:
        return _timed(next_frame, runtime, threaded_output=True)
    finally:
        source.stop()
        source.join()


def run_trial(spec: SourceSpec, cfg: CaptureConfig, runtimes: dict[int, Any], cands: list[Candidate]) -> ShapeTrial:
    """Every candidate timed on the first frames of ``spec``, each block from frame 0 of its own
    reader, with ``runtimes[threads]``; the median block per candidate, so one block caught by a
    passing load does not decide."""
    run = {"serial": _serial_block, "overlap": _overlap_block}
    rates: dict[str, list[float]] = {c.label: [] for c in cands}
    frames = dict.fromkeys(rates, 0)
    for c in blocks(cands):
        n, seconds = run[c.shape](spec, cfg, runtimes[c.threads])
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


def slot(bundle: Bundle, runtime: Any, threads: int, cores: int, size: str, full_frames: bool, lean: bool = True) -> str:
    """Where the choice is remembered: what it depends on, the model file's hash included, and
    whether the threads were the stream's to change (``lean``) or fixed by the caller."""
    from edgecat.select import machine_key

    key = runtime.artifact_key
    model = f"{key}:{str(bundle.artifacts.get(key, {}).get('sha256'))[:16]}" if key else "none"
    return (f"{SLOT_PREFIX} | {machine_key(threads)} | cpus={cores} | {runtime.backend}/{runtime.precision} "
            f"| model={model} | frame={size}{' | full frames' if full_frames else ''}{'' if lean else ' | threads fixed'}")


def recall(bundle: Bundle, key: str, threads: int) -> Candidate | None:
    """The remembered candidate; anything else in a copied bundle's record is ignored, not trusted
    (a shape other than serial/overlap, or threads outside 1..``threads``)."""
    from edgecat.select import MANIFEST_KEY

    record = bundle.manifest.get(MANIFEST_KEY, {}).get(key)
    if not isinstance(record, dict) or record.get("pipeline") not in SHAPES:
        return None
    n = record.get("threads", threads)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= threads:
        return None
    return Candidate(record["pipeline"], n)


def remember(bundle: Bundle, key: str, trial: ShapeTrial) -> None:
    from edgecat.select import MANIFEST_KEY

    best = trial.best
    bundle.manifest.setdefault(MANIFEST_KEY, {})[key] = {
        "pipeline": best.shape, "threads": best.threads, "fps": {k: round(v, 1) for k, v in trial.fps.items()},
        "frames": trial.frames, "created": now_iso()}
    try:
        bundle.save()
    except OSError as exc:  # a read-only bundle: measured again next time
        log.warning("pipeline: cannot remember the measured shape in %s (%s)", bundle.path, exc)


def measured_shape(bundle: Bundle, spec: SourceSpec, reader: Any, cfg: CaptureConfig, runtime: Any,
                   threads: int, cores: int, reopen: Callable[[int], Any] | None = None) -> tuple[Candidate, Any, str] | None:
    """(candidate, its runtime, why) for one video file long enough to measure on; None where the
    rule decides (a short file, a file of unknown length, or a trial that failed). ``reopen(n)``
    opens the same model on ``n`` threads; without it the threads stay as they are. Runtimes this
    opens and does not return are closed here; ``runtime`` is the caller's to close."""
    if spec.kind != "file" or (getattr(reader, "total", None) or 0) < TRIAL_MIN_FRAMES:
        return None
    key = slot(bundle, runtime, threads, cores, frame_size(reader), cfg.full_frames, lean=reopen is not None)
    runtimes = {threads: runtime}
    known = recall(bundle, key, threads)
    if known is not None and known.threads == threads:
        return known, runtime, "measured earlier on this machine"
    if known is not None and reopen is not None:
        try:
            return known, _warm(reopen(known.threads)), "measured earlier on this machine"
        except Exception as exc:  # noqa: BLE001 - the rule still gives a working shape
            log.warning("pipeline: could not open the model on %d threads (%s); choosing by cores", known.threads, exc)
            return None
    cands = candidates(threads, lean=reopen is not None)
    try:
        for c in cands:
            if c.threads not in runtimes and reopen is not None:
                runtimes[c.threads] = _warm(reopen(c.threads))
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
    chosen = runtimes[best.threads]
    _close_others(runtimes, runtime, chosen)
    others = ", ".join(f"{c.label} {trial.fps[c.label]:.0f}" for c in cands if c != best)
    return best, chosen, f"measured: {best.label} {trial.fps[best.label]:.0f} FPS against {others} on the first frames"


def _warm(runtime: Any) -> Any:
    """The runtime after its untimed first call: a fresh compile's first run is not what the trial compares."""
    runtime.warm_up()
    return runtime


def _close_others(runtimes: dict[int, Any], *keep: Any) -> None:
    for rt in runtimes.values():
        if all(rt is not k for k in keep):
            rt.close()


__all__ = ["SHAPES", "TRIAL_MIN_FRAMES", "Candidate", "ShapeTrial", "blocks", "candidates", "measured_shape", "recall",
           "remember", "run_trial", "slot"]
