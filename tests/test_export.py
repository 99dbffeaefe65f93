"""edgecat export: ONNX FP32 parity (both backbones), FP16, INT8 flavours + calibration cache,
precision table, CLI errors. Real TensorFlow / tf2onnx / ONNX Runtime on tiny models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conftest import _make_bundle, needs_tf
from edgecat.bundle import Bundle
from edgecat.cli import main
from edgecat.errors import EdgecatError


#: ../shared next to the repository (EDGECAT_SHARED_DIR elsewhere, e.g. from a git worktree)
SHARED = Path(os.environ.get("EDGECAT_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared")


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _qdq_zero_point_types(path: Path) -> set[int]:
    """Element types of the zero points of activation QuantizeLinear nodes."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    types = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            types.add(inits[node.input[2]].data_type)
    return types


# ------------------------------------------------------------------------------------ ONNX FP32
@needs_tf
def test_onnx_fp32_one_image_input_and_parity(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    entry = b.artifacts["onnx-fp32"]
    model = onnx.load(str(b.artifact_path("onnx-fp32")))
    assert [i.name for i in model.graph.input] == ["image"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [48, 48, 3]
    assert entry["parity"]["max_abs_diff"] <= 1e-4
    assert "real images" in entry["parity"]["images"]


@needs_tf
def test_onnx_fp32_resnet50_has_only_the_image_input(tmp_path):
    # 64 px, not 32: a random-weight ResNet50 at 32 px ends on a 1x1 map with BatchNorm statistics
    # from 16 values per channel, and its ONNX-vs-Keras difference straddled 1e-4 (3.3e-5 to 1.9e-4
    # over six weight seeds; ORT with graph fusion off differed as much). At 64 px eight seeds gave
    # 2.5e-5 to 6.5e-5, so this checks the export and not the draw of the initializers.
    root = _make_bundle(tmp_path / "r50", "resnet50", 64, None, onnx=True)
    b = Bundle.open(root)
    model = onnx.load(str(b.artifact_path("onnx-fp32")))
    assert [i.name for i in model.graph.input] == ["image"]
    assert b.artifacts["onnx-fp32"]["parity"]["max_abs_diff"] <= 1e-4
    assert "synthetic" in b.artifacts["onnx-fp32"]["parity"]["images"]


@needs_tf
def test_onnx_fp32_parity_failure_leaves_no_file(tiny_bundle):
    from edgecat.export.onnx import export_onnx

    b = Bundle.open(tiny_bundle)
    b.remove_artifact("onnx-fp32", delete_file=True)
    with pytest.raises(EdgecatError, match="does not match Keras"):
        export_onnx(b, tolerance=-1.0)
    assert not (tiny_bundle / "model.onnx").exists()
    assert not list(tiny_bundle.glob(".model*"))
    assert "onnx-fp32" not in Bundle.open(tiny_bundle).artifacts


# ------------------------------------------------------------------------------------ FP16
@needs_tf
def test_fp16_keeps_fp32_io_and_matches(tiny_bundle):
    from edgecat.export.fp16 import FP16_TOLERANCE, export_fp16
    from edgecat.runtime import open_runtime

    b = Bundle.open(tiny_bundle)
    entry = export_fp16(b)  # the default bound accepts a correct conversion
    model = onnx.load(str(tiny_bundle / "model.fp16.onnx"))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == f32
    assert model.graph.output[0].type.tensor_type.elem_type == f32
    assert sum(i.data_type == f16 for i in model.graph.initializer) > 10
    par = entry["parity"]
    assert par["label_agreement"] == 1.0 and par["tolerance"] == FP16_TOLERANCE
    assert 0 < par["max_logit_diff"] <= par["logit_bound"] and par["max_abs_diff"] > 0
    assert (tiny_bundle / "model.fp16.onnx").stat().st_size < 0.6 * (tiny_bundle / "model.onnx").stat().st_size
    x = np.random.default_rng(1).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    with open_runtime(Bundle.open(tiny_bundle), "onnxruntime", "fp16") as rt:
        assert rt.infer(x).shape == (2, 2)


def _broken_fp16(bundle: Bundle, tmp_path: Path, how: str) -> Path:
    """A correct FP16 conversion, then broken the way real ones break."""
    from onnx import numpy_helper

    from edgecat.export.fp16 import convert_fp16

    model = convert_fp16(onnx.load(str(bundle.artifact_path("onnx-fp32"))))
    inits = {i.name: i for i in model.graph.initializer}
    if how == "overflow":  # preprocessing scaled in fp16 past 65504 (x * 1/127.5 became x * 1000)
        mul = next(n for n in model.graph.node if n.op_type == "Mul")
        name = next(i for i in mul.input if i in inits)
        inits[name].CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(inits[name]), 1000), name))
    else:  # one convolution's weights scrambled (a bad cast or a wrong layout)
        conv = [n for n in model.graph.node if n.op_type == "Conv"][3]
        w = numpy_helper.to_array(inits[conv.input[1]])
        bad = np.random.default_rng(0).permutation(w.ravel()).reshape(w.shape) * -3
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(bad.astype(w.dtype), conv.input[1]))
    path = tmp_path / f"{how}.fp16.onnx"
    onnx.save(model, str(path))
    return path


