"""The stream loop: frames -> one batched inference call -> smoothing -> sinks, in the shape the
machine suits (:mod:`edgecat.stream.serial`): one thread doing it all when the model's threads already
fill the cores and the source is a file, else capture threads and an output thread around the model.

Used by ``edgecat stream`` and importable::

    from edgecat.stream import StreamConfig, run_stream
    summary = run_stream("runs/cats", StreamConfig(sources=["video.mp4"], sinks=["jsonl://out.jsonl"]))

The model is reached only through :func:`edgecat.select.open_backend`, so any backend works.
End of every source, ``--duration``, Ctrl-C or SIGTERM all end the same way: sinks flushed and
closed, a :class:`StreamSummary` returned.
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgecat.bundle import Bundle, class_indices
from edgecat.errors import EdgecatError
from edgecat.redact import redact
from edgecat.runtime import Runtime, open_runtime
from edgecat.select import open_backend
from edgecat.stream.base import Frame, Sink, SinkOptions, model_batch
from edgecat.stream.capture import READ_AHEAD, CaptureConfig, Ended, FileCapture, SourceThread
from edgecat.stream.overlay import Result, draw_overlay
from edgecat.stream.readers import CameraOptions
from edgecat.stream.serial import PIPELINES, SerialSource, choose_pipeline, model_threads, usable_cores
from edgecat.stream.shape_trial import measured_shape
from edgecat.stream.sink_registry import parse_sink
from edgecat.stream.uri import parse_source

log = logging.getLogger(__name__)

OUTPUT_QUEUE = 2  # finished batches waiting for the output thread


@dataclass
class StreamConfig:
    """Everything ``edgecat stream`` takes; the defaults are what the command line uses."""

    sources: list[str]
    sinks: list[str] = field(default_factory=list)
    backend: str | None = None  # None: `auto` (measured, edgecat.select) when the bundle has exports, else Keras
    precision: str | None = None  # None: `auto` too with backend auto, else fp32 (runtime.resolve_defaults)
    runtime_options: dict[str, Any] = field(default_factory=dict)
    threshold: float | None = None  # binary: decision threshold (default: the bundle's); N-class: min prob
    smooth: int = 1  # average probabilities over this many frames per source
    max_fps: float | None = None
    duration: float | None = None
    loop: bool = False
    realtime: bool = False
    reconnect_seconds: float = 30.0
    jsonl_changes: bool = False
    camera: CameraOptions = field(default_factory=CameraOptions)
    output_fps: float | None = None  # frame rate of video sinks (default: the first source's)
    credentials: str | None = None  # netrc-format file with camera passwords (see stream.credentials)
    http_token: str | None = None  # live view access token (default: $EDGECAT_HTTP_TOKEN, or generated)
    batch: int = 1  # file sources: up to this many already-decoded frames per source in one model call
    pipeline: str = "auto"  # auto | serial | overlap (edgecat.stream.serial.choose_pipeline)
    trusted_keys: list[str] = field(default_factory=list)  # public keys a bundle must be signed by (edgecat.signing)
    watch: bool = False  # poll the bundle path and swap a new bundle in (SIGHUP does it always; stream.swap)
    metrics: str | None = None  # "[HOST]:PORT": serve /metrics alone (the live view serves it too; stream.metrics)


@dataclass
class StreamSummary:
    """What a stream run did; ``fps`` counts processed frames over the wall time."""

    frames: int
    dropped: int
    seconds: float
    fps: float
    latency_p50_ms: float
    latency_p99_ms: float
    inference_p50_ms: float
    batches: int
    stopped_by: str
    sources: list[dict[str, Any]]
    labels: dict[str, int]
    backend: str = ""  # what ran (auto's pick, not "auto"), so FPS can be set against that model's time
    precision: str = ""
    threads: int | None = None
    pipeline: str = ""  # serial | overlap: the shape that ran

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe: a figure with no frames behind it is null, not NaN (which strict parsers reject)."""
        return {k: None if isinstance(v, float) and v != v else v for k, v in asdict(self).items()}

    def line(self) -> str:
        return (f"{self.frames} frames, {self.dropped} dropped, {self.fps:.1f} FPS, latency p50 "
                f"{self.latency_p50_ms:.1f} ms p99 {self.latency_p99_ms:.1f} ms (inference p50 "
                f"{self.inference_p50_ms:.2f} ms) in {self.seconds:.1f} s; stopped by {self.stopped_by}"
                + (f"; model {self.backend}/{self.precision}" if self.backend else "")
                + (f", {self.pipeline} pipeline" if self.pipeline else ""))


