"""The Python API: what the CLI does, as functions and one small ``Model`` facade.

In the style of Ultralytics (``YOLO("best.pt").predict(...)``)::

    import edgecat
    model = edgecat.load("runs/cats")            # a bundle folder
    for p in model.predict(["cat.jpg", "photos/"]):
        print(p.file, p.label, p.probability)

Every function takes the same settings as its command (``--calib-size`` -> ``calib_size``) and
raises :class:`edgecat.EdgecatError` with the same one-line messages. Nothing here imports
TensorFlow until a Keras model is trained or run.

Library chatter stays off the caller's stderr as it does in the CLI (:func:`quiet`): TensorFlow's
C++ start-up and ``cuInit`` lines, Keras' and TensorFlow's ``UserWarning``s. The caller's logging
handlers are never touched; a program that wants TensorFlow's own lines imports it first or sets
``TF_CPP_MIN_LOG_LEVEL`` itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgecat.errors import EdgecatError

PathLike = str | os.PathLike
F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """For the length of an API call, what the CLI filters: TensorFlow's C++ log lines (the import's
    start-up lines at the file-descriptor level, the later ones such as ``E0000 ... cuInit`` by
    TensorFlow's own log level, unless the caller set one) and UserWarning/DeprecationWarning."""
    from edgecat.log import quiet_tensorflow_import

    for name, level in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("ABSL_MIN_LOG_LEVEL", "3"), ("GRPC_VERBOSITY", "ERROR")):
        os.environ.setdefault(name, level)
    quiet_tensorflow_import()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _quietly(fn: F) -> F:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with quiet():
            return fn(*args, **kwargs)

    return call  # type: ignore[return-value]


def _ensure_logging() -> None:
    """Long calls (train, export, benchmark) report progress as the CLI does, on stderr, unless
    the program has set up logging itself (then its handlers decide)."""
    from edgecat.log import setup_api_logging

    setup_api_logging()


def _bundle(bundle: Any) -> Any:
    from edgecat.bundle import Bundle

    return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)


def cuda_devices(device: str | int) -> str:
    """A device as ``--device`` takes it (``0``, ``1``, ``0,1``, ``cuda:1``, ``cpu``) -> CUDA_VISIBLE_DEVICES."""
    value = str(device).strip().lower()
    if value == "cpu":
        return "-1"
    ids = [v.strip().removeprefix("cuda:") for v in value.split(",")]
    if not ids or not all(i.isdigit() for i in ids):
        raise EdgecatError(f"'{device}' is not a GPU index (0, 1, ...), cuda:N or cpu")
    return ",".join(ids)


