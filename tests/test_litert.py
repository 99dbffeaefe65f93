"""LiteRT export (needs TensorFlow) and runtime (ai-edge-litert only) on a tiny real bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert not installed (pip install 'edgecat[litert]')")


@pytest.fixture(scope="module")
def litert_bundle(tiny_bundle_src, synth_data, tmp_path_factory):
    """One export of all three files, shared by the tests below (conversion is the slow part)."""
    import shutil

    from edgecat.bundle import Bundle
    from edgecat.export.litert import export_litert

    dst = tmp_path_factory.mktemp("litert") / "bundle"
    shutil.copytree(tiny_bundle_src, dst)
    entries = export_litert(Bundle.open(dst), calib=synth_data / "train", calib_size=32)
    return dst, entries


def test_export_writes_three_checked_files(litert_bundle):
    from edgecat.bundle import Bundle

    path, entries = litert_bundle
    b = Bundle.open(path)
    assert [e["file"] for e in entries] == ["model.fp32.tflite", "model.fp16.tflite", "model.int8.tflite"]
    assert b.verify() == {k: "ok" for k in b.artifacts}
    fp32, fp16, int8 = (b.artifacts[f"tflite-{p}"] for p in ("fp32", "fp16", "int8"))
    assert fp32["parity"]["max_abs_diff"] < 1e-4 and fp32["parity"]["label_agreement"] == 1.0
    assert fp16["bytes"] < 0.6 * fp32["bytes"] and int8["bytes"] < 0.4 * fp32["bytes"]
    assert int8["made_by"]["calibration"]["images"] == 32
    assert not list(path.glob("*.tmp*")) and not list(path.glob(".*tflite*"))


def test_runtime_matches_keras_and_takes_uint8_and_batches(litert_bundle):
    from edgecat.bundle import Bundle
    from edgecat.runtime import open_runtime

    path, _ = litert_bundle
    b = Bundle.open(path)
    x = np.random.default_rng(3).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)
    with open_runtime(b, "keras", "fp32") as k:
        ref = k.infer(x)
    with open_runtime(b, "litert", "fp32", threads=1) as rt:
        got = rt.infer(x)  # batch of 5: the input tensor is resized
        one = rt.infer(x[0].astype(np.float32))  # then back to 1
        assert rt.last_inference_ms > 0 and rt.artifact_key == "tflite-fp32"
    assert got.shape == (5, 2) and np.max(np.abs(got - ref)) < 1e-4
    assert np.allclose(one[0], got[0], atol=1e-5)
    with open_runtime(b, "litert", "int8") as rt:
        q = rt.infer(x)
    assert q.shape == (5, 2) and np.allclose(q.sum(axis=1), 1.0, atol=1e-5)


def test_runtime_runs_without_tensorflow(litert_bundle):
    """The device side: tensorflow made unimportable, the litert runtime still runs."""
    path, _ = litert_bundle
    code = (
        "import sys, json; sys.modules['tensorflow'] = None\n"
        "import numpy as np\n"
        "from edgecat.runtime import open_runtime\n"
        f"rt = open_runtime({str(path)!r}, 'litert', 'fp16')\n"
        "p = rt.infer(np.zeros((2, 48, 48, 3), np.uint8))\n"
        "print(json.dumps([list(p.shape), 'keras' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-500:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[2, 2], False]


def test_cli_export_tflite_and_missing_file(tiny_bundle, synth_data):
    from click.testing import CliRunner

    from edgecat.bundle import Bundle
    from edgecat.cli import main
    from edgecat.errors import EdgecatError
    from edgecat.runtime import open_runtime

    with pytest.raises(EdgecatError, match="tflite-fp32"):
        open_runtime(Bundle.open(tiny_bundle), "litert", "fp32")
    r = CliRunner().invoke(main, ["export", str(tiny_bundle), "--tflite", "--tflite-precision", "fp32"])
    assert r.exit_code == 0, r.output
    assert "model.fp32.tflite" in r.output
    b = Bundle.open(tiny_bundle)
    assert b.has("tflite-fp32") and not (tiny_bundle / "model.int8.tflite").exists()
    rows = {r["precision"]: r for r in b.manifest["metrics"]["precision_table"]["rows"]}
    assert set(rows) == {"fp32", "tflite-fp32"}  # evaluated through the litert runtime beside ONNX
    assert rows["tflite-fp32"]["agreement"] == 1.0 and rows["tflite-fp32"]["max_prob_diff"] < 1e-4


def _saturating(bundle_path):
    """The tiny bundle's model with its classifier scaled until the parity images' logits reach
    +-30, one of them put on the threshold: FP16 moves that image's probability by several hundredths
    while every logit stays within the FP16 logit bound (a well-trained model, in miniature)."""
    import keras

    from edgecat.bundle import Bundle
    from edgecat.splits import parity_images
    from edgecat.fsutil import atomic_path

    b = Bundle.open(bundle_path)
    model = keras.models.load_model(str(b.artifact_path("keras")), compile=False)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    kernel, _ = dense.get_weights()
    batch, _ = parity_images(b)
    z = keras.Model(model.input, dense.input)(batch).numpy() @ kernel
    kernel = kernel * 30.0 / float(np.max(np.abs(z - np.median(z))))
    z = keras.Model(model.input, dense.input)(batch).numpy() @ kernel
    dense.set_weights([kernel, -np.sort(z[:, 0])[len(z) // 2:len(z) // 2 + 1]])
    with atomic_path(b.artifact_path("keras")) as tmp:
        model.save(str(tmp))
    b.add_artifact("keras", b.artifact_path("keras"), format="keras", precision="fp32")
    return b


def test_fp16_is_judged_in_logit_space_as_onnx_fp16_is(tiny_bundle):
    """A probability near the threshold moves by more than 0.02 under FP16 on a model with large
    logits; the file is still a correct conversion, so it is written (same rule as model.fp16.onnx),
    and the bound is still enforced: with no relative tolerance only the floor is left."""
    from edgecat.bundle import Bundle
    from edgecat.export.fp16 import FP16_LOGIT_FLOOR, FP16_TOLERANCE
    from edgecat.export.litert import export_litert
    from edgecat.validate import FilesRefused

    b = _saturating(tiny_bundle)
    [entry] = export_litert(b, ("fp16",))
    par = entry["parity"]
    assert par["max_abs_diff"] > 0.02  # what a probability bound refused
    assert par["tolerance"] == FP16_TOLERANCE and par["logit_bound"] > FP16_LOGIT_FLOOR
    assert FP16_LOGIT_FLOOR < par["max_logit_diff"] <= par["logit_bound"]
    assert (tiny_bundle / "model.fp16.tflite").is_file()
    with pytest.raises(FilesRefused, match=r"LiteRT fp16 model does not match Keras: max logit difference"):
        export_litert(b, ("fp16",), fp16_tolerance=0.0)
    assert Bundle.open(tiny_bundle).artifacts["tflite-fp16"]["sha256"] == entry["sha256"]


def test_a_refused_file_costs_neither_the_other_files_nor_the_precision_table(tiny_bundle):
    """The export goes on past a file its parity check refuses: the files after it are written and
    scored, then the refusal is the one error line and the exit is non-zero."""
    from click.testing import CliRunner

    from edgecat.bundle import Bundle
    from edgecat.cli import main

    _saturating(tiny_bundle)
    r = CliRunner().invoke(main, ["export", str(tiny_bundle), "--tflite", "--tflite-precision", "fp16,fp32",
                                  "--fp16-tolerance", "0"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "LiteRT fp16 model does not match Keras" in errors[0]
    assert "no model.fp16.tflite written" in errors[0]
    assert "model.fp32.tflite" in r.output  # written after the refused one
    b = Bundle.open(tiny_bundle)
    assert b.has("tflite-fp32") and not b.has("tflite-fp16") and not (tiny_bundle / "model.fp16.tflite").exists()
    rows = {row["precision"] for row in b.manifest["metrics"]["precision_table"]["rows"]}
    assert "tflite-fp32" in rows  # the precision table still scored what was written


def test_export_tflite_writes_no_native_lines_to_stderr(tiny_bundle, synth_data):
    """The converter's ``fully_quantize: ...`` and LiteRT's XNNPACK notice stay off stderr (the
    INT8 file alone prints both); a real error line is still let through."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-m", "edgecat", "export", str(tiny_bundle), "--tflite",
                          "--tflite-precision", "int8", "--calib", str(synth_data / "train")],
                         capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-1000:]
    assert "model.int8.tflite" in res.stdout
    leaked = [ln for ln in res.stderr.splitlines()
              if any(s in ln for s in ("fully_quantize", "XNNPACK", "inference_type", "I0000", "W0000"))]
    assert not leaked, leaked
    from edgecat.log import NATIVE_NOISE

    for real in ("E0000 00:00:1.2 123 convert.cc:10] conversion failed", "error: out of memory",
                 "RuntimeError: tensor 0 is not allocated"):
        assert not NATIVE_NOISE.match(real)