class Smoother:
    """Moving average of the last N probability vectors of one source, so labels do not flicker."""

    def __init__(self, n: int) -> None:
        self.n = max(1, int(n))
        self._hist: dict[int, deque[np.ndarray]] = {}

    def __call__(self, source: int, probs: np.ndarray) -> np.ndarray:
        if self.n == 1:
            return probs
        hist = self._hist.setdefault(source, deque(maxlen=self.n))
        hist.append(probs)
        return np.mean(np.stack(hist), axis=0)


def decide(bundle: Bundle, probs: np.ndarray, threshold: float | None) -> tuple[str, float]:
    """(label, probability of that label) for one probability vector."""
    classes = bundle.classes
    if bundle.binary:
        i = int(class_indices(probs[None], bundle.threshold if threshold is None else threshold)[0])
        return classes[i], float(probs[i])
    i = int(np.argmax(probs))
    if threshold is not None and probs[i] < threshold:
        return "uncertain", float(probs[i])
    return classes[i], float(probs[i])


class _Rate:
    """Frames per second over a sliding window of the last ~2 seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.times: deque[float] = deque()

    def tick(self, t: float, n: int = 1) -> float:
        for _ in range(n):
            self.times.append(t)
        while self.times and t - self.times[0] > self.window:
            self.times.popleft()
        span = t - self.times[0] if len(self.times) > 1 else 0.0
        return (len(self.times) - 1) / span if span > 0 else 0.0


class Streamer:
    """One stream run. ``run()`` blocks until the sources end or :meth:`stop` is called."""

    def __init__(self, bundle: Bundle | str, cfg: StreamConfig, runtime: Runtime | None = None) -> None:
        if not cfg.sources:
            raise EdgecatError("no --source given (e.g. --source 0, --source video.mp4, --source rtsp://...)")
        if cfg.smooth < 1:
            raise EdgecatError("--smooth must be >= 1")
        if cfg.threshold is not None and not 0.0 <= cfg.threshold <= 1.0:
            raise EdgecatError("--threshold must be between 0 and 1")
        if cfg.max_fps is not None and cfg.max_fps <= 0:
            raise EdgecatError("--max-fps must be > 0")
        if cfg.batch < 1:
            raise EdgecatError("--batch must be >= 1")
        if cfg.pipeline not in PIPELINES:
            raise EdgecatError(f"unknown --pipeline '{cfg.pipeline}' (choose from: {', '.join(PIPELINES)})")
        from edgecat.signing import open_trusted

        self.bundle = open_trusted(bundle, cfg.trusted_keys)  # keys configured: signed and unchanged, or refused
        self.cfg = cfg
        # bad URIs fail before anything opens
        self.specs = [parse_source(s, cfg.credentials) for s in cfg.sources]
        options = SinkOptions(fps=cfg.output_fps, sources=len(cfg.sources), title=self.bundle.name,
                              changes_only=cfg.jsonl_changes, token=cfg.http_token, credentials=cfg.credentials)
        self.sinks: list[Sink] = [parse_sink(s, options) for s in cfg.sinks]
        self.metrics_server: Any = None  # edgecat.stream.metrics.MetricsServer for --metrics
        self.metrics = self._make_metrics()
        self.swapper: Any = None  # edgecat.stream.swap.ModelSwapper, made once the first model runs
        self._runtime = runtime
        self._first_runtime = runtime
        self._own_runtime = runtime is None
        #: the model threads the shape trial switched to (one fewer, a core left to decoding), which a
        #: swapped-in bundle keeps: the stream's shape was chosen for them
        self._trial_threads: int | None = None
        #: frames per model call at most: ``--batch``, or more where the shape trial measured it faster
        self._batch = cfg.batch
        self._choice: Any = None  # edgecat.select.Choice where --backend auto opened the model
        self._stop = threading.Event()
        self.stopped_by = ""
        self.threads: list[SourceThread | SerialSource] = []
        self.pipeline = ""

    def _make_metrics(self) -> Any:
        """Metrics when asked (--metrics) or when the live view can serve them; a sink like the others."""
        from edgecat.stream.http_sink import HttpSink

        views = [s for s in self.sinks if isinstance(s, HttpSink)]
        if not self.cfg.metrics and not views:
            return None
        from edgecat.stream.metrics import MetricsServer, StreamMetrics

        metrics = StreamMetrics()
        metrics.watch(self._live_counters)
        self.metrics_server = MetricsServer(self.cfg.metrics, metrics, self.cfg.http_token) if self.cfg.metrics else None
        for view in views:
            view.metrics = metrics.text
        self.sinks.append(metrics)
        return metrics

    def _live_counters(self) -> dict[str, Any]:
        return {"sources": [(t.index, t.dropped, t.stats.reconnects) for t in self.threads],
                "sinks": [(redact(s.uri), getattr(s, "dropped", 0), getattr(s, "reconnects", 0))
                          for s in self.sinks if hasattr(s, "reconnects")]}

    def _open_next(self, bundle: Bundle) -> Runtime:
        """A runtime for a swapped-in bundle, made the way the first one was."""
        if not self._own_runtime and self._runtime is not None:  # the caller's kind of runtime
            return _same_kind(self._runtime, bundle)
        options = stream_runtime_options(self.cfg)
        if self._trial_threads:
            options["threads"] = self._trial_threads
        return open_backend(bundle, self.cfg.backend, self.cfg.precision, **options)[0]

    def stop(self, why: str = "stop()") -> None:
        if not self._stop.is_set():
            self.stopped_by = why
        self._stop.set()

    # ------------------------------------------------------------------------------ run
    def run(self) -> StreamSummary:
        restore = self._install_signals()
        try:
            return self._run()
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            log.info("%s: finishing (flushing sinks)", name)
            self.stop(name)

        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
            # restart interrupted system calls (SA_RESTART): Python's default interrupts them, and a
            # write() inside OpenCV/FFmpeg failing with EINTR corrupts the video being written
            signal.siginterrupt(sig, False)
        return old

    def _run(self) -> StreamSummary:
        cfg = self.cfg
        runtime = self._runtime
        opened: list[Sink] = []
        first_runtime = runtime
        try:
            ccfg = CaptureConfig(model_size=self.bundle.input_size, realtime=cfg.realtime, loop=cfg.loop,
                                 reconnect_seconds=cfg.reconnect_seconds, camera=cfg.camera,
                                 full_frames=any(s.needs_images for s in self.sinks),
                                 read_ahead=max(READ_AHEAD, cfg.batch + 1))
            for i, spec in enumerate(self.specs):  # sources first: a missing camera fails fast
                t = SourceThread(i, spec, ccfg)
                self.threads.append(t)
                t.open()
            if runtime is None:
                runtime, self._choice = open_backend(self.bundle, cfg.backend, cfg.precision,
                                                     **stream_runtime_options(cfg))
                self._runtime = runtime
            ccfg.prepare = runtime.prepare  # input conversion in the capture threads (read when they start)
            runtime.warm_up(len(self.threads))  # outside the figures
            source_fps = self.threads[0].reader.fps or None
            serial = self._serial_source(runtime, ccfg)
            runtime = self._runtime  # the shape trial may have chosen fewer threads, or auto's runner-up
            log.info("model: %s on %s", self.bundle.name, runtime.description)
            from edgecat.stream.swap import Model, ModelSwapper

            model = Model(self.bundle, runtime, model_info(self.bundle, runtime))
            for s in self.sinks:
                s.model(model.info)
                s.open(source_fps)
                opened.append(s)
            if self.metrics is not None and self.metrics_server is not None:
                self.metrics_server.start()
            self.swapper = ModelSwapper(self.bundle.path, model, self._open_next, model_info, watch=cfg.watch,
                                        trusted_keys=cfg.trusted_keys,
                                        on_result=self.metrics.swapped if self.metrics is not None else None)
            self.swapper.start()
            if serial is None:
                for t in self.threads:
                    t.start()
            return self._loop(model, serial)
        finally:
            if self.swapper is not None:
                self.swapper.stop()
            if self.metrics is not None and self.metrics_server is not None:
                self.metrics_server.stop()
            for t in self.threads:
                t.stop()
            for t in self.threads:
                t.join()
            for s in opened:
                try:
                    s.close()
                except Exception as exc:  # noqa: BLE001 - close the others regardless
                    log.error("closing %s failed: %s", redact(s.uri), redact(exc))
            runtime = self._runtime
            if runtime is not None and (self._own_runtime or runtime is not first_runtime):  # swapped-in ones too
                runtime.close()

    def _serial_source(self, runtime: Runtime, ccfg: CaptureConfig) -> SerialSource | None:
        """The shape for this machine, source and model; for ``serial``, the one file source, read in
        this thread (it replaces the capture thread, which is never started)."""
        cfg = self.cfg
        live = cfg.realtime or any(spec.live for spec in self.specs)
        threads, cores = model_threads(runtime), usable_cores()
        shape, why = cfg.pipeline, ""
        if shape == "auto":
            shape = choose_pipeline(cores, threads, live, len(self.threads), model_on_cpu=threads > 0)
            if not live and len(self.threads) == 1 and threads > 0:  # one file, a CPU model: measure
                t = self.threads[0]
                measured = measured_shape(self.bundle, t.spec, t.reader, ccfg, runtime, threads, cores,
                                          reopen=self._reopener(runtime), batch_given=cfg.batch,
                                          others=self._runners_up())
                if measured is not None:
                    chosen, faster, said = measured
                    shape, why = chosen.shape, f", {said}"
                    if chosen.batch > self._batch:  # frames already decoded go to the model together
                        self._batch = chosen.batch
                        if isinstance(t, FileCapture):
                            t.allow_ahead(self._batch + 1)
                        faster.warm_up(self._batch)  # a runtime compiling per batch size does it now
                    if faster is not runtime:  # the same model on fewer threads, a core left to decoding
                        runtime.close()
                        self._runtime = runtime = faster
                        ccfg.prepare = runtime.prepare
                        threads = self._trial_threads = chosen.threads
        elif shape == "serial" and (live or len(self.threads) != 1):
            raise EdgecatError("--pipeline serial takes one video file or image folder without --realtime "
                               "(live sources keep their capture thread)")
        self.pipeline = shape
        log.info("pipeline: %s (%d usable cores, model on %s CPU threads%s%s%s)", shape, cores, threads or "no",
                 f", up to {self._batch} frames per call" if self._batch > 1 else "",
                 ", live source" if live else "", why)
        if shape != "serial":
            return None
        t = self.threads[0]
        serial = SerialSource(t.index, t.spec, ccfg, t.reader, t.stats)
        self.threads[0] = serial
        return serial

    def _runners_up(self) -> dict[str, Any]:
        """Where auto chose the model: the runtimes it found nearly as fast alone (and as faithful, by
        the export's figures), as openers on ``n`` threads, for the shape trial to time beside it."""
        if self._choice is None or not self._own_runtime:
            return {}
        from edgecat.select import runners_up

        options = stream_runtime_options(self.cfg)
        return {f"{t.backend}/{t.precision}": functools.partial(_open_runner_up, self.bundle, t.backend, t.precision,
                                                                options)
                for t in runners_up(self.bundle, self._choice)}

    def _reopener(self, runtime: Runtime) -> Any:
        """How the shape trial opens the model on other thread counts: only where the stream chose
        the threads itself (no ``--threads``, no runtime handed in by the caller)."""
        if not self._own_runtime or "threads" in self.cfg.runtime_options:
            return None
        return lambda n: _same_kind(runtime, self.bundle, threads=n)

    def _gather(self, active: list[SourceThread]) -> list[Frame]:
        """One frame from each source (waiting briefly), plus up to ``batch - 1`` more that file
        sources have already decoded: frames that are ready are batched, none is waited for."""
        batch: list[Frame] = []
        for th in list(active):
            item = th.get(timeout=0.2 if len(active) == 1 else 0.05)
            if item is Ended:
                active.remove(th)
                if th.error is not None and not isinstance(th.error, EdgecatError):
                    log.error("source %s stopped: %s", th.spec.uri, redact(th.error))
                else:
                    log.info("source %s: %s", th.spec.uri, th.stats.ended)
            elif isinstance(item, Frame):
                batch.append(item)
                batch += th.get_ready(self._batch - 1)
        return batch

    def _loop(self, model: Any, serial: SerialSource | None = None) -> StreamSummary:
        """``overlap`` (serial None): inference only here; capture threads decode and resize the next
        frames while the model runs, and an output thread does smoothing, overlays and sinks for the
        previous batch. ``serial``: this thread reads up to ``batch`` frames, runs the model and the
        sinks, then reads the next ones."""
        cfg = self.cfg
        runtime = model.runtime
        out = _Output(self, any(s.needs_images for s in self.sinks), threaded=serial is None)
        active = list(self.threads)

        def next_batch() -> list[Frame] | None:
            """Frames for one model call; [] when none is ready yet, None when every source ended."""
            if serial is None:
                return self._gather(active) if active else None
            batch: list[Frame] = []
            while len(batch) < self._batch and (f := serial.next()) is not None:
                batch.append(f)
            if not batch:
                log.info("source %s: %s", serial.spec.uri, serial.stats.ended)
            return batch or None

        infer_ms: list[float] = []
        rate = _Rate()
        frames = batches = 0
        start = time.perf_counter()
        deadline = start + cfg.duration if cfg.duration else None
        min_period = 1.0 / cfg.max_fps if cfg.max_fps else 0.0
        out.start(start)
        try:
            while not self._stop.is_set():
                if deadline is not None and time.perf_counter() >= deadline:
                    self.stop("--duration")
                    break
                t_batch = time.perf_counter()
                batch = next_batch()
                if batch is None:
                    break
                if not batch:
                    continue
                if (new := self.swapper.take()) is not None:  # between two batches: a whole model, never half
                    model, runtime = self._swap(model, new)
                probs = runtime.infer(model_batch(batch))
                batches += 1
                infer_ms.append(runtime.last_inference_ms)
                if self.metrics is not None:
                    self.metrics.batch(len(batch), runtime.last_inference_ms)
                t_done = time.perf_counter()
                out.put(batch, probs, runtime.last_inference_ms, t_done, rate.tick(t_done, len(batch)), model)
                frames += len(batch)
                if min_period:
                    delay = min_period * len(batch) - (time.perf_counter() - t_batch)
                    if delay > 0:
                        self._stop.wait(delay)
        finally:
            out.finish()
        if out.error is not None:
            raise out.error
        if not self.stopped_by:
            self.stopped_by = "end of input"
        seconds = time.perf_counter() - start
        summary = self._summary(frames, batches, seconds, out.latencies, infer_ms, out.labels)
        for s in self.sinks:
            s.stats(self._stats_dict(frames, start, summary.fps, out.latencies))
        return summary

    def _swap(self, old: Any, new: Any) -> tuple[Any, Runtime]:
        """Run ``new`` from the next batch on; the old runtime is closed unless the caller owns it."""
        self.bundle, self._runtime = new.bundle, new.runtime
        if self._own_runtime or old.runtime is not self._first_runtime:
            old.runtime.close()
        log.info("model swapped: now %s on %s", new.bundle.name, new.runtime.description)
        return new, new.runtime

    def _stats_dict(self, frames: int, start: float, fps: float, latencies: list[float]) -> dict[str, Any]:
        recent = latencies[-200:]
        return {"frames": frames, "dropped": sum(t.dropped for t in self.threads), "fps": round(fps, 2),
                "latency_p50_ms": round(float(np.percentile(recent, 50)), 2) if recent else 0.0,
                "seconds": round(time.perf_counter() - start, 2), "model": self.bundle.name,
                "sources": [t.spec.uri for t in self.threads]}

    def _summary(self, frames: int, batches: int, seconds: float, latencies: list[float], infer_ms: list[float],
                 labels: dict[str, int]) -> StreamSummary:
        def pct(values: list[float], q: float) -> float:
            return float(np.percentile(values, q)) if values else float("nan")

        sources = []
        for t in self.threads:
            st = t.stats
            sources.append({"uri": st.uri, "read": st.read, "dropped": t.dropped, "reconnects": st.reconnects,
                            "ended": st.ended or "stopped"})
        return StreamSummary(
            frames=frames, dropped=sum(t.dropped for t in self.threads), seconds=seconds,
            fps=frames / seconds if seconds > 0 else 0.0,
            latency_p50_ms=pct(latencies, 50), latency_p99_ms=pct(latencies, 99),
            inference_p50_ms=pct(infer_ms, 50), batches=batches, stopped_by=self.stopped_by,
            sources=sources, labels=labels, pipeline=self.pipeline, **_what_ran(self._runtime),
        )


def stream_runtime_options(cfg: StreamConfig) -> dict[str, Any]:
    """The runtime options a stream opens its model with: the caller's, over ONNX Runtime workers that
    stop spinning when a run returns, so the frame decoding between two runs gets the cores
    (``edgecat.runtime.onnxruntime.loader.session_options``); other runtimes ignore the option."""
    return {"stop_spinning": True, **cfg.runtime_options}


def _open_runner_up(bundle: Bundle, backend: str, precision: str, options: dict[str, Any], threads: int) -> Runtime:
    return open_runtime(bundle, backend, precision, **{**options, "threads": threads})


def _same_kind(runtime: Runtime, bundle: Bundle, **changes: Any) -> Runtime:
    """``runtime``'s class, precision and options (with ``changes``) on ``bundle``."""
    return type(runtime)(bundle, runtime.precision, **{**runtime.options, **changes})


def model_info(bundle: Bundle, runtime: Runtime) -> dict[str, Any]:
    """What event sinks and metrics report as the running model."""
    from edgecat.signing import bundle_hash

    return {"model": bundle.name, "bundle": bundle_hash(bundle.manifest), "backend": runtime.backend,
            "precision": runtime.precision}


def _what_ran(runtime: Runtime | None) -> dict[str, Any]:
    if runtime is None:
        return {}
    return {"backend": runtime.backend, "precision": runtime.precision, "threads": runtime.options.get("threads")}


class _Output:
    """The output stage: smoothing, labels, overlays and sinks. Threaded (``overlap``), it runs for
    one batch while the model works on the next, behind a bounded queue (OUTPUT_QUEUE batches) that
    keeps memory and latency bounded: when sinks are slower than the model, inference waits for them.
    Not threaded (``serial``), :meth:`put` does the work at once in the caller's thread."""

    def __init__(self, streamer: Streamer, need_images: bool, threaded: bool = True) -> None:
        self.s = streamer
        self.need_images = need_images
        self.smoother = Smoother(streamer.cfg.smooth)
        self.bundle = streamer.bundle  # the bundle of the batch being written (a swap changes it in order)
        self.latencies: list[float] = []
        self.labels: dict[str, int] = {}
        self.error: BaseException | None = None
        self.frames = 0
        self._q: queue.Queue[tuple[Any, ...] | None] = queue.Queue(maxsize=OUTPUT_QUEUE)
        self.threaded = threaded
        self._thread = threading.Thread(target=self._run, name="stream-output", daemon=True)
        self._start = 0.0
        self._last_stats = 0.0

    def start(self, t0: float) -> None:
        self._start = t0
        if self.threaded:
            self._thread.start()

    def put(self, batch: list[Frame], probs: np.ndarray, infer_ms: float, t_done: float, fps: float,
            model: Any = None) -> None:
        """Hand a finished batch over; blocks while OUTPUT_QUEUE batches already wait (back-pressure)."""
        if not self.threaded:
            if self.error is None:
                self._guarded((batch, probs, infer_ms, t_done, time.time(), fps, model))
            return
        while self._thread.is_alive():
            try:
                self._q.put((batch, probs, infer_ms, t_done, time.time(), fps, model), timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """Let the thread write what is queued, then end it (sinks are closed by the caller)."""
        if self._thread.ident is None:
            return
        while self._thread.is_alive():
            try:
                self._q.put(None, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()

    def _run(self) -> None:
        while (item := self._q.get()) is not None and self._guarded(item):
            pass

    def _guarded(self, item: tuple[Any, ...]) -> bool:
        """One batch through the sinks; False (error kept, stream stopped) when a sink failed."""
        try:
            self._batch(*item)
            return True
        except BaseException as exc:  # noqa: BLE001 - re-raised by the inference loop
            self.error = exc
            self.s.stop(f"output error: {redact(exc)}")
            return False

    def _batch(self, batch: list[Frame], probs: np.ndarray, infer_ms: float, t_done: float, wall: float,
               fps: float, model: Any = None) -> None:
        if model is not None and model.bundle is not self.bundle:  # the first batch of a swapped-in model
            self.bundle = model.bundle
            for sink in self.s.sinks:
                sink.model(model.info)
        for f, p in zip(batch, probs, strict=True):
            self._one(f, p, infer_ms, t_done, wall, fps)
        if t_done - self._last_stats >= 0.25:
            self._last_stats = t_done
            snap = self.s._stats_dict(self.frames, self._start, fps, self.latencies)
            for sink in self.s.sinks:
                sink.stats(snap)

    def _one(self, f: Frame, p: np.ndarray, infer_ms: float, t_done: float, wall: float, fps: float) -> None:
        p = self.smoother(f.source, np.asarray(p, dtype=np.float32))
        label, prob = decide(self.bundle, p, self.s.cfg.threshold)
        lat = (t_done - f.t_capture) * 1000.0
        self.latencies.append(lat)
        self.labels[label] = self.labels.get(label, 0) + 1
        result = Result(f.source, f.index, label, prob, [float(x) for x in p], lat, infer_ms, wall, f.path)
        annotated = draw_overlay(f.bgr(), result, fps) if self.need_images else None
        for sink in self.s.sinks:
            sink.write(f, result, fps, annotated)
            if sink.stop_requested:
                self.s.stop("display window closed")
        self.frames += 1


def run_stream(bundle: Bundle | str, cfg: StreamConfig, runtime: Runtime | None = None) -> StreamSummary:
    """Run a stream to the end (or Ctrl-C / SIGTERM / ``duration``) and return its summary."""
    return Streamer(bundle, cfg, runtime).run()
