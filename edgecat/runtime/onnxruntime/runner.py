"""ONNX Runtime: CPU, CUDA and TensorRT execution providers over the bundle's ONNX files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.errors import EdgecatError
from edgecat.runtime.base import Runtime, as_model_input
from edgecat.runtime.cuda import gpu_memory_used
from edgecat.runtime.onnxruntime.loader import import_ort, open_session, session_options

log = logging.getLogger(__name__)


class OnnxRuntimeCPU(Runtime):
    """Options: ``threads`` (default: physical cores), ``spinning`` (default True), ``stop_spinning``
    (default False: workers keep spinning between runs, ORT's default; see ``session_options``)."""

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
        opts = session_options(self.options.get("threads"), bool(self.options.get("spinning", True)),
                               bool(self.options.get("stop_spinning", False)))
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


#: what makes TensorRT build FP32 without TF32: ORT's TensorRT provider has no TF32 option (TensorRT
#: enables TF32 by default); NVIDIA's libraries, TensorRT's builder included, honour this variable
TF32_OFF = {"NVIDIA_TF32_OVERRIDE": "0"}


def tensorrt_ep_options(precision: str, input_name: str, hwc: tuple[int, int, int],
                        batch: tuple[int, int, int], cache: Path) -> dict[str, Any]:
    """ONNX Runtime TensorRT provider options for one bundle graph, as the native engine build has them.

    - An explicit batch profile (``trt_profile_min/opt/max_shapes``, ``name:NxHxWxC``): without one the
      provider builds its engine for the first batch it sees and rebuilds whenever a larger one arrives.
    - FP16 graphs with ``trt_fp16_enable``; INT8 (Q/DQ) graphs with ``trt_int8_enable`` and
      ``trt_fp16_enable`` both, so the layers the Q/DQ file keeps in fp16 run in fp16, as on the
      native engine; FP32 with neither (TF32 is turned off through :data:`TF32_OFF`, see the runner).
    - Engine and timing caches under ``cache`` (keyed by the file's content and these options).
    """
    h, w, c = hwc

    def shape(n: int) -> str:
        return f"{input_name}:{n}x{h}x{w}x{c}"

    bmin, bopt, bmax = batch
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache.parent),
        "trt_fp16_enable": precision in ("fp16", "int8"),
        "trt_int8_enable": precision == "int8",
        "trt_profile_min_shapes": shape(bmin),
        "trt_profile_opt_shapes": shape(bopt),
        "trt_profile_max_shapes": shape(bmax),
    }


def tensorrt_ep_environment(precision: str) -> dict[str, str]:
    """Environment the TensorRT provider's engine build needs for ``precision``: FP32 means FP32 (no TF32),
    as on the native builder and the CUDA provider."""
    return dict(TF32_OFF) if precision == "fp32" else {}


class OnnxRuntimeTensorRT(OnnxRuntimeCPU):
    """Options as the CPU backend, plus ``batch`` (``"MIN,OPT,MAX"``, default 1,8,32): the batch
    profile the provider's engine is built for; a larger batch is refused, never a silent rebuild."""

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

    @property
    def batch_profile(self) -> tuple[int, int, int]:
        from edgecat.runtime.tensorrt.loader import parse_batch

        return parse_batch(self.options.get("batch"))

    def _ep_options(self, cache: Path) -> dict[str, Any]:
        key = self.artifact_for(self.precision)
        h, w = self.bundle.input_size
        return tensorrt_ep_options(self.precision, str(self.bundle.artifacts[key].get("input", "image")),
                                   (h, w, 3), self.batch_profile, cache)

    def engine_cache_dir(self) -> Path:
        """``trt_cache/<sha256 of the artifact>-<options>``: ORT keys its engine cache by model file name and
        versions, not content or build options, so a re-calibrated model.int8-trt.onnx, or an engine
        built with other precision flags or another profile, would otherwise be reused."""
        sha = self.bundle.artifacts[self.artifact_for(self.precision)]["sha256"]
        settings = {k: v for k, v in self._ep_options(Path(".")).items() if not k.endswith("_path")}
        settings["env"] = tensorrt_ep_environment(self.precision)
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
        cache = self.bundle.path / "trt_cache" / f"{sha[:16]}-{digest}"
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def provider_options(self) -> list[Any]:
        trt = self._ep_options(self.engine_cache_dir())
        return [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]

    def _load(self) -> None:
        self.max_batch = self.batch_profile[2]
        env = tensorrt_ep_environment(self.precision)
        for name, value in env.items():
            if os.environ.get(name, value) != value:
                log.warning("%s=%s is set: the TensorRT provider's %s engine may use TF32", name,
                            os.environ[name], self.precision)
            else:
                os.environ[name] = value  # read by TensorRT when it builds, i.e. while the session opens
        super()._load()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] > self.max_batch:
            raise EdgecatError(f"batch {batch.shape[0]} exceeds the onnxruntime-trt profile's maximum "
                               f"{self.max_batch}; open it with batch=\"1,{batch.shape[0]},{batch.shape[0]}\"")
        return super()._run(batch)

    def gpu_memory_bytes(self) -> int | None:
        return gpu_memory_used()
