"""LiteRT (TFLite) through ai-edge-litert with the XNNPACK CPU delegate; no TensorFlow on the device.

Reads the bundle's model.{fp32,fp16,int8}.tflite (``edgecat export --tflite``). The files take raw
0-255 float32 NHWC with a dynamic batch; the input tensor is resized only when the batch size changes.
"""

from __future__ import annotations

import logging
import re

import numpy as np

from edgecat import artifacts
from edgecat.log import fd2_filtered
from edgecat.runtime.base import Runtime
from edgecat.runtime.litert.loader import make_interpreter

log = logging.getLogger(__name__)
XNNPACK_NOTICE = re.compile(r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")


class LiteRTRuntime(Runtime):
    """Options: ``threads`` (default: physical cores), ``xnnpack`` (default True)."""

    backend = "litert"

    def _load(self) -> None:
        self.artifact_key = artifacts.find("tflite", self.precision).key
        path = self.bundle.artifact_path(self.artifact_key)
        with fd2_filtered(XNNPACK_NOTICE):  # LiteRT's native INFO line on every load, not edgecat's log
            self.interp = make_interpreter(path, self.options.get("threads"), bool(self.options.get("xnnpack", True)))
            self.inp = self.interp.get_input_details()[0]
            self.out_index = self.interp.get_output_details()[0]["index"]
            self.dtype = np.dtype(self.inp["dtype"])
            self.quant = self.inp.get("quantization", (0.0, 0))
            self._batch = -1
            self._resize(1)

    def _resize(self, n: int) -> None:
        if n != self._batch:
            self.interp.resize_tensor_input(self.inp["index"], [n, *self.inp["shape"][1:]])
            self.interp.allocate_tensors()
            self._batch = n

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if self.dtype == np.float32:
            return np.ascontiguousarray(batch, dtype=np.float32)
        scale, zero = self.quant  # a full-integer file: quantize raw 0-255 with the file's own scale
        q = np.round(batch.astype(np.float32) / (scale or 1.0) + zero)
        info = np.iinfo(self.dtype)
        return np.ascontiguousarray(np.clip(q, info.min, info.max).astype(self.dtype))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        self._resize(batch.shape[0])
        self.interp.set_tensor(self.inp["index"], batch)
        self.interp.invoke()
        out = self.interp.get_tensor(self.out_index)
        return np.array(out, dtype=np.float32, copy=True)

    def close(self) -> None:
        self.interp = None
        super().close()
