"""Two-stage fine-tuning (frozen base, then the last layers at a low learning rate) into a bundle.

Stage 1 trains the head on a frozen backbone; stage 2 unfreezes the last N layers (the backbone's
own depth unless given) with BatchNormalization kept in inference mode. Neither stage feeds images
through layers it does not train: both train on cached outputs of the frozen part, a few augmented
views computed once (:mod:`edgecat.feature_cache`; same math, ~8x faster end to end). With random
weights a frozen backbone learns nothing, so ``full`` (every layer, one stage) is the default there,
for the epochs the two stages were given unless ``full_epochs`` is set.
A run that dies is marked ``failed``; its folder can be reused.

The best model by validation loss is written to the bundle after every improving epoch (atomically),
so Ctrl-C or a kill leaves a loadable bundle; ``resume=True`` continues from the last epoch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.config import TrainConfig
from edgecat.errors import EdgecatError, require_tensorflow
from edgecat.fsutil import atomic_path, write_json
from edgecat.train_finish import (
    FinishedRun,
    TrainingInterrupted,
    TrainResult,
    finish,
    finish_interrupted,
    history_summary,
    save_best,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


@dataclass
class Phase:
    name: str  # "stage1" | "stage2" | "full"
    trainable: str  # "frozen" | "partial" | "full"
    epochs: int
    lr: float


# ----------------------------------------------------------------------------------------- planning
def resolve_schedule(cfg: TrainConfig) -> str:
    if cfg.schedule is not None:
        if cfg.schedule not in ("two-stage", "full"):
            raise EdgecatError(f"unknown schedule '{cfg.schedule}' (choose two-stage or full)")
        if cfg.schedule == "two-stage" and str(cfg.weights).lower() == "none":
            log.warning("two-stage with --weights none: a frozen random backbone learns little in stage 1")
        return cfg.schedule
    return "full" if str(cfg.weights).lower() == "none" else "two-stage"


def full_epochs(cfg: TrainConfig) -> int:
    """``--full-epochs``, else the two stages' epochs added up: ``--weights none --stage1-epochs 1
    --stage2-epochs 1`` asks for a 2-epoch run, whichever schedule carries it."""
    return int(cfg.full_epochs) if cfg.full_epochs is not None else int(cfg.stage1_epochs + cfg.stage2_epochs)


def plan(cfg: TrainConfig, schedule: str) -> list[Phase]:
    if schedule == "full":
        return [Phase("full", "full", full_epochs(cfg), cfg.full_lr)]
    return [
        Phase("stage1", "frozen", cfg.stage1_epochs, cfg.stage1_lr),
        Phase("stage2", "partial", cfg.stage2_epochs, cfg.stage2_lr),
    ]


def describe_plan(cfg: TrainConfig, schedule: str, phases: list[Phase], resumed: bool = False) -> str:
    """One line: which schedule runs, for how many epochs, and why (logged at the start of a run)."""
    epochs = sum(p.epochs for p in phases)
    if schedule == "full":
        source = (f"--full-epochs {cfg.full_epochs}" if cfg.full_epochs is not None
                  else f"--stage1-epochs {cfg.stage1_epochs} + --stage2-epochs {cfg.stage2_epochs}")
        why = ("the resumed run's schedule" if resumed else "--schedule full" if cfg.schedule == "full" else
               "--weights none: a frozen random backbone would learn nothing, so every layer trains")
        return f"schedule: full, {epochs} epoch(s) ({source}), lr {cfg.full_lr:g}; {why}"
    why = ("the resumed run's schedule" if resumed else "--schedule two-stage" if cfg.schedule == "two-stage"
           else "the default with pretrained weights")
    return (f"schedule: two-stage, {phases[0].epochs} + {phases[1].epochs} epoch(s) (frozen base at lr "
            f"{cfg.stage1_lr:g}, then the last layers at lr {cfg.stage2_lr:g}); {why}")


def default_out(cfg: TrainConfig, size: int) -> Path:
    """``runs/<name>``; a taken name gets -2, -3, ... as Ultralytics does."""
    name = cfg.name or f"{cfg.backbone}-{size}"
    root = Path("runs")
    out = root / name
    i = 2
    while out.exists():
        out = root / f"{name}-{i}"
        i += 1
    return out


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """A kill (SIGTERM) stops training the same way Ctrl-C does, so the bundle is finalised."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ----------------------------------------------------------------------------------------- keras bits
def _compile(model: Any, lr: float, num_classes: int) -> None:
    import keras

    if num_classes == 2:
        loss = keras.losses.BinaryCrossentropy()
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss, metrics=metrics)