def test_int8_bias_correction_and_ops_kept_in_float(litert_bundle, tiny_bundle, synth_data):
    """LiteRT INT8 is bias-corrected by default (recorded); ``keep_float=["last-stage"]`` leaves the
    last stage's convolutions computing in float in the written file (their outputs are float32
    tensors), the rest stays int8; a misspelt op name is one clear error."""
    from edgecat.bundle import Bundle
    from edgecat.errors import EdgecatError
    from edgecat.export import litert_bias
    from edgecat.export.litert import export_litert

    path, _ = litert_bundle
    made = Bundle.open(path).artifacts["tflite-int8"]["made_by"]
    assert made["bias_correction"]["layers"] > 10 and made["float_ops"] == []

    b = Bundle.open(tiny_bundle)
    export_litert(b, ("int8",), calib=synth_data / "train", calib_size=32, keep_float=[litert_bias.LAST_STAGE])
    data = (tiny_bundle / "model.int8.tflite").read_bytes()
    kept = Bundle.open(tiny_bundle).artifacts["tflite-int8"]["made_by"]["float_ops"]
    assert kept and set(kept) == set(litert_bias.float_ops(data))
    ops = {o["outputs"][0]: o for o in litert_bias.op_table(data)}
    int8_convs = [n for n, o in ops.items() if o["op"] in litert_bias.WEIGHTED and o["out_types"][0] == 9]
    assert len(int8_convs) > 2 * len(kept)  # only the last stage left float
    with pytest.raises(EdgecatError, match="no LiteRT op with output tensor nothing_here"):
        export_litert(b, ("int8",), calib=synth_data / "train", calib_size=32, keep_float=["nothing_here"])