@needs_tf
@pytest.mark.parametrize("how,match", [("overflow", "non-finite outputs|max logit difference"),
                                        ("weights", "max logit difference")])
def test_fp16_check_refuses_a_broken_conversion(tiny_bundle, tmp_path, how, match):
    from edgecat.export.fp16 import fp16_parity
    from edgecat.export.onnx import onnx_outputs, parity_images

    b = Bundle.open(tiny_bundle)
    batch, what = parity_images(b)
    ref = onnx_outputs(b.artifact_path("onnx-fp32"), batch)
    with pytest.raises(EdgecatError, match=match):
        fp16_parity(b, ref, onnx_outputs(_broken_fp16(b, tmp_path, how), batch), what)


@needs_tf
@pytest.mark.skipif(not (SHARED / "weights").is_dir(),
                    reason="needs ../shared/weights (genuine ImageNet MobileNetV2 weights)")
def test_fp16_accepts_a_real_network(tmp_path):
    """Genuine ImageNet features (large activations, the case a probability bound refused) at 96 px:
    the default check accepts the correct FP16 and still refuses scrambled weights."""
    import keras

    from edgecat.export.fp16 import export_fp16, fp16_parity
    from edgecat.export.onnx import export_onnx, onnx_outputs, parity_images
    from edgecat.fsutil import atomic_path
    from edgecat.models import build_model

    weights = next((SHARED / "weights").glob("mobilenet_v2*.h5"))
    keras.utils.set_random_seed(0)
    model, _ = build_model("mobilenet_v2", num_classes=2, img_size=96, weights=str(weights))
    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(96, 96),
                      classes=["cat", "dog"], preprocessing="tf")
    with atomic_path(tmp_path / "b" / "model.keras") as tmp:
        model.save(str(tmp))
    b.add_artifact("keras", tmp_path / "b" / "model.keras", format="keras", precision="fp32")
    data = SHARED / "data" / "cats-vs-dogs" / "validation"
    dirs = [str(data)] if data.is_dir() else None
    export_onnx(b, parity_dirs=dirs)
    entry = export_fp16(b, parity_dirs=dirs)
    assert entry["parity"]["label_agreement"] == 1.0
    batch, what = parity_images(b, extra_dirs=dirs)
    ref = onnx_outputs(b.artifact_path("onnx-fp32"), batch)
    with pytest.raises(EdgecatError, match="max logit difference"):
        fp16_parity(b, ref, onnx_outputs(_broken_fp16(b, tmp_path, "weights"), batch), what)