class StepBar:
    """A transient bar with a total and an ETA (nothing drawn off a terminal or with -q) that says
    what it is waiting for until its first step: the first step of a pass is the slow one (images
    read and decoded, the model's function traced) and a bare ``0/63`` looks stuck."""

    def __init__(self, label: str, total: int | None, waiting: str = "") -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from edgecat.log import progress

        self.label, self.waiting = label, waiting
        self.prog = progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), TimeElapsedColumn())
        self.task = self.prog.add_task(f"{label} ({waiting})" if waiting else label, total=total)

    def __enter__(self) -> StepBar:
        self.prog.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.prog.stop()

    def advance(self, n: int = 1) -> None:
        if self.waiting:
            self.waiting = ""
            self.prog.update(self.task, description=self.label)
        self.prog.advance(self.task, n)


def _make_checkpoint_callback(trainer: Trainer, phase: Phase, steps: int | None = None) -> Any:
    """``steps``: batches per epoch when Keras cannot tell (a tf.data set whose size is unknown)."""
    import keras

    class EdgecatCheckpoint(keras.callbacks.Callback):
        """Per epoch: a bar with ETA on a terminal, then one log line, history, last weights (for
        --resume) and the best model into the bundle. Keras' own output is off (verbose=0), so each
        epoch is reported once."""

        first = True

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()
            waiting = "starting: building the training step" if self.first else ""
            self.first = False
            self._bar = StepBar(f"{phase.name} epoch {epoch + 1}/{phase.epochs}",
                                self.params.get("steps") or steps, waiting).__enter__()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self._bar.advance(1)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self._bar.__exit__(None, None, None)
            trainer.epoch_end(phase, epoch, dict(logs or {}), time.perf_counter() - self.t0)

    return EdgecatCheckpoint()


def _make_bn_callback(model: Any, train_ds_fn: Any, max_batches: int) -> Any:
    """Before each validation (and so before the best model is chosen and saved), BatchNormalization
    statistics are recomputed for the current weights: see :func:`edgecat.models.recalibrate_batchnorm`."""
    import keras

    from edgecat.models import recalibrate_batchnorm

    class RecalibrateBatchNorm(keras.callbacks.Callback):
        def on_test_begin(self, logs: Any = None) -> None:
            t0 = time.perf_counter()
            n = recalibrate_batchnorm(model, train_ds_fn(False, shuffle=True), max_batches)
            log.debug("BatchNormalization statistics recomputed on %d batches in %.1f s", n, time.perf_counter() - t0)

    return RecalibrateBatchNorm()


def _dead_run(path: Path) -> bool:
    """A folder left by a run that failed (or died in set-up) with no model and nothing to resume."""
    import json

    try:
        manifest = json.loads((path / "edgecat.json").read_text())
    except (OSError, ValueError):
        return False
    return manifest.get("status") in ("failed", "training") and not (path / artifacts.file_of("keras")).exists() \
        and not (path / CHECKPOINT_DIR / STATE_FILE).exists()


