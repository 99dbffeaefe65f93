"""Keras runtimes: ``keras-predict`` (``model.predict``, the notebook baseline) and ``keras``
(a traced ``tf.function``, what a careful TensorFlow user would deploy)."""

from __future__ import annotations

import logging

import numpy as np

from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime
from edgecat.runtime.keras.loader import load_keras_model

log = logging.getLogger(__name__)


class KerasPredictRuntime(Runtime):
    backend = "keras-predict"

    def _load(self) -> None:
        if self.precision != "fp32":
            raise EdgecatError(f"{self.backend} runs fp32 only (asked for {self.precision})")
        self.artifact_key = "keras"
        self.model = load_keras_model(self.bundle.artifact_path("keras"))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(batch, verbose=0))


class KerasFunctionRuntime(KerasPredictRuntime):
    backend = "keras"

    def _load(self) -> None:
        super()._load()
        import tensorflow as tf

        h, w = self.bundle.input_size
        model = self.model
        # reduce_retracing: one trace per batch size is fine; a dynamic batch dim avoids even that.
        self._fn = tf.function(
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec([None, h, w, 3], tf.float32)],
            jit_compile=False,
        )

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(batch).numpy()
