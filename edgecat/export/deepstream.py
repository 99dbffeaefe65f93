"""A DeepStream ``nvinfer`` config for the bundle's classifier.

DeepStream is what NVIDIA users run for many cameras on one Jetson. nvinfer does its own
preprocessing (``y = net-scale-factor * (x - offsets)``) before the network; the bundle's graphs
already contain the model's preprocessing and take raw RGB 0-255 NHWC, so the config must pass
pixels through untouched: scale 1.0, zero offsets, RGB, NHWC. Getting this wrong is the classic
silent accuracy loss, hence a config generated from the manifest rather than written by hand.

Precision comes from the graph, as for edgecat's own engines: FP32 names ``model.onnx``, FP16
``model.fp16.onnx`` (TensorRT 11 has no FP16 builder flag, so ``network-mode=2`` alone cannot make an
FP16 engine from the FP32 graph). INT8 cannot be left to nvinfer: with ``network-mode=1`` and no
calibration file it logs "INT8 calibration file not specified. Trying FP16 mode." and builds the Q/DQ
graph weakly typed without INT8. So an INT8 config ships the INT8 engine edgecat built (strongly
typed, from ``model.int8-trt.onnx``) for the GPU and TensorRT that run DeepStream, names no ONNX
file (nvinfer then fails loudly rather than build something else when the engine does not fit), and
is refused with the command that builds that engine when the bundle has none.

Files written into ``out_dir`` (others there are left alone, each file is written atomically)::

    config_infer_primary_<bundle>.txt   the [property] group nvinfer reads
    labels.txt                           classifier labels: one line, ';' between classes
    model.onnx / model.fp16.onnx         the bundle's ONNX of that precision (nvinfer builds from it)
    <engine>                             the bundle's TensorRT engine of that precision, when it fits
"""

from __future__ import annotations

import configparser
import io
import logging
import re
import shutil
from pathlib import Path

from typing import Any

from edgecat import artifacts
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.fsutil import atomic_path, write_text
from edgecat.runtime.tensorrt.loader import EngineTarget, engine_problem

log = logging.getLogger(__name__)

#: nvinfer network-mode values
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
#: ONNX artifact each precision's engine is built from: the graph carries the precision (FP16 casts,
#: symmetric Q/DQ), as for edgecat's strongly typed engines. nvinfer builds FP32/FP16 from it; INT8 is
#: never left to nvinfer (see the module docstring): the shipped engine was built from this file.
ONNX_FOR = {"fp32": artifacts.onnx("fp32").key, "fp16": artifacts.onnx("fp16").key,
            "int8": artifacts.onnx("int8", "trt").key}
LABELS_FILE = "labels.txt"
NETWORK_TYPE_CLASSIFIER = 1
INPUT_ORDER_NHWC = 1
COLOR_RGB = 0


def labels_line(bundle: Bundle) -> str:
    """nvinfer classifier labels: one line per output layer, classes separated by ';'.

    A binary bundle has one sigmoid output (probability of the second class). nvinfer's default
    classifier parser reports label i of the output when its value exceeds classifier-threshold, so
    the line holds only that class: frames above the bundle's threshold get it, others no label.
    """
    if bundle.binary and bundle.manifest.get("output", {}).get("shape", [1]) == [1]:
        return bundle.classes[1]
    return ";".join(bundle.classes)


def config_precision(precisions: list[str] | None) -> str:
    """The one precision a DeepStream config is written for, from ``--precision`` (fp32 by default)."""
    if not precisions:
        return "fp32"
    if len(precisions) != 1 or precisions[0] not in NETWORK_MODE:
        raise EdgecatError(f"--deepstream writes one nvinfer config: give one --precision of "
                           f"{', '.join(NETWORK_MODE)} (got {','.join(precisions)}), or run export once per precision")
    return precisions[0]


def preflight(bundle: Bundle, precisions: list[str] | None, builds_engines: bool) -> str:
    """Before any export work: the config's precision, and for INT8 without an engine in the bundle
    (and none being built in this run) the refusal :func:`write_config` would give at the end."""
    precision = config_precision(precisions)
    if precision == "int8" and not builds_engines and not bundle.has(artifacts.find("engine", "int8").key):
        _engine_for(bundle, precision, 1)
    return precision


