"""ONNX Runtime: CPU, CUDA and TensorRT execution providers over the bundle's ONNX files."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime, as_model_input
from edgecat.runtime.cuda import gpu_memory_used
from edgecat.runtime.onnxruntime.loader import import_ort, open_session, session_options

log = logging.getLogger(__name__)


class OnnxRuntimeCPU(Runtime):
    """Options: ``threads`` (default: physical cores), ``spinning`` (default True)."""

    backend = "onnxruntime"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    def artifact_for(self, precision: str) -> str:
        """The registry's ONNX artifact this backend runs at ``precision``."""
        found = artifacts.for_backend(self.backend, precision)
        if found is None:
            raise EdgecatError(f"{self.backend} has no model at {precision}")
        return found.key

    def provider_options(self) -> list[Any]:
        return list(self.providers)

    def _load(self) -> None:
        ort = import_ort()
        available = ort.get_available_providers()
        needed = self.providers[0]
        if needed not in available:
            raise EdgecatError(
                f"{self.backend}: ONNX Runtime here has no {needed} (available: {', '.join(available)})"
            )
        if needed != "CPUExecutionProvider" and hasattr(ort, "preload_dlls"):
            # CUDA/cuDNN from pip's nvidia-* wheels (torch installs, onnxruntime-gpu[cuda,cudnn]) are
            # not on the loader path; ORT >= 1.21 finds them this way. System CUDA still wins.
            try:
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - best effort; the provider check below decides
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
        self.artifact_key = self.artifact_for(self.precision)
        path = self.bundle.artifact_path(self.artifact_key)
        opts = session_options(self.options.get("threads"), bool(self.options.get("spinning", True)))
        self.session = open_session(path, opts, self.provider_options())
        used = self.session.get_providers()
        if used[0] != needed:
            # ORT falls back to the next provider silently when CUDA/TensorRT libraries or the GPU are
            # missing; a "GPU" figure measured on the CPU would be worse than no figure.
            raise EdgecatError(
                f"{self.backend}: ONNX Runtime could not start {needed} here (no GPU, or CUDA/cuDNN"
                f"{'/TensorRT' if 'Tensorrt' in needed else ''} libraries not found); it offered {', '.join(used)}"
            )
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_names = ["probabilities"] if "probabilities" in outputs else outputs[:1]

    def prepare(self, batch: np.ndarray) -> np.ndarray:
        return as_model_input(batch, uint8=self.input_type == "tensor(uint8)")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: batch})[0]


class OnnxRuntimeCUDA(OnnxRuntimeCPU):
    backend = "onnxruntime-cuda"
    providers = ("CUDAExecutionProvider", "CPUExecutionProvider")

    def provider_options(self) -> list[Any]:
        # cuDNN's TF32 convolutions on Ampere+ moved probabilities by 5.6e-3 against the CPU on an H100;
        # FP32 means FP32 here, and FP16 is the fast path for those who want it.
        cuda = {"use_tf32": "0" if self.precision == "fp32" else "1"}
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]

    def gpu_memory_bytes(self) -> int | None:
        """Device memory in use (all processes) through cuda-python when it is installed."""
        return gpu_memory_used()


class OnnxRuntimeTensorRT(OnnxRuntimeCPU):
    backend = "onnxruntime-trt"
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

    def artifact_for(self, precision: str) -> str:
        # TensorRT builds from symmetric int8 Q/DQ only; the CPU flavour (uint8, non-zero zero points)
        # breaks its parser's rules, so it is refused rather than tried.
        key = super().artifact_for(precision)
        if precision == "int8" and not self.bundle.has(key):
            cpu = artifacts.onnx("int8", "cpu").file
            raise EdgecatError(
                f"onnxruntime-trt int8 runs {artifacts.file_of(key)} (symmetric Q/DQ, TensorRT's rules), which "
                f"the bundle lacks; {cpu} is the CPU flavour and TensorRT cannot build it: run "
                f"`{artifacts.export_command(self.bundle.path, key)}`")
        return key

    def engine_cache_dir(self) -> Any:
        """``trt_cache/<sha256 of the artifact>``: ORT keys its engine cache by model file name and
        versions, not content, so a re-calibrated model.int8-trt.onnx would reuse the old engine."""
        sha = self.bundle.artifacts[self.artifact_for(self.precision)]["sha256"]
        cache = self.bundle.path / "trt_cache" / sha[:16]
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def provider_options(self) -> list[Any]:
        cache = self.engine_cache_dir()
        trt = {
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache.parent),
            "trt_fp16_enable": self.precision == "fp16",
            "trt_int8_enable": self.precision == "int8",
        }
        return [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
