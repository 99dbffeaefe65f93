"""A model repository for NVIDIA Triton Inference Server, written from a bundle.

Triton is where a user goes when one box is not enough: many clients, dynamic batching, several
GPUs. Each exported artifact in the bundle becomes one Triton model, so the same bundle can be
served at every precision it was exported to, and ``edgecat bench --backend triton`` measures a
served model exactly as it measures a local one. Nothing here needs TensorFlow or tritonclient.

Layout written (one folder per model; other models already in ``out_dir`` are left alone)::

    out_dir/<bundle>-onnx-fp32/config.pbtxt
    out_dir/<bundle>-onnx-fp32/labels.txt
    out_dir/<bundle>-onnx-fp32/1/model.onnx
    out_dir/<bundle>-trt-<gpu>-fp16/1/model.plan        (TensorRT engines: GPU/TensorRT specific)
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecat import backends
from edgecat.artifacts import export_command, onnx
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.fsutil import atomic_dir
from edgecat.runtime.triton.loader import (
    artifact_precision,
    is_engine,
    model_name,
    servable_artifacts,
)

log = logging.getLogger(__name__)

#: Triton's platform names, from the backend table: ONNX files are served by Triton's ONNX Runtime, engines by TensorRT
ONNX_PLATFORM = backends.get("onnxruntime").triton_platform
TRT_PLATFORM = backends.get("tensorrt").triton_platform
LABELS_FILE = "labels.txt"
INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
DEFAULT_QUEUE_DELAY_US = 100


@dataclass
class TritonModel:
    """One model of the repository: which artifact it serves and how."""

    name: str
    artifact: str
    platform: str
    precision: str
    max_batch: int
    path: Path


def _engine_max_batch(entry: dict[str, Any]) -> int | None:
    """The largest batch a TensorRT engine's optimisation profile accepts, when recorded."""
    for field in ("batch", "profile", "batch_profile"):
        value = entry.get(field)
        if isinstance(value, (list, tuple)) and value:
            return int(value[-1])
        if isinstance(value, dict):
            for k in ("max", "max_batch"):
                if k in value:
                    return int(value[k])
    if "max_batch" in entry:
        return int(entry["max_batch"])
    return None


def label_lines(bundle: Bundle) -> list[str]:
    """Labels in output-element order (Triton's ``label_filename`` maps element i to line i).

    A binary model has one sigmoid output, the probability of the second class, so its labels file
    holds that one class name.
    """
    if bundle.binary and bundle.manifest.get("output", {}).get("shape", [1]) == [1]:
        return [bundle.classes[1]]
    return bundle.classes


def output_dims(bundle: Bundle) -> list[int]:
    shape = bundle.manifest.get("output", {}).get("shape")
    if isinstance(shape, list) and shape:
        return [int(d) for d in shape]
    return [1] if bundle.binary else [bundle.num_classes]


def config_text(bundle: Bundle, name: str, platform: str, max_batch: int, *, instance_kind: str,
                instances: int, queue_delay_us: int, comment: str = "") -> str:
    """config.pbtxt in protobuf text format (Triton's ModelConfig message)."""
    h, w = bundle.input_size
    in_name = bundle.manifest["input"].get("name", "image")
    out_name = bundle.manifest.get("output", {}).get("name", "probabilities")
    out_dims = ", ".join(str(d) for d in output_dims(bundle))
    lines = [
        f"# Written by edgecat from bundle '{bundle.name}'{comment}.",
        "# Input: raw RGB 0-255 NHWC float32, preprocessing is inside the model.",
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {int(max_batch)}",
        "input [",
        "  {",
        f'    name: "{in_name}"',
        "    data_type: TYPE_FP32",
        "    format: FORMAT_NHWC",
        f"    dims: [ {h}, {w}, 3 ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{out_name}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ {out_dims} ]",
        f'    label_filename: "{LABELS_FILE}"',
        "  }",
        "]",
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {int(queue_delay_us)}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {int(instances)}",
        f"    kind: {instance_kind}",
        "  }",
        "]",
        "version_policy: { latest: { num_versions: 1 } }",
        "",
    ]
    return "\n".join(lines)