# ------------------------------------------------------------------------------------ INT8
@needs_tf
def test_int8_flavours_cache_and_precision_table(tiny_bundle, synth_data, caplog):
    from edgecat.export.precision_table import precision_table
    from edgecat.export.quantize import quantize_all

    calib = synth_data / "train"
    b = Bundle.open(tiny_bundle)
    with caplog.at_level("INFO"):
        first = quantize_all(b, calib=calib, calib_size=24)
    assert [r.artifact for r in first] == ["onnx-int8", "onnx-int8-trt"]
    assert not any(r.cache_used for r in first)
    assert "calibrating on 24 images" in caplog.text
    assert len(list((tiny_bundle / "calibration").glob("*.json"))) == 2

    cpu, trt = b.artifacts["onnx-int8"], b.artifacts["onnx-int8-trt"]
    assert cpu["quantization"]["activation_type"] == "QUInt8" and cpu["quantization"]["per_channel"]
    assert cpu["quantization"]["preprocessed"]  # BatchNorm Mul/Add folded before quantizing
    assert _qdq_zero_point_types(tiny_bundle / "model.int8.onnx") >= {onnx.TensorProto.UINT8}
    assert _qdq_zero_point_types(tiny_bundle / "model.int8-trt.onnx") == {onnx.TensorProto.INT8}
    trt_model = onnx.load(str(tiny_bundle / "model.int8-trt.onnx"))
    zps = [onnx.numpy_helper.to_array(i) for i in trt_model.graph.initializer if i.name.endswith("zero_point")]
    assert zps and all(not np.any(z) for z in zps)  # symmetric: every zero point is 0
    for e in (cpu, trt):
        assert e["calibration"]["images"] == 24 and e["calibration"]["cache_used"] is False
    assert (tiny_bundle / "model.int8.onnx").stat().st_size < 0.5 * (tiny_bundle / "model.onnx").stat().st_size

    # same model, images, method, flavour: the cached ranges are reused
    caplog.clear()
    with caplog.at_level("INFO"):
        again = quantize_all(Bundle.open(tiny_bundle), calib=calib, calib_size=24)
    assert all(r.cache_used for r in again) and "using cached calibration" in caplog.text
    # another method or another image list: recalibrate
    other = quantize_all(Bundle.open(tiny_bundle), calib=calib, calib_size=24, method="percentile",
                         flavours=("cpu",))
    assert not other[0].cache_used
    fewer = quantize_all(Bundle.open(tiny_bundle), calib=calib, calib_size=20, flavours=("cpu",))
    assert not fewer[0].cache_used
    # histogram calibration with an image count that is not a multiple of the batch size
    odd = quantize_all(Bundle.open(tiny_bundle), calib=calib, calib_size=21, method="entropy", flavours=("trt",))
    assert not odd[0].cache_used and odd[0].images == 21
    assert len(list((tiny_bundle / "calibration").glob("*.json"))) == 5

    table = precision_table(Bundle.open(tiny_bundle), data=synth_data)
    assert [r.precision for r in table.rows] == ["fp32", "int8", "int8-trt"]
    assert table.labelled and table.images == len([p for p in (synth_data / "validation").rglob("*") if p.is_file()])
    assert table.rows[0].agreement == 1.0 and table.rows[0].max_prob_diff == 0.0
    # figures worked out apart from the table: predict's labels (fp32, int8) and the parity check each
    # INT8 export recorded on the same 12 validation images; int8-trt's accuracy can differ from fp32's
    # by at most the share of labels that changed
    from test_cli import predicted_labels

    fp32, int8, int8_trt = table.rows
    by_fp32, by_int8 = (predicted_labels(tiny_bundle, synth_data / "validation", p) for p in ("fp32", "int8"))
    assert fp32.accuracy == pytest.approx(np.mean([truth == label for truth, label in by_fp32]))
    assert int8.accuracy == pytest.approx(np.mean([truth == label for truth, label in by_int8]))
    assert int8.agreement == pytest.approx(np.mean([a == b for a, b in zip(by_fp32, by_int8, strict=True)]))
    arts = Bundle.open(tiny_bundle).artifacts
    assert (int8.agreement, int8_trt.agreement) == pytest.approx(
        (arts["onnx-int8"]["parity"]["label_agreement"], arts["onnx-int8-trt"]["parity"]["label_agreement"]))
    assert abs(int8_trt.accuracy - fp32.accuracy) <= 1 - int8_trt.agreement + 1e-9
    manifest = json.loads((tiny_bundle / "edgecat.json").read_text())
    assert [r["precision"] for r in manifest["metrics"]["precision_table"]["rows"]] == ["fp32", "int8", "int8-trt"]
    assert "agreement_with_fp32" in manifest["artifacts"]["onnx-int8"]["accuracy"]


@needs_tf
def test_int8_without_calib_uses_bundle_splits(tiny_bundle, caplog):
    from edgecat.export.quantize import calibration_set

    with caplog.at_level("INFO"):
        cset = calibration_set(Bundle.open(tiny_bundle), None, size=30)
    assert len(cset.files) == 30 and "splits.json" in cset.source
    assert "no --calib given" in caplog.text


