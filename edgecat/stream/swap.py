"""A new bundle swapped into a running stream without a dropped frame (``--watch``, SIGHUP).

A fleet pushes a new model by placing a new bundle at the path the stream was started with (copy it
beside, then flip a symlink or rename over). With ``--watch`` the manifest and signature are polled
(once a second); SIGHUP asks for a reload at once. Either way the new model is made ready in a
background thread while the old one keeps running:

1. opened (with trusted keys configured: signed by one of them and unchanged, see
   :mod:`edgecat.signing`), with the same input size and classes as the running one (the capture
   threads and the sinks were set up for those);
2. its recorded figures checked: the artifact the runtime loads must have passed its own parity
   check when it was exported (difference within its tolerance) and, for a reduced-precision file,
   the bounds ``--backend auto`` applies (:mod:`edgecat.int8_guard`) on the figures its export
   recorded (label agreement at least 99.5% where an older export recorded only that);
3. its runtime opened and warmed up, with a finite output of the right shape.

Only a model that passed all three is handed over, and the stream takes it between two batches
(:meth:`ModelSwapper.take`): every frame is inferred by a whole model, old or new, and none is
skipped. A bundle that fails is refused with one line in the log and the running model goes on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import int8_guard
from edgecat.bundle import MANIFEST, Bundle
from edgecat.errors import EdgecatError
from edgecat.redact import redact

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
#: the least label agreement on the parity images of a file whose export recorded no guard figures
DEFAULT_AGREEMENT = 0.995


@dataclass
class Model:
    """A bundle and its open, warmed-up runtime: what the stream runs."""

    bundle: Bundle
    runtime: Any
    info: dict[str, Any] = field(default_factory=dict)


def fingerprint(path: str | Path) -> str:
    """What identifies the bundle at ``path`` now: its manifest's and signature's bytes (a rewrite
    by this device's own ``--backend auto`` record changes only the unsigned sections, so that is
    compared by :func:`edgecat.signing.bundle_hash` before anything is loaded)."""
    h = hashlib.sha256()
    for name in (MANIFEST, "edgecat.sig"):
        try:
            h.update((Path(path) / name).read_bytes())
        except OSError:
            h.update(b"-")
    return h.hexdigest()


def check_recorded_figures(bundle: Bundle, artifact_key: str | None) -> None:
    """Refuse an artifact whose own export-time checks failed (recorded in the manifest)."""
    if not artifact_key:
        return
    entry = bundle.artifacts.get(artifact_key, {})
    parity = entry.get("parity") if isinstance(entry.get("parity"), dict) else {}
    tol, diff = parity.get("tolerance"), parity.get("max_abs_diff")
    if isinstance(tol, (int, float)) and isinstance(diff, (int, float)) and diff > tol:
        raise EdgecatError(f"{entry.get('file')}: its recorded check failed (max difference {diff:.3g} > "
                           f"tolerance {tol:.3g} against {parity.get('reference')})")
    recorded = (entry.get("accuracy") or {}).get("fidelity")
    v = (int8_guard.judge_recorded(recorded, int8_guard.limits_from_manifest(bundle.manifest))
         if isinstance(recorded, dict) else None)
    if v is not None:
        if not v.ok:
            raise EdgecatError(f"{entry.get('file')}: its recorded figures break --backend auto's bounds: {v.reason}")
        return
    agreement = parity.get("label_agreement")
    if isinstance(agreement, (int, float)) and agreement < DEFAULT_AGREEMENT:
        raise EdgecatError(f"{entry.get('file')}: its recorded label agreement {100 * agreement:.2f}% is below "
                           f"{100 * DEFAULT_AGREEMENT:.1f}%")


class ModelSwapper:
    """Makes the next model ready in the background; the stream calls :meth:`take` between batches.

    ``open_runtime(bundle)``: opens the runtime for a bundle the way the stream opened its first one.
    ``running``: the model running now (its input size and classes must be kept).
    """

    def __init__(self, path: str | Path, running: Model, open_runtime: Callable[[Bundle], Any],
                 model_info: Callable[[Bundle, Any], dict[str, Any]], *, watch: bool = False,
                 trusted_keys: list[str] | None = None, poll: float = POLL_SECONDS,
                 on_result: Callable[[bool], None] | None = None) -> None:
        self.path = Path(path)
        self.running = running
        self.open_runtime = open_runtime
        self.model_info = model_info
        self.watch = watch
        self.trusted_keys = list(trusted_keys or [])
        self.poll = poll
        self.on_result = on_result
        self.swaps = 0
        self.refused = 0
        self.last_error: str | None = None
        self._asked = threading.Event()
        self._stop = threading.Event()
        self._ready: Model | None = None
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._attempts = 0
        self._seen = fingerprint(self.path)
        self._thread = threading.Thread(target=self._run, name="model-swap", daemon=True)
        self._old_hup: Any = None

    # -- control
    def start(self) -> None:
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
            self._old_hup = signal.signal(signal.SIGHUP, lambda *_: self.request())
            signal.siginterrupt(signal.SIGHUP, False)
        self._thread.start()

    def request(self) -> None:
        """Load the bundle at the path again now (SIGHUP), whether or not it changed."""
        self._asked.set()

    def stop(self) -> None:
        self._stop.set()
        self._asked.set()
        self._thread.join(60)
        if self._old_hup is not None:
            signal.signal(signal.SIGHUP, self._old_hup)
            self._old_hup = None
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:  # made ready but never taken: release it
            ready.runtime.close()

    def take(self) -> Model | None:
        """The next model if one is ready (never blocks: called between two batches)."""
        if self._ready is None:
            return None
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is not None:
            self.running = ready
        return ready

    def wait_attempts(self, n: int, timeout: float) -> bool:
        """Wait until ``n`` loads were tried (swapped or refused): for tests and tools."""
        with self._done:
            return self._done.wait_for(lambda: self._attempts >= n, timeout)

    # -- the background thread
    def _run(self) -> None:
        while not self._stop.is_set():
            asked = self._asked.wait(self.poll if self.watch else None)
            if self._stop.is_set():
                return
            self._asked.clear()
            now = fingerprint(self.path)
            if not asked and now == self._seen:
                continue
            if not asked:  # changed: wait until it stops changing (a copy in progress)
                self._stop.wait(self.poll)
                if fingerprint(self.path) != now:
                    continue
            self._seen = now
            while self._ready is not None and not self._stop.is_set():  # the last one not taken yet
                self._stop.wait(0.05)
            self._load()

    def _load(self) -> None:
        from edgecat.signing import bundle_hash, open_trusted

        old = self.running
        runtime = None
        try:
            bundle = open_trusted(self.path, self.trusted_keys)
            if not self._asked_for(bundle, old):
                self._finish(None, ok=None)
                return
            if bundle.input_size != old.bundle.input_size:
                raise EdgecatError(f"its input size {bundle.input_size} differs from the running model's "
                                   f"{old.bundle.input_size}; restart the stream to change it")
            if bundle.classes != old.bundle.classes:
                raise EdgecatError(f"its classes {bundle.classes} differ from the running model's "
                                   f"{old.bundle.classes}; restart the stream to change them")
            runtime = self.open_runtime(bundle)
            check_recorded_figures(bundle, getattr(runtime, "artifact_key", None))
            out = np.asarray(runtime.warm_up())
            if out.shape != (1, bundle.num_classes) or not all(math.isfinite(float(x)) for x in out.ravel()):
                raise EdgecatError(f"its model gave {out.shape} or non-finite values on a warm-up frame")
            ready = Model(bundle, runtime, self.model_info(bundle, runtime))
        except Exception as exc:  # noqa: BLE001 - any failure: refuse the bundle, keep the running model
            if runtime is not None:
                runtime.close()
            self.refused += 1
            self.last_error = redact(exc if isinstance(exc, EdgecatError) else f"{type(exc).__name__}: {exc}")
            log.error("new bundle at %s refused, the running model goes on: %s", self.path,
                      self.last_error.splitlines()[0] if self.last_error else "")
            self._finish(None, ok=False)
            return
        log.info("new bundle at %s ready (%s, bundle %s); swapping it in between two batches", self.path,
                 bundle.name, bundle_hash(bundle.manifest)[:12])
        self._finish(ready, ok=True)

    def _asked_for(self, bundle: Bundle, old: Model) -> bool:
        """False when the bundle is the one running (only its unsigned sections were rewritten)."""
        from edgecat.signing import bundle_hash

        same = bundle_hash(bundle.manifest) == bundle_hash(old.bundle.manifest)
        if same:
            log.info("bundle at %s is the one running; nothing to swap", self.path)
        return not same

    def _finish(self, ready: Model | None, ok: bool | None) -> None:
        with self._done:
            if ready is not None:
                self._ready = ready
                self.swaps += 1
            self._attempts += 1
            self._done.notify_all()
        if ok is not None and self.on_result is not None:
            self.on_result(ok)