def _write_model(bundle: Bundle, key: str, out: Path, max_batch: int, onnx_kind: str, instances: int,
                 queue_delay_us: int) -> TritonModel:
    """One model folder (``<name>/1/model.onnx|plan``, labels, config), swapped in whole."""
    entry = bundle.artifacts.get(key)
    if entry is None:
        raise EdgecatError(f"bundle {bundle.path} has no '{key}' artifact")
    src = bundle.artifact_path(key)  # verifies the sha256: never publish a tampered model
    engine = is_engine(key, entry)
    platform = TRT_PLATFORM if engine else ONNX_PLATFORM
    batch = int(max_batch)
    note = ""
    if engine:
        cap = _engine_max_batch(entry)
        if cap is not None and cap < batch:
            log.info("%s: engine profile allows batches up to %d; max_batch_size set to %d", key, cap, cap)
            batch = cap
        built = ", ".join(str(entry[k]) for k in ("gpu", "tensorrt_version") if entry.get(k))
        note = (f", TensorRT engine {src.name}{f' ({built})' if built else ''}: serve it only with "
                "the TensorRT version and GPU it was built for")
    kind = "KIND_GPU" if engine else onnx_kind
    name = model_name(bundle, key)
    dest = out / name
    with atomic_dir(dest) as tmp:
        (tmp / "1").mkdir()
        shutil.copy2(src, tmp / "1" / ("model.plan" if engine else "model.onnx"))
        (tmp / LABELS_FILE).write_text("\n".join(label_lines(bundle)) + "\n", encoding="utf-8")
        (tmp / "config.pbtxt").write_text(
            config_text(bundle, name, platform, batch, instance_kind=kind, instances=instances,
                        queue_delay_us=queue_delay_us, comment=f", artifact '{key}'{note}"),
            encoding="utf-8",
        )
    precision = artifact_precision(key, entry)
    log.info("Triton model %s (%s, %s) -> %s", name, platform, precision, dest)
    return TritonModel(name=name, artifact=key, platform=platform, precision=precision, max_batch=batch, path=dest)


def write_repository(bundle: Bundle | str | Path, out_dir: str | Path, max_batch: int = 32, *,
                     instance_kind: str = "auto", instances: int = 1,
                     queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                     artifacts: list[str] | None = None) -> Path:
    """Write one Triton model per exported artifact of ``bundle`` into ``out_dir``; returns ``out_dir``.

    ONNX models get ``instance_kind`` (``auto`` = GPU when the server has one, else CPU, so one
    repository serves on both); TensorRT plans always run on GPU. Each model folder is written
    under a temporary name and swapped in whole, so an interrupted export never leaves a model
    Triton would half-load.
    """
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    if max_batch < 1:
        raise EdgecatError(f"--max-batch must be at least 1 (got {max_batch})")
    if instance_kind not in INSTANCE_KINDS:
        raise EdgecatError(f"unknown instance kind '{instance_kind}' (choose from: {', '.join(INSTANCE_KINDS)})")
    if instances < 1:
        raise EdgecatError(f"instance count must be at least 1 (got {instances})")
    keys = artifacts if artifacts is not None else servable_artifacts(bundle)
    if not keys:
        raise EdgecatError(
            f"bundle {bundle.path} has no ONNX model or TensorRT engine to serve; "
            f"run `{export_command('BUNDLE', onnx('fp32').key)}` first"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EdgecatError(f"Triton repository path {out} exists and is not a folder")
    if out.resolve() == bundle.path.resolve():
        raise EdgecatError("write the Triton repository outside the bundle folder (e.g. --triton triton_repo)")
    out.mkdir(parents=True, exist_ok=True)
    models = [_write_model(bundle, key, out, max_batch, INSTANCE_KINDS[instance_kind], instances, queue_delay_us)
              for key in keys]
    log.info("Triton repository %s: %s", out, ", ".join(m.name for m in models))
    return out

