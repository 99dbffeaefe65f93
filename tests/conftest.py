"""Shared fixtures: tiny synthetic data and tiny bundles (weights=None, 32-64 px).

Built once per session and copied per test where a test writes into the bundle.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgecat.runtime import Runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def has_tensorflow() -> bool:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


needs_tf = pytest.mark.skipif(not has_tensorflow(), reason="needs the training extra (TensorFlow)")


@functools.cache  # probes the driver (and maybe nvidia-smi); asked by several skip marks
def has_gpu() -> bool:
    """An NVIDIA GPU the driver can see. Not "a GPU package is installed": onnxruntime-gpu lists
    its CUDA provider and the tensorrt wheel imports on machines without one."""
    from edgecat.errors import EdgecatError
    from edgecat.runtime.cuda import current_gpu

    try:
        current_gpu()
    except EdgecatError:
        return False
    return True


def has_onnxruntime_cuda() -> bool:
    import onnxruntime as ort

    return has_gpu() and "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each session gets its own image-check cache; no test reads the user's ~/.cache."""
    monkeypatch.setenv("EDGECAT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgecat-cache"))


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """train/ + validation/ with 2 classes x 24 images of 64 px."""
    from edgecat.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data") / "split", per_class=24, size=64, layout="split")


def untrained_model(backbone: str, size: int, seed: int = 0):
    """A weights=None model whose outputs vary with the input.

    A random MobileNetV2 with initial BatchNorm statistics outputs a constant 0.5, which would let
    parity tests pass vacuously; setting the statistics from one batch (momentum 0) fixes that.
    Weights are seeded, so every run tests the same model and a tolerance cannot pass on one
    draw of the initializers and fail on the next.
    """
    import keras
    import numpy as np

    from edgecat.models import build_model

    keras.utils.set_random_seed(seed)
    model, base = build_model(backbone, num_classes=2, img_size=size, weights=None, freeze_bn=False)
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    x = np.random.default_rng(0).uniform(0, 255, (16, size, size, 3)).astype("float32")
    model(x, training=True)
    for layer in bns:
        layer.momentum = 0.9
    return model


def _make_bundle(root: Path, backbone: str, size: int, data: Path | None, onnx: bool) -> Path:
    """A bundle with an untrained (weights=None) model: what the export/runtime tests need."""
    from edgecat.bundle import Bundle
    from edgecat.data import checked, discover
    from edgecat.export.onnx import export_onnx
    from edgecat.fsutil import atomic_path
    from edgecat.models import get_backbone
    from edgecat.splits import write_splits

    model = untrained_model(backbone, size)
    bundle = Bundle.create(root, name=root.name, backbone=backbone, input_size=(size, size),
                           classes=["cat", "dog"], preprocessing=get_backbone(backbone).preprocessing)
    if data is not None:
        write_splits(bundle, checked(discover(data)))
    with atomic_path(root / "model.keras") as tmp:
        model.save(str(tmp))
    bundle.add_artifact("keras", root / "model.keras", format="keras", precision="fp32")
    if onnx:
        export_onnx(bundle)
    bundle.manifest["status"] = "complete"
    bundle.save()
    return root


@pytest.fixture(scope="session")
def tiny_bundle_src(tmp_path_factory, synth_data) -> Path:
    if not has_tensorflow():
        pytest.skip("needs the training extra (TensorFlow) to build a bundle")
    return _make_bundle(tmp_path_factory.mktemp("bundles") / "mnv2-48", "mobilenet_v2", 48, synth_data, onnx=True)


@pytest.fixture
def tiny_bundle(tiny_bundle_src, tmp_path) -> Path:
    """A private copy of a 48 px MobileNetV2 bundle with model.keras and model.onnx."""
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_src, dst)
    return dst


@pytest.fixture
def onnx_bundle(request, tmp_path) -> Path:
    """A bundle with model.onnx: :func:`tiny_bundle` where TensorFlow is, else a copy of the bundle
    named by EDGECAT_TEST_BUNDLE (built elsewhere), so GPU boxes without TensorFlow run the GPU tests."""
    src = os.environ.get("EDGECAT_TEST_BUNDLE")
    if src:
        dst = tmp_path / "bundle"
        shutil.copytree(src, dst)
        return dst
    return request.getfixturevalue("tiny_bundle")