@pytest.mark.parametrize("n", [16, 21, 40, 500])
def test_calibration_is_fed_in_bounded_chunks(n):
    """quantize_static runs collect_data per CalibStridedMinMax chunk (every method), so at most
    CALIB_CHUNK_IMAGES images' activations are held; the chunks cover every image once, in equal batches."""
    from edgecat.export.quantize import CALIB_CHUNK_IMAGES, _reader

    images = np.arange(n, dtype=np.uint16).reshape(n, 1, 1, 1)
    reader, stride = _reader(images, "image")
    batches = len(reader)
    assert batches % stride == 0
    seen = []
    for start in range(0, batches, stride):
        reader.set_range(start, start + stride)
        chunk = list(iter(reader.get_next, None))
        assert sum(len(b["image"]) for b in chunk) <= CALIB_CHUNK_IMAGES
        assert len({len(b["image"]) for b in chunk}) == 1
        seen += [int(v) for b in chunk for v in b["image"].ravel()]
    assert seen == list(range(n))


@needs_tf
def test_int8_replaces_unreadable_calibration_images(tiny_bundle, synth_data, tmp_path):
    """`export --int8 --calib-size 16` on a folder where some of the drawn files are unreadable draws
    readable replacements from the rest of the folder instead of failing (14 of 16)."""
    from edgecat.export.quantize import calibration_set

    folder = tmp_path / "calib"
    folder.mkdir()
    for f in sorted(p for p in (synth_data / "train").rglob("*") if p.is_file())[:20]:
        shutil.copy(f, folder / f.name)
    drawn = calibration_set(Bundle.open(tiny_bundle), folder, size=16).files
    for f in drawn[:2]:
        Path(f).write_bytes(b"not an image")
    r = _run("export", str(tiny_bundle), "--int8", "--calib", str(folder), "--calib-size", "16")
    assert r.exit_code == 0, r.output
    for key in ("onnx-int8", "onnx-int8-trt"):
        cal = Bundle.open(tiny_bundle).artifacts[key]["calibration"]
        assert cal["images"] == 16 and cal["replaced_unreadable"] == 2
    # the cache key is the drawn list, so the same folder reuses both flavours' ranges
    r = _run("export", str(tiny_bundle), "--int8", "--calib", str(folder), "--calib-size", "16")
    assert r.exit_code == 0, r.output
    arts = Bundle.open(tiny_bundle).artifacts
    assert all(arts[k]["calibration"]["cache_used"] for k in ("onnx-int8", "onnx-int8-trt"))
    # replacements run out: the error still says how many were readable
    for f in sorted(folder.iterdir())[:6]:
        f.write_bytes(b"broken")
    r = _run("export", str(tiny_bundle), "--int8", "--calib", str(folder), "--calib-size", "16")
    assert r.exit_code != 0 and "too few readable calibration images: 14 of 16" in r.output


# ------------------------------------------------------------------------------------ CLI
@needs_tf
def test_cli_export_errors(tiny_bundle, tmp_path, synth_data):
    r = _run("export", str(tmp_path / "missing"))
    assert r.exit_code != 0 and "bundle not found" in r.output

    r = _run("export", str(tiny_bundle), "--int8", "--calib", str(tmp_path / "nope"))
    assert r.exit_code != 0 and "calibration folder not found" in r.output

    empty = tmp_path / "empty"
    empty.mkdir()
    r = _run("export", str(tiny_bundle), "--int8", "--calib", str(empty))
    assert r.exit_code != 0 and "no images found" in r.output

    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(p for p in (synth_data / "train").rglob("*") if p.is_file())[:3]:
        shutil.copy(f, few / f.name)
    r = _run("export", str(tiny_bundle), "--int8", "--calib", str(few))
    assert r.exit_code != 0 and "too few calibration images: 3" in r.output
    assert not (tiny_bundle / "model.int8.onnx").exists()

    r = _run("export", str(tiny_bundle), "--trt", "--batch", "8,1,4")
    assert r.exit_code != 0 and "--batch wants MIN,OPT,MAX" in r.output

    r = _run("export", str(tiny_bundle), "--precision", "fp16")
    assert r.exit_code != 0 and "add --trt" in r.output


@needs_tf
def test_cli_no_flags_keeps_existing_onnx(tiny_bundle):
    before = Bundle.open(tiny_bundle).artifacts["onnx-fp32"]["sha256"]
    r = _run("export", str(tiny_bundle))
    assert r.exit_code == 0, r.output
    assert "already there" in r.output
    assert Bundle.open(tiny_bundle).artifacts["onnx-fp32"]["sha256"] == before


@needs_tf
def test_no_onnxruntime_provider_is_one_line(tiny_bundle):
    import onnxruntime as ort

    from edgecat.runtime import open_runtime

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has the CUDA provider")
    with pytest.raises(EdgecatError, match="no CUDAExecutionProvider"):
        open_runtime(Bundle.open(tiny_bundle), "onnxruntime-cuda", "fp32")