def set_device(device: str | int | None) -> None:
    """Choose the GPU (``0``, ``"cuda:1"``) or ``"cpu"``, as ``--device`` does; call before the
    first model is opened (CUDA reads CUDA_VISIBLE_DEVICES once per process)."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices(device)


class Model:
    """A bundle opened for inference; the runtime is opened on first use and kept for the next call.

    ``backend`` and ``precision`` are the defaults of :meth:`predict` and :meth:`evaluate`
    (None: ``auto`` for both when the bundle has exports, else Keras FP32; see
    :func:`edgecat.runtime.resolve_defaults`).
    """

    def __init__(self, bundle: PathLike | Any, backend: str | None = None, precision: str | None = None,
                 device: str | int | None = None, **options: Any) -> None:
        set_device(device)
        self.bundle = _bundle(bundle)
        self.backend, self.precision, self.options = backend, precision, options
        self._runtimes: dict[tuple[str, str], Any] = {}
        #: set by :func:`train`: the validation metrics and the epoch history of that run
        self.metrics: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] | None = None

    # -- facts --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.bundle.path

    @property
    def classes(self) -> list[str]:
        return list(self.bundle.classes)

    @property
    def info(self) -> dict[str, Any]:
        """The manifest (``edgecat info --json``), re-read so an export made meanwhile shows."""
        from edgecat.bundle import Bundle

        self.bundle = Bundle.open(self.bundle.path)
        return dict(self.bundle.manifest)

    def __repr__(self) -> str:
        return f"edgecat.Model({str(self.path)!r}, classes={self.classes})"

    # -- inference ----------------------------------------------------------------------------
    @_quietly
    def runtime(self, backend: str | None = None, precision: str | None = None) -> Any:
        """The open :class:`edgecat.runtime.Runtime` for ``backend``/``precision`` (opened once)."""
        from edgecat.runtime import resolve_defaults
        from edgecat.select import open_backend

        backend, precision = resolve_defaults(self.bundle, backend or self.backend, precision or self.precision)
        key = (backend, precision)
        if key not in self._runtimes:
            self._runtimes[key] = open_backend(self.bundle, backend, precision, **self.options)[0]
        return self._runtimes[key]

    @_quietly
    def predict(self, source: Any, backend: str | None = None, precision: str | None = None,
                batch: int = 32) -> list[Any]:
        """Classify image files, folders, or RGB arrays (HxWx3 uint8, an NxHxWx3 uint8 batch, or a
        list of them; anything else is an EdgecatError saying so).

        Returns one :class:`edgecat.predict.Prediction` per image (``file``, ``label``,
        ``probability``, ``probs``; ``error`` for an unreadable file instead of an exception).
        """
        from edgecat import imaging
        from edgecat.predict import run_files, to_predictions
        from edgecat.runtime.base import run_chunked

        if batch < 1:
            raise EdgecatError(f"batch size must be at least 1 (got {batch})")
        items = list(source) if isinstance(source, (list, tuple)) else [source]
        arrays = [isinstance(x, np.ndarray) for x in items]
        if any(arrays) and not all(arrays):
            raise EdgecatError("predict takes image paths or arrays, not both in one call")
        if items and all(arrays):
            images = imaging.rgb_images(items)  # before the runtime opens: a wrong array fails at once
            rt = self.runtime(backend, precision)
            batch_in = imaging.to_batch([imaging.resize(x, rt.input_size) for x in images], dtype="uint8")
            probs = run_chunked(rt, batch_in, batch)
            return to_predictions(self.bundle, [f"<array {i}>" for i in range(len(images))], probs,
                                  list(range(len(images))), {})
        rt = self.runtime(backend, precision)
        files = [str(p) for p in imaging.list_images([str(x) for x in items])]
        if not files:
            raise EdgecatError(f"no images found in {', '.join(map(str, items))}")
        probs, ok, errors = run_files(rt, files, batch)
        return to_predictions(self.bundle, files, probs, ok, errors)

    @_quietly
    def evaluate(self, data: PathLike | None = None, backend: str | None = None, precision: str | None = None,
                 batch: int = 32, write: bool = True) -> dict[str, Any]:
        """Metrics on a labelled folder (default: the bundle's validation split); see ``edgecat evaluate``."""
        from edgecat.evaluate import evaluate_bundle

        res = evaluate_bundle(self.bundle, data=str(data) if data else None, backend=backend or self.backend,
                              precision=precision or self.precision, batch_size=batch, write=write,
                              plots=write, **self.options)
        return res.metrics

    @_quietly
    def export(self, **plan: Any) -> Any:
        """Add models to the bundle, as ``edgecat export`` (``fp16=True``, ``int8=True, calib=DIR``, ...)."""
        self.close()  # re-exported files must not be held open
        result = export(self.bundle.path, **plan)
        self.info  # noqa: B018 - re-read the manifest
        return result

    @_quietly
    def benchmark(self, **settings: Any) -> Any:
        """Latency per backend x precision x batch, as ``edgecat bench`` (returns a BenchReport)."""
        return benchmark(self.bundle, **settings)

    def close(self) -> None:
        for rt in self._runtimes.values():
            rt.close()
        self._runtimes.clear()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load(bundle: PathLike, backend: str | None = None, precision: str | None = None, device: str | int | None = None,
         **options: Any) -> Model:
    """Open a bundle folder for inference: ``edgecat.load("runs/cats").predict("cat.jpg")``."""
    return Model(bundle, backend=backend, precision=precision, device=device, **options)


@_quietly
def predict(bundle: PathLike, source: Any, backend: str | None = None, precision: str | None = None,
            batch: int = 32, **options: Any) -> list[Any]:
    """One-shot :meth:`Model.predict` (the runtime is closed afterwards)."""
    with Model(bundle, backend, precision, **options) as model:
        return model.predict(source, batch=batch)


@_quietly
def evaluate(bundle: PathLike, data: PathLike | None = None, backend: str | None = None,
             precision: str | None = None,
             batch: int = 32, write: bool = True, **options: Any) -> dict[str, Any]:
    """One-shot :meth:`Model.evaluate`: metrics as ``edgecat evaluate --json`` prints them."""
    with Model(bundle, backend, precision, **options) as model:
        return model.evaluate(data, batch=batch, write=write)


@_quietly
def export(bundle: PathLike, **plan: Any) -> Any:
    """``edgecat export``: ``export("runs/cats", fp16=True, int8=True, calib="data/train")``.
    Settings are :class:`edgecat.export.steps.ExportPlan`'s fields."""
    import dataclasses

    from edgecat.export.steps import ExportPlan, run_export

    _ensure_logging()
    known = {f.name for f in dataclasses.fields(ExportPlan)}
    unknown = sorted(set(plan) - known)
    if unknown:
        raise EdgecatError(f"unknown export setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return run_export(_bundle(bundle), ExportPlan(**plan))


@_quietly
def benchmark(bundle: PathLike | Any, **settings: Any) -> Any:
    """``edgecat bench``: ``benchmark("runs/cats", backends=["onnxruntime"], precisions=["fp32", "int8"])``.
    Settings are :class:`edgecat.bench.BenchConfig`'s fields; returns a BenchReport."""
    import dataclasses

    from edgecat.bench import BenchConfig, run_bench

    _ensure_logging()
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise EdgecatError(f"unknown benchmark setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return run_bench(bundle, BenchConfig(**settings))


def replace_bundle_dir(out: PathLike) -> None:
    """``exist_ok``: empty ``out`` for a new run when it holds an old bundle. Only a folder with a
    bundle manifest is removed, so a mistyped ``--out`` can never delete unrelated files."""
    out = Path(out)
    if not out.exists():
        return
    if not (out / "edgecat.json").exists():
        if any(out.iterdir()):
            raise EdgecatError(f"{out} is not empty and holds no bundle: pick another --out")
        return
    shutil.rmtree(out)


@_quietly
def train(data: PathLike | None = None, config: PathLike | None = None, resume: bool = False,
          exist_ok: bool = False, **settings: Any) -> Model:
    """``edgecat train``: ``train(data="data/cats-vs-dogs", out="runs/cats", img_size=160)``.

    Settings are :class:`edgecat.config.TrainConfig`'s fields, validated before any work; a
    ``config`` file (YAML/TOML/JSON) sits under them. ``exist_ok`` replaces a bundle already in
    ``out``. Returns the trained :class:`Model` (``.metrics``, ``.history`` set).
    """
    from edgecat.train import make_config
    from edgecat.train import train as run_training

    _ensure_logging()
    if data is not None:
        settings["data"] = data
    settings = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in settings.items()}
    cfg = make_config(settings, str(config) if config else None, resume)
    if exist_ok and cfg.out and not resume:
        replace_bundle_dir(cfg.out)
    result = run_training(cfg, resume=resume)
    model = Model(result.bundle)
    model.metrics, model.history = result.metrics, result.history
    return model


def checks() -> dict[str, Any]:
    """``edgecat checks --json``: what can run on this machine."""
    from edgecat.checks import run_checks

    return run_checks().as_dict()


__all__ = ["Model", "benchmark", "checks", "cuda_devices", "evaluate", "export", "load", "predict", "quiet",
           "replace_bundle_dir", "set_device", "train"]