def _here_target() -> EngineTarget | None:
    """The GPU and TensorRT of this machine when both are here (the config is usually written on the
    device that runs DeepStream), else None."""
    from edgecat.runtime.tensorrt.loader import current_target

    try:
        return current_target()
    except (EdgecatError, ImportError, OSError, AttributeError):
        return None


def _engine_for(bundle: Bundle, precision: str, batch_size: int) -> str | None:
    """Manifest key of the bundle's TensorRT engine at ``precision`` to copy next to the config, or None when
    nvinfer should build its own (FP32/FP16 only). An engine that does not fit (another GPU or
    TensorRT here, an older ONNX, a profile below ``batch_size``) is never shipped; for INT8, which
    nvinfer cannot rebuild, that is an error carrying the command that builds the right one."""
    kind = artifacts.find("engine", precision)
    build = f"{artifacts.export_command(bundle.path, kind.key)}"
    entry = bundle.artifacts.get(kind.key)
    if entry is None:
        if precision == "int8":
            raise EdgecatError(
                f"a DeepStream INT8 config needs the TensorRT INT8 engine edgecat builds: nvinfer cannot build "
                f"INT8 from {artifacts.file_of(ONNX_FOR['int8'])} (without a calibration file it falls back to "
                f"FP16); on the device that runs DeepStream run `{build}`, then this command again")
        return None
    problem = None
    src = bundle.artifacts.get(str(entry.get("source", ONNX_FOR[precision])))
    if src and entry.get("source_sha256") and src.get("sha256") != entry["source_sha256"]:
        problem = f"{entry.get('source')} changed since it was built"
    max_batch = (entry.get("batch") or {}).get("max")
    if problem is None and max_batch is not None and int(max_batch) < batch_size:
        problem = f"its batch profile stops at {max_batch}, below batch-size {batch_size}"
        build += f" --batch 1,{batch_size},{batch_size}"
    target = _here_target() if problem is None else None
    if target is not None:
        problem = engine_problem(entry, target)
    if problem is None:
        return kind.key
    if precision == "int8":
        raise EdgecatError(f"TensorRT engine {entry.get('file')} cannot serve this DeepStream INT8 config: "
                           f"{problem}; rebuild it on the device that runs DeepStream: `{build}`")
    log.warning("not copying TensorRT engine %s (%s): nvinfer will build one from the ONNX", entry.get("file"),
                problem)
    return None


def check_input(bundle: Bundle) -> None:
    """The config passes raw pixels through, which is right only for the bundle's input contract."""
    spec = bundle.manifest["input"]
    lo, hi = spec.get("range", [0.0, 255.0])
    if float(lo) != 0.0 or float(hi) != 255.0 or not spec.get("preprocessing_in_model", True):
        raise EdgecatError(
            f"bundle {bundle.path} expects input range {lo}-{hi} without in-model preprocessing; "
            "edgecat's DeepStream config assumes raw 0-255 RGB with preprocessing inside the model"
        )
    if spec.get("layout", "NHWC") != "NHWC" or spec.get("color", "RGB") != "RGB":
        raise EdgecatError(f"bundle {bundle.path} input is not NHWC RGB; cannot describe it to nvinfer")


def config_values(bundle: Bundle, precision: str = "fp32", batch_size: int = 1, gpu_id: int = 0,
                  onnx_file: str | None = artifacts.onnx("fp32").file,
                  engine_file: str | None = None) -> dict[str, str]:
    """The [property] keys, in the order nvinfer's documentation lists them (``onnx_file`` None: the
    config names only the engine, as an INT8 one must)."""
    check_input(bundle)
    h, w = bundle.input_size
    values = {
        "gpu-id": str(gpu_id),
        # The graph takes raw 0-255 RGB and normalises inside: nvinfer must not rescale.
        "net-scale-factor": "1.0",
        "offsets": "0;0;0",
        "model-color-format": str(COLOR_RGB),
    }
    if onnx_file:
        values["onnx-file"] = onnx_file
    if engine_file:
        values["model-engine-file"] = engine_file
    values.update({
        "labelfile-path": LABELS_FILE,
        "batch-size": str(batch_size),
        "network-mode": str(NETWORK_MODE[precision]),
        "network-type": str(NETWORK_TYPE_CLASSIFIER),
        "process-mode": "1",
        "gie-unique-id": "1",
        # infer-dims is always channel;height;width; network-input-order=1 tells nvinfer the
        # binding is NHWC so it sets the engine dims to height;width;channel.
        "network-input-order": str(INPUT_ORDER_NHWC),
        "infer-dims": f"3;{h};{w}",
        "output-blob-names": bundle.manifest.get("output", {}).get("name", "probabilities"),
        "classifier-threshold": f"{bundle.threshold:g}" if bundle.binary else "0.0",
        "classifier-async-mode": "0",
        # edgecat resizes by stretching (bilinear), as in training.
        "maintain-aspect-ratio": "0",
        "scaling-filter": "1",
    })
    return values


