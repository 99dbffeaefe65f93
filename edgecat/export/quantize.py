"""INT8 ONNX by explicit quantization (QDQ) from real calibration images; no TensorFlow needed.

Two flavours come from the same FP32 graph, because the fast path differs by target:

- ``cpu`` (artifact ``onnx-int8``, ``model.int8.onnx``): uint8 activations, int8 per-channel weights.
  On x86 this is ONNX Runtime's fast path (int8 activations ran slower than FP32 here).
- ``trt`` (artifact ``onnx-int8-trt``, ``model.int8-trt.onnx``): Q/DQ placed by TensorRT's
  explicit-quantization rules as NVIDIA Model Optimizer places them (symmetric int8, zero points 0,
  no int32 biases, per-channel Conv weights, Q/DQ only on the inputs of Conv/MatMul/Gemm and on the
  residual input of each Add, preprocessing and GEMV heads unquantized, in FP16 like every other
  unquantized layer: Model Optimizer's ``high_precision_dtype="fp16"``), the only form TensorRT builds
  from (TensorRT 11 has no calibrators at all). Model Optimizer itself is not used: nvidia-modelopt
  0.47's ``[onnx]`` extra pins onnx~=1.21 and onnxruntime-gpu~=1.24 and pulls torch and CUDA 13
  wheels, against this project's onnx 1.23 / onnxruntime 1.32. The file is checked against
  :mod:`edgecat.export.trt_rules` before it is recorded.

The calibration reader feeds raw 0-255 RGB batches exactly as deployment does: the model's own
preprocessing is inside the graph. Tensor ranges are cached in ``calibration/`` keyed by model hash,
image list, method and flavour, so re-exporting with the same inputs skips calibration.

Calibration runs in bounded memory whatever the method and image count: the images are fed in chunks
of CALIB_CHUNK_IMAGES, ONNX Runtime reduces each chunk (min/max, or histograms for entropy/percentile)
before the next is run, so only one chunk's activations are ever held (ORT keeps every intermediate
output of everything it is fed in one ``collect_data`` call: 24 GB at 224 px with 500 images).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import itertools
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError, MissingDependencyError, first_line
from edgecat.export.bias_correction import BIAS_CORRECTION_IMAGES
from edgecat.export.trt_qdq import high_precision_fp16, trt_excluded_nodes, trt_post_pass
from edgecat.fsutil import atomic_path, write_json
from edgecat.machine import has_vnni
from edgecat.runtime.onnxruntime.loader import onnx_outputs
from edgecat.validate import validate

log = logging.getLogger(__name__)

DEFAULT_CALIB_SIZE = 500  # NVIDIA's guidance for ImageNet-style classifiers
MIN_CALIB_IMAGES = 16
CALIB_BATCH = 8
#: images whose activations are held at once during calibration (MobileNetV2 at 224 px: ~0.1 GB each
#: over the calibrated tensors); ORT reduces each chunk before the next (see _reader)
CALIB_CHUNK_IMAGES = 16
#: op types the TensorRT flavour quantizes the inputs of (Model Optimizer's defaults for CNNs, less
#: pooling: TensorRT propagates Q/DQ across max-pooling itself)
TRT_OP_TYPES = ("Conv", "MatMul", "Gemm", "Add")
CALIB_DIR = "calibration"
METHODS = ("minmax", "entropy", "percentile")
AUTO = "auto"
#: what ``auto`` tries, in order, until a file is good enough on held-out images: minmax (fast, and
#: right where activations are bounded, as by MobileNetV2's ReLU6), then the histogram methods, whose
#: clipped ranges keep a network with heavy-tailed activations (swish: EfficientNet) from losing every
#: small value to a few images' extremes; of the files tried, the one closest to FP32 is kept
AUTO_METHODS = ("minmax", "percentile", "entropy")
#: held-out images (the calibration source's, never the calibration images) auto judges a file on
CHECK_IMAGES = 64
#: a file is kept without trying the next method when it keeps every confident FP32 answer and at
#: least this share of all labels on the held-out images
AUTO_MIN_AGREEMENT = 0.9
#: the registry's INT8 ONNX artifacts by flavour (cpu: ORT's x86 path, trt: TensorRT's Q/DQ rules)
KINDS = {k.flavour: k for k in artifacts.ARTIFACTS.values() if k.format == "onnx" and k.precision == "int8"}
FLAVOURS = tuple(KINDS)
#: flavours built for another engine, so judged as Q/DQ arithmetic (see cpu_session), not
#: through this CPU's int8 kernels
SIMULATED_FLAVOURS = frozenset(f for f, k in KINDS.items() if k.simulated)


@dataclass
class CalibrationSet:
    """The images a calibration runs on and where they came from (logged and recorded)."""

    files: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)
    #: the rest of the folder in a fixed random order: readable replacements for unreadable files
    reserve: list[str] = field(default_factory=list)
    #: the files calibration actually read (set by load_calibration_images)
    used: list[str] = field(default_factory=list)
    #: the bundle the images calibrate: where load_calibration_images records which images they were
    bundle_path: Path | None = None
    #: the draw's seed where the folder held more images than were asked for (None: all were taken)
    seed: int | None = None

    def fingerprint(self) -> str:
        """Hash of the image list (path, size, mtime): a changed image set recalibrates."""
        h = hashlib.sha256()
        for f in self.files:
            p = Path(f)
            try:
                st = p.stat()
                h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(f"{p}|missing\n".encode())
        return h.hexdigest()


def images_list_name(fingerprint: str) -> str:
    """The file (inside the bundle) listing the images a calibration with this fingerprint read."""
    return f"{CALIB_DIR}/images-{fingerprint[:16]}.json"


def record_calibration_images(cset: CalibrationSet) -> str | None:
    """List the images ``cset`` calibrated on in the bundle's ``calibration/`` folder, so the
    precision table can leave them out (INT8 scored on its own calibration images looks better than
    it is). Returns the file's name inside the bundle, None where it cannot be written."""
    if cset.bundle_path is None:
        return None
    name = images_list_name(cset.fingerprint())
    files = cset.used or cset.files
    try:
        write_json(cset.bundle_path / name, {"source": cset.source,
                                             "files": sorted(os.path.abspath(f) for f in files)})
    except OSError as exc:
        log.debug("cannot record the calibration images in %s: %s", cset.bundle_path, exc)
        return None
    return name