class Trainer:
    """Runs the phases of one training run and keeps the bundle consistent after every epoch."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        require_tensorflow()
        from edgecat.models import effective_unfreeze, get_backbone

        self.cfg = cfg
        self.resume = resume
        self.spec = get_backbone(cfg.backbone)
        self.size = int(cfg.img_size or self.spec.default_size)
        self.schedule = resolve_schedule(cfg)
        self.unfreeze = effective_unfreeze(self.spec, cfg.unfreeze)
        self.phases = plan(cfg, self.schedule)
        log.info("%s", describe_plan(cfg, self.schedule, self.phases, resume))
        self.history: list[dict[str, Any]] = []
        self.best_val_loss = float("inf")
        self.state: dict[str, Any] = {}
        self.timings: dict[str, Any] = {}
        self.model: Any = None
        self.bundle: Bundle | None = None
        self._val_ds_fn: Any = None  # builds the validation tf.data set (used again for TFDS metrics)
        self.current: str = ""
        self._cache: Any = None  # edgecat.feature_cache.FeatureCache, built on first use
        self._split: Any = None
        self._cache_built_in = ""
        self.cache_info: dict[str, Any] = {}

    # -------------------------------------------------------------------- checkpoint state
    @property
    def ckpt(self) -> Path:
        assert self.bundle is not None
        return self.bundle.path / CHECKPOINT_DIR

    def _save_state(self, phase: str, epochs_done: int) -> None:
        self.state = {"phase": phase, "epochs_done": epochs_done, "best_val_loss": self.best_val_loss,
                      "history": self.history, "timings": self.timings}
        write_json(self.ckpt / STATE_FILE, self.state)

    def _save_best(self) -> None:
        assert self.bundle is not None
        save_best(self.bundle, self.model, self.ckpt, self.best_val_loss, len(self.history))

    def epoch_end(self, phase: Phase, epoch: int, logs: dict[str, Any], seconds: float) -> None:
        row = {"stage": phase.name, "epoch": len(self.history) + 1, "stage_epoch": epoch + 1,
               "seconds": round(seconds, 2), **{k: float(v) for k, v in logs.items()}}
        self.history.append(row)
        with atomic_path(self.ckpt / "last.weights.h5", suffix=".weights.h5") as tmp:
            self.model.save_weights(str(tmp))
        val_loss = row.get("val_loss", float("inf"))
        if val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            self._save_best()
        self._save_state(phase.name, epoch + 1)
        assert self.bundle is not None
        write_json(self.bundle.path / "history.json", self.history)
        log.info("%s epoch %d/%d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f (%.1fs)",
                 phase.name, epoch + 1, phase.epochs, row.get("loss", float("nan")),
                 row.get("accuracy", float("nan")), val_loss, row.get("val_accuracy", float("nan")), seconds)

    # -------------------------------------------------------------------- data
    def _load_data(self) -> tuple[Any, Any, list[str]]:
        from edgecat import input_pipeline as pipeline

        cfg = self.cfg
        size = (self.size, self.size)
        if cfg.data.startswith("tfds:"):
            train, val, classes = pipeline.tfds_splits(cfg.data[5:], cfg.val_split)
            self.dataset = None
            self.data_info = {"source": cfg.data, "layout": "tfds", "classes": classes}
            mk = pipeline.tfds_pipeline
            return (
                lambda aug, shuffle=True: mk(train, size, cfg.batch_size, training=shuffle, augment=aug, seed=cfg.seed),
                lambda: mk(val, size, cfg.batch_size, training=False, augment=False, seed=cfg.seed),
                classes,
            )
        from edgecat.data import checked, discover

        if not cfg.data:
            raise EdgecatError("no training data: pass --data DIR (or tfds:cats_vs_dogs)")
        dataset = checked(discover(cfg.data, cfg.val_split, cfg.seed))
        if len(dataset.val) == 0:
            raise EdgecatError(f"no validation images in {cfg.data}")
        self.dataset = dataset
        self.data_info = dataset.describe()
        n = len(dataset.classes)
        return (
            lambda aug, shuffle=True: pipeline.image_dataset(
                dataset.train, size, cfg.batch_size, training=shuffle, augment=aug, seed=cfg.seed, num_classes=n),
            lambda: pipeline.image_dataset(
                dataset.val, size, cfg.batch_size, training=False, seed=cfg.seed, num_classes=n),
            dataset.classes,
        )

    # -------------------------------------------------------------------- bundle
    def _open_bundle(self, classes: list[str]) -> Bundle:
        cfg = self.cfg
        if self.resume:
            if not cfg.out:
                raise EdgecatError("--resume needs --out BUNDLE (the folder of the run to continue)")
            bundle = Bundle.open(cfg.out)
            state_file = bundle.path / CHECKPOINT_DIR / STATE_FILE
            if not state_file.exists():
                raise EdgecatError(f"nothing to resume in {bundle.path}: no {CHECKPOINT_DIR}/{STATE_FILE}")
            import json

            self.state = json.loads(state_file.read_text())
            if bundle.classes != classes:
                raise EdgecatError(f"--resume: classes {classes} differ from the bundle's {bundle.classes}")
            return bundle
        out = Path(cfg.out) if cfg.out else default_out(cfg, self.size)
        if (out / "edgecat.json").exists():
            if not _dead_run(out):
                raise EdgecatError(f"{out} already holds a bundle; pick another --out, or --resume to continue it")
            log.info("%s holds a run that failed before it saved a model: starting it again", out)
            import shutil

            shutil.rmtree(out)
        cfg_dict = self.cfg.to_dict() | {"schedule": self.schedule, "img_size": self.size, "out": str(out),
                                         "unfreeze": self.unfreeze}
        return Bundle.create(out, name=cfg.name or out.name, backbone=self.spec.name,
                             input_size=(self.size, self.size), classes=classes,
                             preprocessing=self.spec.preprocessing, threshold=cfg.threshold, config=cfg_dict)

    def _setup_devices(self) -> Any:
        import keras
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        mp = self.cfg.mixed_precision
        if mp == "on" or (mp == "auto" and gpus):
            keras.mixed_precision.set_global_policy("mixed_float16")
            log.info("mixed precision: float16 compute, float32 weights")
        if len(gpus) > 1:
            log.info("training on %d GPUs with MirroredStrategy", len(gpus))
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()

    # -------------------------------------------------------------------- run
    def run(self) -> TrainResult:
        import keras

        cfg = self.cfg
        keras.utils.set_random_seed(cfg.seed)
        weights = "none" if self.resume else self._resolved_weights()  # offline: fail before any work
        train_ds_fn, val_ds_fn, classes = self._load_data()
        self._val_ds_fn = val_ds_fn
        self.bundle = self._open_bundle(classes)
        try:
            strategy = self._prepare(weights, classes)
            self._run_phases(train_ds_fn, val_ds_fn, strategy, len(classes))
            return self._finish()
        except TrainingInterrupted:
            raise
        except BaseException as exc:
            self._mark_failed(exc)
            raise

    def _resolved_weights(self) -> str:
        from edgecat.models import resolve_weights

        kw, local = resolve_weights(self.cfg.weights, self.spec, self.size)
        return str(local) if local is not None else (kw or "none")

    def _prepare(self, weights: str, classes: list[str]) -> Any:
        """Bundle bookkeeping, devices and the model (restored from the checkpoint on resume)."""
        from edgecat.models import build_model

        cfg, bundle = self.cfg, self.bundle
        assert bundle is not None
        bundle.manifest["data"] = self.data_info
        bundle.manifest["status"] = "training"
        bundle.manifest.pop("error", None)
        bundle.save()
        if self.dataset is not None:
            from edgecat.splits import write_splits

            write_splits(bundle, self.dataset)
            write_json(bundle.path / "data_report.json", self.dataset.checks)
        strategy = self._setup_devices()
        with strategy.scope():
            self.model, self.base = build_model(
                self.spec.name, num_classes=len(classes), img_size=self.size, weights=weights,
                head=cfg.head, dropout=cfg.dropout, freeze_bn=self.schedule != "full")
        if self.resume:
            self.model.load_weights(str(self.ckpt / "last.weights.h5"))
            self.history = list(self.state.get("history", []))
            self.best_val_loss = float(self.state.get("best_val_loss", float("inf")))
            self.timings = dict(self.state.get("timings", {}))
            log.info("resuming %s after %s epoch %s (optimizer state restarts)", bundle.path,
                     self.state.get("phase"), self.state.get("epochs_done"))
        bundle.manifest["versions"] = tool_versions("tensorflow", "keras", "numpy")
        bundle.save()
        return strategy

    def _run_phases(self, train_ds_fn: Any, val_ds_fn: Any, strategy: Any, num_classes: int) -> None:
        done_phase = self.state.get("phase") if self.resume else None
        done_epochs = int(self.state.get("epochs_done", 0)) if self.resume else 0
        names = [p.name for p in self.phases]
        try:
            with sigterm_as_interrupt():
                for phase in self.phases:
                    start = 0
                    if done_phase is not None:
                        if names.index(phase.name) < names.index(done_phase):
                            continue
                        if phase.name == done_phase:
                            start = done_epochs
                    if start >= phase.epochs:
                        continue
                    self.current = phase.name
                    self._run_phase(phase, start, train_ds_fn, val_ds_fn, strategy, num_classes)
        except KeyboardInterrupt:
            self._finish_interrupted()

    def _mark_failed(self, exc: BaseException) -> None:
        """A run that died is recorded as failed, so its folder can be reused with the same --out."""
        from edgecat.errors import first_line

        bundle = self.bundle
        if bundle is None:
            return
        with contextlib.suppress(Exception):
            bundle.manifest["status"] = "failed"
            bundle.manifest["error"] = first_line(exc) or type(exc).__name__
            bundle.save()

    def _run_phase(self, phase: Phase, start: int, train_ds_fn: Any, val_ds_fn: Any,
                   strategy: Any, num_classes: int) -> None:
        import keras

        from edgecat.models import set_trainable

        cfg = self.cfg
        assert self.bundle is not None
        n_trainable = set_trainable(self.base, phase.trainable, self.unfreeze, freeze_bn=self.schedule != "full")
        log.info("%s: %s base (%d trainable base layers), lr %g, %d epochs",
                 phase.name, phase.trainable, n_trainable, phase.lr, phase.epochs)
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience)
        callbacks: list[Any] = [_make_checkpoint_callback(self, phase, self._steps_per_epoch()), stopper]
        if self.schedule == "full" and cfg.bn_recalibrate > 0:
            callbacks.insert(0, _make_bn_callback(self.model, train_ds_fn, cfg.bn_recalibrate))
        if cfg.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(
                log_dir=str(self.bundle.path / "logs" / phase.name), profile_batch=0))
        use_cache = self._cache_ready(phase, train_ds_fn, val_ds_fn)
        t0 = time.perf_counter()
        if use_cache:
            self._fit_cached(phase, start, callbacks, num_classes)
        else:
            with strategy.scope():
                _compile(self.model, phase.lr, num_classes)
            self.model.fit(train_ds_fn(cfg.augment), validation_data=val_ds_fn(), epochs=phase.epochs,
                           initial_epoch=start, callbacks=callbacks, verbose=0)
        epochs_run = [r for r in self.history if r["stage"] == phase.name]
        if getattr(stopper, "stopped_epoch", 0) > 0:
            self._log_early_stop(phase, int(stopper.stopped_epoch), epochs_run)
        self.timings[phase.name] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "epochs": len(epochs_run),
            "seconds_per_epoch": round(sum(r["seconds"] for r in epochs_run) / max(1, len(epochs_run)), 2),
            "feature_cache": use_cache,
        }
        if use_cache and self._cache_built_in == phase.name:
            self.timings[phase.name]["feature_extraction_seconds"] = self.cache_info["seconds"]

    def _log_early_stop(self, phase: Phase, stopped: int, rows: list[dict[str, Any]]) -> None:
        """Keras stops quietly (verbose=0): say when, on what, and which epoch the bundle keeps."""
        scored = [r for r in rows if "val_loss" in r]
        best = min(scored, key=lambda r: r["val_loss"]) if scored else None
        kept = history_summary(self.history).get("kept") or {}
        since = f" since {phase.name} epoch {best['stage_epoch']} ({best['val_loss']:.4f})" if best else ""
        keeps = (f"; the bundle keeps epoch {kept['epoch']} ({kept['stage']} epoch {kept['stage_epoch']}, "
                 f"val_loss {kept['val_loss']:.4f})" if kept else "")
        log.info("%s: early stopping after epoch %d/%d: val_loss has not improved%s (patience %d)%s",
                 phase.name, stopped + 1, phase.epochs, since, self.cfg.patience, keeps)

    def _steps_per_epoch(self) -> int | None:
        """Training batches per epoch from the data's size: the image pipeline drops a file that
        fails to decode, which leaves its size unknown to Keras (the bar would read ``0/?``)."""
        if self.dataset is None:
            return None
        return max(1, math.ceil(len(self.dataset.train) / self.cfg.batch_size))

    # -------------------------------------------------------------------- feature cache
    def _cache_ready(self, phase: Phase, train_ds_fn: Any, val_ds_fn: Any) -> bool:
        """Build the feature cache on first use (both stages' quantities in one pass); whether this
        phase trains on it. See :mod:`edgecat.feature_cache`."""
        from edgecat import feature_cache as fc

        cfg = self.cfg
        if phase.trainable == "full" or cfg.feature_cache == "off":
            return False
        if self._cache is None:
            stage2 = next((p for p in self.phases if p.trainable == "partial" and p.epochs > 0), None)
            cut = max(0, len(self.base.layers) - self.unfreeze) if stage2 else None
            split = fc.split_frozen(self.model, self.base, cut)
            views = max(1, min(int(cfg.cache_views), max(p.epochs for p in self.phases))) if cfg.augment else 1
            n_train = len(self.dataset.train) if self.dataset is not None else None
            n_val = len(self.dataset.val) if self.dataset is not None else 0
            if split.tail is not None and (n_train is None or not fc.fits_in_memory(
                    fc.cache_bytes(split, views, n_train, n_val))):
                log.info("feature cache: the stage-2 boundary activations would not fit in memory; "
                         "stage 2 feeds images")
                split = fc.split_frozen(self.model, self.base, None)
            train_ds = train_ds_fn(cfg.augment, shuffle=False)  # one dataset: decoded once, augmented per pass
            total = (views * n_train + n_val) if n_train is not None else None
            with StepBar("feature cache", total, "starting: reading images, tracing the frozen layers") as progress:
                self._cache = fc.collect(split, lambda: train_ds, val_ds_fn(), views, progress.advance)
            self._split = split
            self.cache_info = self._cache.info
            self._cache_built_in = phase.name
        if phase.trainable == "frozen":
            return True
        return self._split.tail is not None

    def _fit_cached(self, phase: Phase, start: int, callbacks: list[Any], num_classes: int) -> None:
        from edgecat.feature_cache import view_batches

        cache, split = self._cache, self._split
        if phase.trainable == "frozen":
            model, views, val_x = split.head, cache.pooled, cache.val_pooled
        else:
            model, views, val_x = split.tail, cache.boundary, cache.val_boundary
        _compile(model, phase.lr, num_classes)
        data = view_batches(views, cache.labels, self.cfg.batch_size, self.cfg.seed, start)
        model.fit(data, validation_data=(val_x, cache.val_labels), validation_batch_size=self.cfg.batch_size,
                  epochs=phase.epochs, initial_epoch=start, callbacks=callbacks, verbose=0)

    # -------------------------------------------------------------------- endings
    def _finished(self) -> FinishedRun:
        assert self.bundle is not None
        return FinishedRun(
            bundle=self.bundle, model=self.model, checkpoint=self.ckpt, history=self.history,
            timings=self.timings, best_val_loss=self.best_val_loss, schedule=self.schedule,
            cache_info=self.cache_info, save_h5=self.cfg.save_h5, data=self.cfg.data,
            val_ds_fn=self._val_ds_fn if self.dataset is None else None, current=self.current)

    def _finish_interrupted(self) -> None:
        finish_interrupted(self._finished())

    def _finish(self) -> TrainResult:
        return finish(self._finished())


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train according to ``cfg`` and return where the bundle is and how it did."""
    return Trainer(cfg, resume=resume).run()


def make_config(flags: dict[str, Any], config_file: str | None = None, resume: bool = False) -> TrainConfig:
    """Defaults < the bundle's saved config (with resume) < config file < explicit flags."""
    from edgecat.config import read_config_file

    base = TrainConfig()
    if resume:
        out = flags.get("out")
        if not out:
            raise EdgecatError("--resume needs --out BUNDLE (the folder of the run to continue)")
        saved = dict(Bundle.open(out).manifest.get("config", {}))
        saved = {k: v for k, v in saved.items() if k in TrainConfig.field_names()}
        base = TrainConfig.from_dict(saved)
    if config_file:
        base = base.merged(read_config_file(config_file))
    return base.merged(flags)