def write_config(bundle: Bundle | str | Path, out_dir: str | Path, precision: str = "fp32",
                 batch_size: int = 1, gpu_id: int = 0) -> Path:
    """Write an nvinfer config, labels and model into ``out_dir``; returns the config's path."""
    if not isinstance(bundle, Bundle):
        bundle = Bundle.open(bundle)
    if precision not in artifacts.PRECISIONS:
        raise EdgecatError(f"unknown precision '{precision}' (choose from: {', '.join(NETWORK_MODE)})")
    if batch_size < 1:
        raise EdgecatError(f"batch size must be at least 1 (got {batch_size})")
    check_input(bundle)
    key = ONNX_FOR[precision]
    if not bundle.has(key):
        raise EdgecatError(
            f"bundle {bundle.path} has no '{key}' for a DeepStream {precision} config; "
            f"run `{artifacts.export_command(bundle.path, key)}` first"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EdgecatError(f"DeepStream output path {out} exists and is not a folder")
    if out.resolve() == bundle.path.resolve():
        raise EdgecatError("write the DeepStream config outside the bundle folder (e.g. --deepstream deepstream)")
    engine_key = _engine_for(bundle, precision, batch_size)  # INT8 without a fitting engine: refused here
    out.mkdir(parents=True, exist_ok=True)

    onnx_dest = None
    if precision != "int8":  # nvinfer must not rebuild INT8 from the Q/DQ graph: no ONNX named
        src = bundle.artifact_path(key)
        onnx_dest = out / src.name
        with atomic_path(onnx_dest) as tmp:
            shutil.copyfile(src, tmp)
    engine_dest = None
    engine: dict[str, Any] = bundle.artifacts[engine_key] if engine_key else {}
    if engine_key:
        engine_src = bundle.artifact_path(engine_key)
        engine_dest = out / engine_src.name
        with atomic_path(engine_dest) as tmp:
            shutil.copyfile(engine_src, tmp)
    labels = out / LABELS_FILE
    write_text(labels, labels_line(bundle) + "\n")

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep nvinfer's key spelling
    parser["property"] = config_values(bundle, precision, batch_size, gpu_id,
                                       onnx_dest.name if onnx_dest else None,
                                       engine_dest.name if engine_dest else None)
    buf = io.StringIO()
    parser.write(buf, space_around_delimiters=False)
    header = (
        f"# DeepStream nvinfer config written by edgecat for bundle '{bundle.name}' ({bundle.backbone}, "
        f"{precision}).\n"
        "# The model takes raw RGB 0-255 NHWC and normalises inside, so nvinfer passes pixels through.\n"
    )
    if precision == "int8":
        sm = str(engine.get("compute_capability")).replace(".", "")
        header += (
            f"# INT8 runs the engine edgecat built for {engine.get('gpu')} (sm{sm}) with TensorRT "
            f"{engine.get('tensorrt_version')}: nvinfer cannot rebuild it\n"
            "# (no calibration file: it would fall back to FP16), so no onnx-file is named. On another GPU or\n"
            f"# TensorRT: {artifacts.export_command(bundle.path, artifacts.find('engine', 'int8').key)}, then "
            "export --deepstream again. Paths are relative to this file.\n"
        )
    else:
        header += (
            "# Without model-engine-file (or when it was built for another GPU/TensorRT), nvinfer builds an\n"
            "# engine from onnx-file on first start. Paths are relative to this file.\n"
        )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle.name).strip("._") or "edgecat"
    config = out / f"config_infer_primary_{slug}.txt"
    write_text(config, header + buf.getvalue())
    log.info("DeepStream nvinfer config %s (%s, %s, input 3x%dx%d NHWC)", config, precision,
             (onnx_dest or engine_dest or out).name, *bundle.input_size)
    return config
