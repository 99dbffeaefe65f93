"""A DeepStream ``nvinfer`` config for the bundle's classifier.

DeepStream is what NVIDIA users run for many cameras on one Jetson. nvinfer does its own
preprocessing (``y = net-scale-factor * (x - offsets)``) before the network; the bundle's graphs
already contain the model's preprocessing and take raw RGB 0-255 NHWC, so the config must pass
pixels through untouched: scale 1.0, zero offsets, RGB, NHWC. Getting this wrong is the classic
silent accuracy loss, hence a config generated from the manifest rather than written by hand.

Files written into ``out_dir`` (others there are left alone, each file is written atomically)::

    config_infer_primary_<bundle>.txt   the [property] group nvinfer reads
    labels.txt                           classifier labels: one line, ';' between classes
    model.onnx                           the bundle's ONNX (nvinfer builds its engine from it)
    <engine>                             a TensorRT engine from the bundle, when one matches
"""

from __future__ import annotations

import configparser
import io
import logging
import re
import shutil
from pathlib import Path

from edgecat import artifacts
from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError
from edgecat.fsutil import atomic_path, write_text

log = logging.getLogger(__name__)

#: nvinfer network-mode values
NETWORK_MODE = {"fp32": 0, "int8": 1, "fp16": 2}
#: ONNX artifact nvinfer builds from, per precision. FP16 is built by TensorRT from the FP32 graph;
#: INT8 needs the explicit-quantization (QDQ, symmetric) graph so no calibration table is needed.
ONNX_FOR = {"fp32": artifacts.onnx("fp32").key, "fp16": artifacts.onnx("fp32").key,
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


def _engine_for(bundle: Bundle, precision: str) -> str | None:
    """The bundle's TensorRT engine at ``precision``, copied next to the ONNX so nvinfer need not build one."""
    kind = artifacts.find("engine", precision)
    return kind.key if kind.key in bundle.artifacts else None


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
                  onnx_file: str = artifacts.onnx("fp32").file, engine_file: str | None = None) -> dict[str, str]:
    """The [property] keys, in the order nvinfer's documentation lists them."""
    check_input(bundle)
    h, w = bundle.input_size
    values = {
        "gpu-id": str(gpu_id),
        # The graph takes raw 0-255 RGB and normalises inside: nvinfer must not rescale.
        "net-scale-factor": "1.0",
        "offsets": "0;0;0",
        "model-color-format": str(COLOR_RGB),
        "onnx-file": onnx_file,
    }
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
            f"run `{artifacts.export_command('BUNDLE', key)}` first"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EdgecatError(f"DeepStream output path {out} exists and is not a folder")
    if out.resolve() == bundle.path.resolve():
        raise EdgecatError("write the DeepStream config outside the bundle folder (e.g. --deepstream deepstream)")
    out.mkdir(parents=True, exist_ok=True)

    src = bundle.artifact_path(key)
    onnx_dest = out / src.name
    with atomic_path(onnx_dest) as tmp:
        shutil.copyfile(src, tmp)
    engine_dest = None
    engine_key = _engine_for(bundle, precision)
    if engine_key:
        engine_src = bundle.artifact_path(engine_key)
        engine_dest = out / engine_src.name
        with atomic_path(engine_dest) as tmp:
            shutil.copyfile(engine_src, tmp)
    labels = out / LABELS_FILE
    write_text(labels, labels_line(bundle) + "\n")

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep nvinfer's key spelling
    parser["property"] = config_values(bundle, precision, batch_size, gpu_id, onnx_dest.name,
                                       engine_dest.name if engine_dest else None)
    buf = io.StringIO()
    parser.write(buf, space_around_delimiters=False)
    header = (
        f"# DeepStream nvinfer config written by edgecat for bundle '{bundle.name}' ({bundle.backbone}, "
        f"{precision}).\n"
        "# The model takes raw RGB 0-255 NHWC and normalises inside, so nvinfer passes pixels through.\n"
        "# Without model-engine-file (or when it was built for another GPU/TensorRT), nvinfer builds an\n"
        "# engine from onnx-file on first start. Paths are relative to this file.\n"
    )
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle.name).strip("._") or "edgecat"
    config = out / f"config_infer_primary_{slug}.txt"
    write_text(config, header + buf.getvalue())
    log.info("DeepStream nvinfer config %s (%s, %s, input 3x%dx%d NHWC)", config, precision, onnx_dest.name,
             *bundle.input_size)
    return config