def calibration_images(bundle: Bundle) -> tuple[set[str], dict[str, str], list[str]]:
    """The images the bundle's INT8 files were calibrated on: (absolute paths, artifact key ->
    calibration source, keys whose list is unknown: made by an older edgecat, or deleted)."""
    files: set[str] = set()
    sources: dict[str, str] = {}
    unknown: list[str] = []
    for key, entry in bundle.artifacts.items():
        if entry.get("precision") != "int8" or not bundle.has(key):
            continue
        cal = entry.get("calibration") or (entry.get("made_by") or {}).get("calibration") or {}
        if not isinstance(cal, dict):
            continue
        name = cal.get("images_list") or (images_list_name(cal["fingerprint"]) if cal.get("fingerprint") else None)
        sources[key] = str(cal.get("source", "unknown"))
        listed = _read_list(bundle, name) if isinstance(name, str) else None
        if listed is None:
            unknown.append(key)
        else:
            files.update(listed)
    return files, sources, unknown


def _read_list(bundle: Bundle, name: str) -> list[str] | None:
    from edgecat.bundle import _outside
    from edgecat.bundle_schema import check_file_name

    try:
        path = bundle.path / check_file_name(name)
        if _outside(path, bundle.path):
            return None
        return [os.path.abspath(str(f)) for f in json.loads(path.read_text(encoding="utf-8"))["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class QuantizeResult:
    flavour: str
    artifact: str
    file: str
    method: str
    images: int
    cache_used: bool
    cache_file: str
    seconds: float
    parity: dict[str, Any]


# ------------------------------------------------------------------------------ calibration set
def calibration_set(bundle: Bundle, calib: str | Path | None = None, size: int = DEFAULT_CALIB_SIZE,
                    min_images: int = MIN_CALIB_IMAGES, seed: int = 0) -> CalibrationSet:
    """Pick up to ``size`` images from ``calib`` (a folder, searched recursively) or, without one,
    from the bundle's training split (never its validation split: the precision table scores INT8
    on those); a deterministic sample so the cache key is stable."""
    from edgecat import imaging
    from edgecat.splits import missing_hint, split_files

    if size < 1:
        raise EdgecatError(f"--calib-size must be at least 1 (got {size})")
    if calib is not None:
        root = Path(calib)
        if not root.exists():
            raise EdgecatError(f"calibration folder not found: {root}")
        if not root.is_dir():
            raise EdgecatError(f"--calib must be a folder of images (got a file: {root})")
        files = [str(p) for p in imaging.list_images([root])]
        source = str(root)
        if not files:
            raise EdgecatError(f"no images found in calibration folder {root}")
    else:
        files = [f for f, _ in split_files(bundle, "train")]
        source = "the bundle's training split (splits.json)"
        if not files:
            raise EdgecatError(f"INT8 needs calibration images: {missing_hint(bundle, 'train', '--calib')}")
    reserve: list[str] = []
    if len(files) > size:
        order = np.random.default_rng(seed).permutation(len(files)).tolist()
        reserve = [files[i] for i in order[size:]]
        files = [files[i] for i in sorted(order[:size])]
    if len(files) < min_images:
        raise EdgecatError(
            f"too few calibration images: {len(files)} in {source} (need at least {min_images}, "
            f"{DEFAULT_CALIB_SIZE} recommended)"
        )
    if len(files) < min(size, DEFAULT_CALIB_SIZE):
        bundle.warn_once(f"INT8 calibration on only {len(files)} images ({DEFAULT_CALIB_SIZE} recommended) from "
                         f"{source}: pass --calib DIR with more training photos")
    return CalibrationSet(files=files, source=source, reserve=reserve, bundle_path=bundle.path,
                          seed=seed if reserve else None)


def load_calibration_images(cset: CalibrationSet, input_size: tuple[int, int],
                            min_images: int = MIN_CALIB_IMAGES) -> np.ndarray:
    """Decode + resize with the deployment image path. An unreadable file is skipped, logged and
    replaced by the next readable one from the rest of the folder (``cset.reserve``, a fixed order,
    so the same folder always gives the same set: ``files``, and so the cache key, stay as drawn);
    ``cset.used`` and ``cset.skipped`` say what was read and what was unreadable."""
    from edgecat import imaging

    wanted = len(cset.files)
    loaded = imaging.load_batch(itertools.chain(cset.files, cset.reserve), input_size, limit=wanted)
    cset.skipped = loaded.skipped
    for why in loaded.errors.values():
        log.warning("calibration: skipping %s", why)
    images = loaded.images
    if cset.skipped and len(images) == wanted:
        log.info("calibration: %d unreadable file(s) replaced from the rest of %s", len(cset.skipped), cset.source)
    cset.used = loaded.files
    if len(images) < min_images:
        raise EdgecatError(
            f"too few readable calibration images: {len(images)} of {wanted} in {cset.source} "
            f"(need at least {min_images}; {len(cset.skipped)} unreadable)"
        )
    record_calibration_images(cset)
    return images


def _reader(images: np.ndarray, input_name: str, batch: int = CALIB_BATCH) -> tuple[Any, int]:
    """An onnxruntime CalibrationDataReader over uint8 images, fed as raw 0-255 float32 batches, and
    the number of batches per chunk to pass as ``CalibStridedMinMax``.

    quantize_static runs ``collect_data`` once per chunk of that many batches (``set_range``) for every
    calibration method, not only MinMax as the option's name suggests (onnxruntime
    quantization/quantize.py); each call reduces its outputs into ranges or histograms and drops them.
    ``CalibMaxIntermediateOutputs`` is no substitute: only MinMax reads it, and its MinMax calibrator
    clears the held outputs without reducing them, so the ranges come from the last outputs only.
    Every batch has the same size (the largest divisor of the image count up to ``batch``): the
    histogram calibrators stack one chunk's batches and fail on a short last batch.
    """
    from onnxruntime.quantization import CalibrationDataReader

    batch = next(b for b in range(min(batch, len(images)), 0, -1) if len(images) % b == 0)
    batches = len(images) // batch
    per_chunk = max(1, CALIB_CHUNK_IMAGES // batch)
    stride = next(k for k in range(min(per_chunk, batches), 0, -1) if batches % k == 0)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.set_range(0, batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._starts = iter(range(start_index * batch, min(end_index, batches) * batch, batch))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            if start is None:
                return None
            return {input_name: images[start:start + batch].astype(np.float32)}

        def __len__(self) -> int:
            return batches

    return _Reader(), stride


# ------------------------------------------------------------------------------ quantization
def flavour_options(flavour: str, method: str) -> dict[str, Any]:
    """quantize_static keyword arguments for a flavour (types, symmetry, extra options)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise EdgecatError(f"unknown calibration method '{method}' (choose from: {', '.join(METHODS)})")
    if flavour == "cpu":
        x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
        return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=x86 and not has_vnni(),
                    calibrate_method=methods[method],
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    if flavour == "trt":
        # NVIDIA Model Optimizer's TensorRT options (modelopt.onnx.quantization.ort_utils.configure_ort):
        # no int32 bias (TensorRT's parser refuses DequantizeLinear on int32), symmetric int8, per-channel
        # Conv weights along axis 0, one shared Q/DQ pair per tensor, and no output quantization of any op
        # (filled in with the graph's op types by quantize_int8). Q/DQ then sits only on the inputs of
        # TRT_OP_TYPES; trt_post_pass keeps only the residual input of each Add.
        return dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=False,
                    calibrate_method=methods[method], op_types_to_quantize=list(TRT_OP_TYPES),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "AddQDQPairToWeight": True, "DedicatedQDQPair": False,
                                   "ForceQuantizeNoInputCheck": True,
                                   "QDQOpTypePerChannelSupportToAxis": {"Conv": 0},
                                   "CalibTensorRangeSymmetric": True})
    raise EdgecatError(f"unknown INT8 flavour '{flavour}' (choose from: {', '.join(FLAVOURS)})")


#: bump when the graph that is calibrated changes shape (tensor names), so old caches are not reused
CACHE_VERSION = 3  # 3: chunked calibration; the TensorRT flavour calibrates only its Q/DQ inputs


def cache_key(model_sha256: str, cset: CalibrationSet, method: str, flavour: str) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}|{model_sha256}|{cset.fingerprint()}|{method}|{flavour}".encode())
    return h.hexdigest()[:20]


def _preprocessed(src: Path, workdir: Path, name: str = "INT8") -> tuple[Path, bool]:
    """ORT's recommended pre-processing (shape inference + graph optimisation, which folds the
    exported BatchNorm Mul/Add into the convolutions so they are not quantized as separate ops);
    the graph as exported if it fails. Returns (model path, pre-processed?)."""
    import importlib.util

    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = workdir / "pre.onnx"
    try:
        # symbolic shape inference needs sympy; ONNX shape inference suffices for these graphs
        quant_pre_process(str(src), str(out), skip_symbolic_shape=importlib.util.find_spec("sympy") is None)
        return out, True
    except Exception as exc:  # noqa: BLE001 - optional step; quantization still works without it
        log.warning("%s: quantization pre-processing failed (%s); quantizing the graph as exported", name, exc)
        return src, False


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """onnxruntime logs a pre-processing hint on the root logger even when we did pre-process."""
    root = logging.getLogger()
    filt = _DropHint()
    targets = [root, *root.handlers]
    for t in targets:
        t.addFilter(filt)
    try:
        yield
    finally:
        for t in targets:
            t.removeFilter(filt)


def _run_quantizer(src: Path, dest: Path, flavour: str, opts: dict[str, Any], reader: Any, stride: int,
                   cache_path: Path | None, work: Path, bc_images: np.ndarray | None = None,
                   keep_float: list[str] | None = None) -> dict[str, Any]:
    """quantize_static from ``src`` into ``dest`` (the TensorRT flavour then placed by TensorRT's rules
    and checked against them), the nodes named in ``keep_float`` left in float, then bias correction
    on ``bc_images`` (:mod:`edgecat.export.bias_correction`). Returns what the manifest records."""
    from onnxruntime.quantization import quantize_static

    from edgecat.export.bias_correction import correct_onnx

    model_in, preprocessed = _preprocessed(src, work, KINDS[flavour].file)
    kwargs = {**opts, "extra_options": dict(opts["extra_options"])}
    kwargs["nodes_to_exclude"] = _known_nodes(model_in, keep_float or [])
    if reader is not None:
        kwargs["extra_options"]["CalibStridedMinMax"] = stride
    if flavour == "trt":
        import onnx

        kwargs["nodes_to_exclude"] = trt_excluded_nodes(model_in) + kwargs["nodes_to_exclude"]
        ops = {n.op_type for n in onnx.load(str(model_in), load_external_data=False).graph.node}
        kwargs["extra_options"]["OpTypesToExcludeOutputQuantization"] = sorted(ops)
    if cache_path is not None:
        kwargs["calibration_cache_path"] = str(cache_path)
    # the histogram calibrators (percentile, entropy) print() progress lines: stdout is for results
    said = io.StringIO()
    with _quiet_preprocess_hint(), contextlib.redirect_stdout(said):
        try:
            quantize_static(str(model_in), str(dest), reader, **kwargs)
        except EdgecatError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises plain exceptions
            raise EdgecatError(
                f"INT8 quantization ({flavour}) failed: {type(exc).__name__}: {first_line(exc)[:200]}"
            ) from exc
    if said.getvalue().strip():
        log.debug("%s: onnxruntime's calibrator: %s", KINDS[flavour].file,
                  "; ".join(dict.fromkeys(line.strip() for line in said.getvalue().splitlines() if line.strip())))
    info: dict[str, Any] = {"preprocessed": preprocessed,
                            "unquantized_nodes": list(kwargs.get("nodes_to_exclude") or [])}
    if flavour == "trt":
        info["node_counts"] = trt_post_pass(dest)
    info["bias_correction"] = (correct_onnx(dest, model_in, bc_images, name=KINDS[flavour].file)
                               if bc_images is not None else None)
    if flavour == "trt":
        from edgecat.export.trt_rules import require_tensorrt_onnx

        info.update(high_precision_fp16(dest))
        require_tensorrt_onnx(dest, what=f"the TensorRT INT8 model ({KINDS[flavour].file})")
        info["tensorrt_rules"] = "checked (edgecat.export.trt_rules)"
    return info


def _known_nodes(model_path: Path, names: list[str]) -> list[str]:
    """``names`` checked against the graph ORT quantizes: a misspelt node is one clear line, not a
    file quietly quantized in full."""
    import onnx

    have = {n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node}
    missing = [n for n in names if n not in have]
    if missing:
        raise EdgecatError(f"no node named {', '.join(missing[:3])} in the graph to keep in float "
                           f"(names as in the pre-processed FP32 graph, e.g. {sorted(have)[0]})")
    return list(names)


def quantize_int8(bundle: Bundle, flavour: str = "cpu", calib: str | Path | None = None,
                  calib_size: int = DEFAULT_CALIB_SIZE, method: str = AUTO,
                  min_images: int = MIN_CALIB_IMAGES, cset: CalibrationSet | None = None,
                  parity_dirs: list[str] | None = None, bias_correction: bool = True,
                  keep_float: list[str] | None = None, seed: int = 0,
                  held_out: HeldOut | None = None) -> QuantizeResult:
    """Quantize ``onnx-fp32`` into the ``flavour``'s INT8 artifact, reusing cached ranges when the
    key (model hash, image list, method, flavour) matches. ``method="auto"`` tries AUTO_METHODS in
    turn and keeps the file closest to FP32 on held-out images (:func:`_judge`). ``bias_correction``
    (the default) removes the output shift weight rounding causes (it keeps the labels of a
    less-converged model: README "Accuracy"); ``keep_float`` names nodes left unquantized (mixed
    precision); ``seed`` picks the calibration images drawn when ``cset`` is not given; ``held_out``
    is auto's check set when another flavour already read it (:func:`quantize_all`)."""
    try:
        from onnxruntime.quantization import quantize_static
    except ImportError as exc:
        raise MissingDependencyError("INT8 export needs onnxruntime: pip install onnxruntime") from exc

    methods = AUTO_METHODS if method == AUTO else (method,)
    options = {m: flavour_options(flavour, m) for m in methods}  # an unknown method or flavour fails here
    kind = KINDS[flavour]
    src_key = str(kind.made_from)
    src = bundle.artifact_path(src_key)
    cset = cset or calibration_set(bundle, calib, calib_size, min_images, seed=seed)
    (bundle.path / CALIB_DIR).mkdir(exist_ok=True)
    supports_cache = "calibration_cache_path" in inspect.signature(quantize_static).parameters
    dest = bundle.path / kind.file

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecat-quant-") as work_dir:
        work = Path(work_dir)
        images = None
        check = None
        if len(methods) > 1:
            if held_out is None or held_out.src_sha256 != bundle.artifacts[src_key]["sha256"]:
                held_out = _held_out(bundle, cset, src_key, kind.file)
            check = held_out if held_out.images is not None else None
        tried: dict[str, dict[str, Any]] = {}
        attempts: list[_Attempt] = []
        for m in methods:
            attempt = _attempt(bundle, flavour, m, options[m], cset, src, work / m, images, min_images,
                               supports_cache, bias_correction, keep_float)
            attempts.append(attempt)
            images = attempt.images
            if check is None:
                break
            attempt.score = tried[m] = _judge(check, attempt.file, flavour)
            log.info("%s (%s): %s", kind.file, m, _describe(attempt.score))
            if _good_enough(attempt.score):
                break
        images_list = images_list_name(cset.fingerprint())  # recorded when the images were read
        if not (bundle.path / images_list).is_file():  # cached ranges from an older edgecat
            images_list = record_calibration_images(cset)
        best = min(attempts, key=lambda a: a.score["mean_abs_diff"] if a.score else 0.0)
        if len(tried) > 1:
            log.info("%s: keeping %s ranges (closer to FP32 on %d held-out images)", kind.file, best.method,
                     best.score["images"] if best.score else 0)
        with atomic_path(dest) as tmp:
            tmp.write_bytes(best.file.read_bytes())
            parity = _parity(bundle, src, tmp, flavour, parity_dirs, exclude=set(cset.used or cset.files))
        for a in attempts:  # every method's ranges: exporting again skips each calibration
            if supports_cache and not a.cache_used and a.ranges is not None and a.ranges.exists():
                with atomic_path(a.cache_file) as tmpc:
                    tmpc.write_bytes(a.ranges.read_bytes())
    seconds = time.perf_counter() - t0
    calibration = {"method": best.method, "requested": method, "tried": tried or None,
                   "images": len(cset.used) if cset.used else len(cset.files),
                   "source": cset.source, "seed": cset.seed, "replaced_unreadable": len(cset.skipped), "key": best.key,
                   "images_list": images_list,
                   "cache": f"{CALIB_DIR}/{best.cache_file.name}" if supports_cache else None,
                   "cache_used": best.cache_used}
    _record(bundle, kind, best.opts, best.info, calibration, parity, seconds)
    return QuantizeResult(flavour=flavour, artifact=kind.key, file=dest.name, method=best.method,
                          images=calibration["images"], cache_used=best.cache_used, cache_file=best.cache_file.name,
                          seconds=seconds, parity=parity)


@dataclass
class _Attempt:
    """One quantization of the FP32 file with one calibration method, in a scratch folder."""

    method: str
    file: Path
    opts: dict[str, Any]
    info: dict[str, Any]
    key: str
    cache_file: Path
    cache_used: bool
    ranges: Path | None
    images: np.ndarray | None
    score: dict[str, Any] | None = None


def _attempt(bundle: Bundle, flavour: str, method: str, opts: dict[str, Any], cset: CalibrationSet, src: Path,
             work: Path, images: np.ndarray | None, min_images: int, supports_cache: bool, bias_correction: bool,
             keep_float: list[str] | None) -> _Attempt:
    kind = KINDS[flavour]
    key = cache_key(bundle.artifacts[str(kind.made_from)]["sha256"], cset, method, flavour)
    cache_file = bundle.path / CALIB_DIR / f"{flavour}-{method}-{key}.json"
    cache_used = supports_cache and cache_file.is_file()
    input_name = bundle.artifacts[str(kind.made_from)].get("input", "image")
    work.mkdir(parents=True, exist_ok=True)
    reader, stride = None, 1
    if cache_used:
        log.info("%s: using cached calibration ranges %s/%s (no calibration run)", kind.file, CALIB_DIR,
                 cache_file.name)
    else:
        log.info("%s: calibrating on %d images from %s (method %s)%s", kind.file, len(cset.files),
                 cset.source, method, "" if supports_cache else "; this onnxruntime cannot cache ranges")
    if images is None and (not cache_used or bias_correction):
        images = load_calibration_images(cset, bundle.input_size, min_images)
    if not cache_used:
        reader, stride = _reader(images, input_name)
    bc_images = images[:BIAS_CORRECTION_IMAGES] if bias_correction and images is not None else None
    ranges = (cache_file if cache_used else work / "ranges.json") if supports_cache else None
    out = work / kind.file
    info = _run_quantizer(src, out, flavour, opts, reader, stride, ranges, work, bc_images, keep_float)
    return _Attempt(method, out, opts, info, key, cache_file, cache_used, ranges, images)


@dataclass(frozen=True)
class HeldOut:
    """Auto's check set, read and run through FP32 once per export: both flavours and every method
    are judged against the same reference."""

    src_sha256: str  # the FP32 file the reference came from
    images: np.ndarray | None  # None: too few readable held-out images, so minmax is kept unchecked
    reference: np.ndarray | None  # FP32 outputs on ``images``


def _held_out(bundle: Bundle, cset: CalibrationSet, src_key: str, name: str) -> HeldOut:
    """Up to CHECK_IMAGES readable images from the calibration source that were not calibrated on
    (the training split's rest by default: the validation split stays unseen for the precision
    table), with the FP32 file's outputs on them."""
    from edgecat import imaging

    sha = bundle.artifacts[src_key]["sha256"]
    taken = {os.path.abspath(f) for f in (cset.used or cset.files)}
    rest = [f for f in cset.reserve if os.path.abspath(f) not in taken]
    loaded = imaging.load_batch(rest, bundle.input_size, limit=CHECK_IMAGES) if len(rest) >= MIN_CALIB_IMAGES else None
    if loaded is None or len(loaded.files) < MIN_CALIB_IMAGES:
        log.info("%s: calibration method auto: only %d readable held-out images in %s; minmax kept without a "
                 "check", name, len(loaded.files) if loaded else len(rest), cset.source)
        return HeldOut(sha, None, None)
    images = loaded.images.astype(np.float32)
    return HeldOut(sha, images, np.asarray(onnx_outputs(bundle.artifact_path(src_key), images), np.float64))


def _judge(held: HeldOut, qpath: Path, flavour: str) -> dict[str, Any]:
    """The INT8 file against FP32 on held-out images: the guard's label-free figures and the mean
    probability difference (continuous, so it ranks two files where few labels change)."""
    from edgecat import int8_guard

    assert held.images is not None and held.reference is not None
    out = onnx_outputs(qpath, held.images, simulate_qdq=flavour in SIMULATED_FLAVOURS)
    fid = int8_guard.fidelity(held.reference, out)
    return {"images": fid.images, "agreement": round(fid.agreement, 4), "confident": fid.confident,
            "confident_flips": fid.confident_flips,
            "mean_abs_diff": round(float(np.mean(np.abs(held.reference - out))), 5)}


def _good_enough(score: dict[str, Any]) -> bool:
    return score["confident_flips"] == 0 and score["agreement"] >= AUTO_MIN_AGREEMENT


def _describe(score: dict[str, Any]) -> str:
    return (f"on {score['images']} held-out images: agreement {score['agreement']:.1%}, "
            f"{score['confident_flips']} of {score['confident']} confident answers flipped, "
            f"mean probability change {score['mean_abs_diff']:.4f}")


def _record(bundle: Bundle, kind: artifacts.ArtifactKind, opts: dict[str, Any], info: dict[str, Any],
            calibration: dict[str, Any], parity: dict[str, Any], seconds: float) -> None:
    """The INT8 artifact's manifest entry: how it was quantized, calibrated and checked."""
    src = bundle.artifacts[str(kind.made_from)]
    types = {k: str(getattr(opts[k], "name", opts[k])) for k in ("activation_type", "weight_type")}
    bundle.add_artifact(
        kind.key, bundle.path / kind.file, format=kind.format, precision=kind.precision, flavour=kind.flavour,
        quantization={"format": "QDQ", **types, "per_channel": opts["per_channel"],
                      "reduce_range": opts["reduce_range"], **info,
                      "quantize_bias": opts["extra_options"].get("QuantizeBias", True),
                      "symmetric_activations": opts["extra_options"].get("ActivationSymmetric", False)},
        input=src.get("input", "image"), output=src.get("output", "probabilities"), calibration=calibration,
        made_by={"tool": "onnxruntime.quantization.quantize_static", "from": kind.made_from,
                 "from_sha256": src["sha256"], "seconds": round(seconds, 2),
                 "versions": tool_versions("onnx", "onnxruntime")},
        parity=parity,
    )


def _parity(bundle: Bundle, src: Path, qpath: Path, flavour: str, parity_dirs: list[str] | None,
            exclude: set[str] | None = None) -> dict[str, Any]:
    """INT8 vs FP32 on the parity images other than the calibration images (the TensorRT flavour as
    Q/DQ arithmetic); recorded, and refused only when the outputs are broken (non-finite, another
    shape): INT8 moves probabilities by an amount a calibration set decides, which the precision
    table then scores on labelled data."""
    from edgecat.splits import parity_images

    batch, what = parity_images(bundle, extra_dirs=parity_dirs, exclude=exclude)
    kind = KINDS[flavour]
    report = validate(onnx_outputs(src, batch), onnx_outputs(qpath, batch, simulate_qdq=flavour in SIMULATED_FLAVOURS),
                      what, bundle=bundle, reference_name=str(kind.made_from), name=kind.file)
    return report.raise_if_failed(f"INT8 model ({flavour})", "FP32", f"no {KINDS[flavour].file} written").parity()


def quantize_all(bundle: Bundle, calib: str | Path | None = None, calib_size: int = DEFAULT_CALIB_SIZE,
                 method: str = AUTO, flavours: tuple[str, ...] = FLAVOURS,
                 min_images: int = MIN_CALIB_IMAGES, parity_dirs: list[str] | None = None,
                 bias_correction: bool = True, seed: int = 0) -> list[QuantizeResult]:
    """Both INT8 flavours from one calibration set (chosen once, so both share the image list).
    ``parity_dirs``: folders of real images for the parity check (default: ``calib``; its images
    that were calibrated on are left out either way). ``seed``: which images are drawn."""
    cset = calibration_set(bundle, calib, calib_size, min_images, seed=seed)
    dirs = parity_dirs if parity_dirs is not None else ([str(calib)] if calib else None)
    sources = {str(KINDS[f].made_from) for f in flavours}
    names = ", ".join(KINDS[f].file for f in flavours)
    held = (_held_out(bundle, cset, sources.pop(), names)
            if method == AUTO and len(sources) == 1 else None)  # read and run through FP32 once, not per flavour
    return [quantize_int8(bundle, f, method=method, min_images=min_images, cset=cset, parity_dirs=dirs,
                          bias_correction=bias_correction, held_out=held) for f in flavours]


__all__ = ["KINDS", "CalibrationSet", "HeldOut", "QuantizeResult", "cache_key", "calibration_images", "calibration_set",
           "flavour_options", "quantize_all", "quantize_int8"]