# ------------------------------------------------------------------------------ stream tests
WAIT = 20.0  # seconds before a condition counts as never met (only reached when something is broken)


class ColourRuntime(Runtime):
    """P(dog) from the blue-minus-red balance of the picture: exact on edgecat.synthetic images."""

    backend = "colour"

    def _load(self) -> None:
        self.calls = 0

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        mean = batch.reshape(len(batch), -1, 3).mean(axis=1)
        return 1.0 / (1.0 + np.exp(-(mean[:, 2] - mean[:, 0]) / 4.0))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def colour_bundle(tmp_path_factory):
    """A bundle manifest for ColourRuntime (no model files: the runtime is self-contained)."""
    from edgecat.bundle import Bundle
    from edgecat.synthetic import CLASSES

    return Bundle.create(tmp_path_factory.mktemp("colour") / "b", name="colour", backbone="none",
                         input_size=(48, 48), classes=list(CLASSES), preprocessing="none")


class CountingReader:
    """Wraps the real reader of a source and signals every frame it has decoded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.read_count = 0
        self.ended = False
        self.cond = threading.Condition()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def read(self):
        got = self.inner.read()
        with self.cond:
            self.read_count += 1 if got is not None else 10**6  # end of file: release every waiter
            self.ended = self.ended or got is None
            self.cond.notify_all()
        return got

    def wait_for(self, n: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.read_count >= n, timeout=WAIT)


@pytest.fixture
def readers(monkeypatch):
    """Every stream source's reader, wrapped in a CountingReader, in the order they are made."""
    from edgecat.stream import capture

    made: list[CountingReader] = []
    real = capture.make_reader

    def make(*args, **kwargs):
        made.append(CountingReader(real(*args, **kwargs)))
        return made[-1]

    monkeypatch.setattr(capture, "make_reader", make)
    return made


# ------------------------------------------------------------------------------ the CLI's own answers
def predicted_labels(bundle: Path, folder: Path, precision: str = "fp32") -> list[tuple[str, str]]:
    """(class folder, label) per image of ``folder`` as `edgecat predict` on ONNX Runtime gives them."""
    from click.testing import CliRunner

    from edgecat.cli import main

    res = CliRunner().invoke(main, ["predict", str(bundle), str(folder), "--backend", "onnxruntime",
                                    "--precision", precision, "--format", "json"])
    assert res.exit_code == 0, res.output
    return [(Path(r["file"]).parent.name, r["label"]) for r in json.loads(res.output[res.output.index("["):])]


def _scores_from_predict(bundle: Path, folder: Path, precision: str = "fp32") -> dict[str, float]:
    """Accuracy and precision (positive class: dog) worked out from `edgecat predict`'s own labels
    and the class folders: an independent path to the figures evaluate, bench and the precision table report."""
    pairs = predicted_labels(bundle, folder, precision)
    said_dog = [truth for truth, label in pairs if label == "dog"]
    return {"accuracy": sum(t == p for t, p in pairs) / len(pairs),
            "precision": said_dog.count("dog") / len(said_dog) if said_dog else 0.0}


# ------------------------------------------------------------------------------ TensorRT stand-in
#: enum values of the names build settings touch, per TensorRT major (NvInfer.h of 10.x and 11.x):
#: TensorRT 11 dropped EXPLICIT_BATCH (STRONGLY_TYPED moved from bit 1 to bit 0) and the FP16/INT8 flags
TRT_ENUMS = {
    "10": {"NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1},
           "BuilderFlag": {"FP16": 0, "INT8": 1, "DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "TF32": 6}},
    "11": {"NetworkDefinitionCreationFlag": {"STRONGLY_TYPED": 0},
           "BuilderFlag": {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 4, "TF32": 6}},
    "8": {"NetworkDefinitionCreationFlag": {"EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1},
          "BuilderFlag": {"FP16": 0, "INT8": 1, "TF32": 7}},
}
