"""--backend auto: measured on the machine, labels checked, remembered per machine in the manifest."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import needs_tf

from edgecat import artifacts, int8_guard
from edgecat.errors import EdgecatError


def test_pick_judges_from_the_fastest_down_and_stops_at_the_first_the_guard_accepts():
    """The decision alone, on made-up timings and figures: the fastest (int8) is refused by the rule
    it breaks, the next (fp16) is chosen, the slower ones are never judged, and a candidate that
    failed to open is left alone."""
    from edgecat import int8_guard
    from edgecat.select import Timing, pick

    timings = [Timing("onnxruntime", "fp32", 1, ms=3.0), Timing("openvino", "int8", 1, ms=1.0),
               Timing("onnxruntime", "fp16", 1, ms=2.0), Timing("litert", "fp32", 1, ms=2.5),
               Timing("litert", "int8", 1, status="failed", note="cannot open")]
    # 1,000 labelled photos, 800 of them FP32 is confident about; INT8 flips 5 of those (0.63%)
    figures = {"int8": int8_guard.Fidelity(1000, 0.99, 800, 5, 5 / 800, 0.99, 0.988, 0.002),
               "fp16": int8_guard.Fidelity(1000, 0.999, 800, 0, 0.0, 0.99, 0.99, 0.0)}
    asked = []

    def judge(t):
        asked.append((t.backend, t.precision))
        return int8_guard.verdict(figures[t.precision]), "1000 labelled images"

    chosen, on = pick(timings, judge)
    assert (chosen.backend, chosen.precision, on) == ("onnxruntime", "fp16", "1000 labelled images")
    assert asked == [("openvino", "int8"), ("onnxruntime", "fp16")]  # fastest first, stop at the first pass
    assert [t.status for t in timings] == ["unchecked", "refused", "chosen", "unchecked", "failed"]
    refused = timings[1]
    assert refused.rule == "confident_flips" and refused.note.startswith("confident_flips: 5 of 800")
    assert refused.agreement == 0.99 and refused.fidelity["confident_flips"] == 5
    assert timings[4].note == "cannot open"
    # an accuracy drop beyond the bound refuses by the other rule, whatever the flips
    dropped = int8_guard.Fidelity(1000, 0.995, 800, 0, 0.0, 0.99, 0.985, 0.005)
    alone = [Timing("onnxruntime", "int8", ms=1.0)]
    assert pick(alone, lambda t: (int8_guard.verdict(dropped), "x")) is None
    assert alone[0].rule == "accuracy_drop" and "0.50 points lost > 0.30 allowed" in alone[0].note


@needs_tf
def test_auto_measures_checks_remembers_and_reuses(tiny_bundle, synth_data):
    from edgecat.bundle import Bundle
    from edgecat.export.fp16 import export_fp16
    from edgecat.machine import cpu_model
    from edgecat.runtime import default_backend
    from edgecat.select import MANIFEST_KEY, choose_backend, explain, machine_key, open_backend

    b = Bundle.open(tiny_bundle)
    export_fp16(b, tolerance=5e-2)
    assert default_backend(b) == "auto"
    c = choose_backend(b, threads=1, images=3, rounds=2, validation_limit=24)
    pairs = {(t.backend, t.precision) for t in c.timings}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "fp16")} <= pairs
    chosen = [t for t in c.timings if t.status == "chosen"]
    assert len(chosen) == 1 and (chosen[0].backend, chosen[0].precision) == (c.backend, c.precision)
    assert all(t.ms > 0 for t in c.timings if t.status != "failed")
    assert chosen[0].fidelity["accuracy_drop"] is not None and not c.reused  # judged on labelled photos
    assert c.limits == {"max_accuracy_drop": 0.003, "max_confident_flips": 0.003, "margin": 0.25}
    assert "labelled images" in c.judged_on and "accuracy" in c.reason
    assert c.machine.startswith(cpu_model())  # keyed by CPU model, GPUs and library versions
    record = json.loads((tiny_bundle / "edgecat.json").read_text())[MANIFEST_KEY]
    (slot, saved), = record.items()
    assert slot.startswith(machine_key(1)) and saved["backend"] == c.backend
    kept, = [t for t in saved["timings"] if t["status"] == "chosen"]  # the slower ones may stay unchecked
    assert saved["limits"] == c.limits and kept["fidelity"] == chosen[0].fidelity  # bounds and figures kept
    # later runs reuse it without measuring
    again = choose_backend(Bundle.open(tiny_bundle), threads=1)
    assert again.reused and (again.backend, again.precision) == (c.backend, c.precision)
    rows, line = explain(again)
    assert line.startswith(f"auto -> {c.backend}/{c.precision}, 1 thread(s) (remembered") and len(rows) == len(c.timings)
    # open_backend("auto") opens the chosen runtime and hands back the choice it stands for
    rt, choice = open_backend(Bundle.open(tiny_bundle), "auto", "auto", threads=1)
    with rt:
        assert (rt.backend, rt.precision) == (c.backend, c.precision) and choice.reused
        assert (choice.backend, choice.precision) == (c.backend, c.precision) and rt.options["threads"] == 1
        assert rt.infer(np.zeros((48, 48, 3), np.uint8)).shape == (1, 2)
    assert not hasattr(rt, "auto_choice")
    # a named backend opens as asked, with no choice behind it
    rt, choice = open_backend(Bundle.open(tiny_bundle), "onnxruntime", "fp16", threads=1)
    with rt:
        assert (rt.backend, rt.precision, choice) == ("onnxruntime", "fp16", None)


def test_the_runtime_layer_does_not_resolve_auto(tiny_bundle):
    """runtime/ opens what it is told: `auto` is the policy's word (edgecat.select), refused there in one line."""
    from edgecat.runtime import open_runtime

    with pytest.raises(EdgecatError, match="backend auto is chosen by measurement"):
        open_runtime(tiny_bundle, "auto", "fp32")


@needs_tf
def test_defaults_are_auto_for_backend_and_precision_once_exported(tiny_bundle, synth_data):
    """With exports, predict/evaluate/stream run auto's backend AND precision unless told."""
    from edgecat.bundle import Bundle
    from edgecat.evaluate import evaluate_bundle
    from edgecat.export.fp16 import export_fp16
    from edgecat.runtime import resolve_defaults

    b = Bundle.open(tiny_bundle)
    export_fp16(b, tolerance=5e-2)
    assert resolve_defaults(b, None, None) == ("auto", "auto")
    assert resolve_defaults(b, None, "fp16") == ("auto", "fp16")
    assert resolve_defaults(b, "onnxruntime", None) == ("onnxruntime", "fp32")
    m = evaluate_bundle(b, threads=1, write=False).metrics
    chosen = Bundle.open(tiny_bundle).manifest["autoselect"]  # measured in a child, remembered
    (slot, rec), = chosen.items()
    assert slot.endswith("precision=auto")
    assert (m["backend"], m["model_precision"]) == (rec["backend"], rec["precision"]) != ("auto", "auto")


@needs_tf
def test_auto_refuses_by_the_bundles_bounds_and_reexport_invalidates(tiny_bundle, synth_data):
    """The bundle's own bounds (manifest ``int8_guard``) decide; a refusal names its rule."""
    from edgecat.bundle import Bundle
    from edgecat.errors import EdgecatError
    from edgecat.export.quantize import quantize_int8
    from edgecat.select import choose_backend

    b = Bundle.open(tiny_bundle)
    quantize_int8(b, "cpu", calib=synth_data / "train", calib_size=16)
    # every image counts as one FP32 is confident about (margin 0) and no flip is allowed:
    # the INT8 file passes only if it changes none of FP32's labels
    b.manifest["int8_guard"] = {"max_accuracy_drop": 0.0, "max_confident_flips": 0.0, "margin": 0.0}
    try:
        strict = choose_backend(b, "int8", threads=1, images=2, rounds=1, validation_limit=24, save=False)
        assert all(t.fidelity["confident_flips"] == 0 for t in strict.timings if t.status == "chosen")
    except EdgecatError as exc:
        assert "no backend x precision here keeps FP32's answers" in str(exc) and "confident_flips: " in str(exc)
    b.manifest["int8_guard"] = {"max_accuracy_drop": 0.49, "max_confident_flips": 0.49}
    first = choose_backend(b, "int8", threads=1, images=2, rounds=1, validation_limit=24)
    assert first.precision == "int8" and not first.reused and first.limits["max_confident_flips"] == 0.49
    assert choose_backend(b, "int8", threads=1).reused
    # a re-made INT8 file (other calibration images: another sha256) is measured again
    key = artifacts.onnx("int8").key
    before = b.artifacts[key]["sha256"]
    quantize_int8(b, "cpu", calib=synth_data / "train", calib_size=32)
    b = Bundle.open(tiny_bundle)
    assert b.artifacts[key]["sha256"] != before
    assert not choose_backend(b, "int8", threads=1, images=2, rounds=1, validation_limit=24, save=False).reused


def test_auto_without_exports_is_one_line(tmp_path):
    from edgecat.select import measure
    from edgecat.bundle import Bundle
    from edgecat.errors import EdgecatError

    b = Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(32, 32),
                      classes=["cat", "dog"], preprocessing="mobilenet_v2")
    with pytest.raises(EdgecatError, match="no runtime here can open an export"):
        measure(b)


@needs_tf
def test_auto_measures_thread_counts_when_not_given_and_opens_with_the_winner(tiny_bundle):
    from edgecat.bundle import Bundle
    from edgecat.machine import physical_cores
    from edgecat.select import choose_backend, open_backend

    c = choose_backend(Bundle.open(tiny_bundle), "fp32", images=2, rounds=1, validation_limit=12)
    tried = {(t.backend, t.threads) for t in c.timings}
    assert ("onnxruntime", 1) in tried and ("onnxruntime", physical_cores()) in tried
    # no --threads: the runtime opens with the count that won, not the runtime's default
    rt, choice = open_backend(Bundle.open(tiny_bundle), "auto", "fp32")
    with rt:
        assert choice.reused and rt.options["threads"] == choice.threads == c.threads


@needs_tf
def test_without_photos_auto_judges_the_exports_recorded_figures_not_synthetic_images(tiny_bundle, synth_data):
    """A bundle copied to a device has no validation photos: synthetic images agree on anything,
    so auto judges a file by the figures the export recorded on real photos."""
    from edgecat.bundle import Bundle
    from edgecat.export.fp16 import export_fp16
    from edgecat.select import choose_backend

    b = Bundle.open(tiny_bundle)
    export_fp16(b, tolerance=5e-2)
    splits = json.loads((tiny_bundle / "splits.json").read_text())
    splits["validation"] = [[f"/nonexistent/{i}.jpg", label] for i, (_, label) in enumerate(splits["validation"])]
    (tiny_bundle / "splits.json").write_text(json.dumps(splits))
    b = Bundle.open(tiny_bundle)
    flipped = {"images": 1000, "agreement": 0.99, "confident": 900, "confident_flips": 9,
               "confident_flip_rate": 0.01, "accuracy_fp32": 0.99, "accuracy": 0.989, "accuracy_drop": 0.001}
    b.artifacts["onnx-fp16"]["accuracy"] = {"data": "bundle validation split", "images": 1000,
                                            "agreement_with_fp32": 0.99, "fidelity": flipped}
    with pytest.raises(EdgecatError, match="confident_flips: 9 of 900"):
        choose_backend(b, "fp16", threads=1, images=2, rounds=1, save=False)  # 1% > 0.3%: refused
    c = choose_backend(b, None, threads=1, images=2, rounds=1, save=False)
    assert c.precision == "fp32", c.reason
    fp16 = [t for t in c.timings if t.precision == "fp16"]
    assert fp16 and all(t.status in ("refused", "unchecked") for t in fp16)  # refused, or slower than FP32
    assert all(t.rule == "confident_flips" and t.agreement == 0.99 for t in fp16 if t.status == "refused")
    b.artifacts["onnx-fp16"]["accuracy"]["fidelity"] = {**flipped, "confident_flips": 1,
                                                         "confident_flip_rate": 1 / 900}
    c = choose_backend(b, "fp16", threads=1, images=2, rounds=1, save=False)
    assert c.precision == "fp16" and "recorded at export" in c.reason


#: an INT8 file's figures on 1,000 photos as the export records them: KEPT within the bounds, LOST not
KEPT = {"images": 1000, "agreement": 0.998, "confident": 900, "confident_flips": 0,
        "confident_flip_rate": 0.0, "accuracy_fp32": 0.992, "accuracy": 0.991, "accuracy_drop": 0.001}
LOST = {**KEPT, "accuracy": 0.987, "accuracy_drop": 0.005}


def _int8_with_recorded_figures(tiny_bundle, openvino: dict):
    """The tiny bundle with an INT8 file whose export recorded KEPT for ONNX Runtime and
    ``openvino`` as OpenVINO's own figures on the same photos."""
    from edgecat.bundle import Bundle

    b = Bundle.open(tiny_bundle)
    shutil.copy(tiny_bundle / "model.onnx", tiny_bundle / "model.int8.onnx")
    b.add_artifact("onnx-int8", "model.int8.onnx", precision="int8", format="onnx")
    b.artifacts["onnx-int8"]["accuracy"] = {
        "data": "bundle validation split", "images": 1000, "fidelity": KEPT,
        "by_backend": {"openvino": {"accuracy": openvino["accuracy"], "fidelity": openvino}}}
    return b


def test_recorded_figures_of_a_runtime_are_its_own(tiny_bundle):
    """The export scores a reduced-precision ONNX file with OpenVINO too; a device without photos
    judges OpenVINO by those figures and ONNX Runtime by its own, not one runtime by the other's."""
    from edgecat.select import recorded_verdict

    b = _int8_with_recorded_figures(tiny_bundle, LOST)
    limits = int8_guard.AUTO_LIMITS
    ort, on = recorded_verdict(b, "onnxruntime", "int8", limits)
    assert ort.ok and "1000 images from bundle validation split" in on
    ov, _ = recorded_verdict(b, "openvino", "int8", limits)
    assert not ov.ok and ov.rule == "accuracy_drop" and "0.50 points lost" in ov.reason
    del b.artifacts["onnx-int8"]["accuracy"]["by_backend"]  # an export without OpenVINO installed
    assert recorded_verdict(b, "openvino", "int8", limits)[0].ok


def test_runners_up_are_near_the_choice_alone_and_pass_the_recorded_figures(tiny_bundle):
    """What a stream may time beside auto's choice: another backend at the same threads, within
    RUNNER_UP_WITHIN of the choice's model-only time, FP32 or a file whose export figures pass the bundle's bounds;
    one per backend, the fastest first. Refused, unrecorded and slower files are left out."""
    from edgecat.select import RUNNER_UP_WITHIN, Choice, Timing, runners_up

    b = _int8_with_recorded_figures(tiny_bundle, KEPT)
    near = 1.0 * RUNNER_UP_WITHIN - 0.01
    timings = [Timing("litert", "int8", 2, 1.0, status="chosen"),
               Timing("openvino", "int8", 2, near, status="unchecked"),
               Timing("openvino", "int8", 1, 1.01, status="unchecked"),  # other threads
               Timing("onnxruntime", "int8", 2, 1.02, status="refused"),
               Timing("onnxruntime", "fp32", 2, 1.05, status="unchecked"),  # FP32: the reference itself
               Timing("openvino", "fp32", 2, RUNNER_UP_WITHIN + 0.05, status="unchecked")]  # too slow alone
    choice = Choice("litert", "int8", "", timings, threads=2)
    got = [(t.backend, t.precision, t.threads) for t in runners_up(b, choice, limit=3)]
    assert got == [("onnxruntime", "fp32", 2), ("openvino", "int8", 2)]
    assert [t.backend for t in runners_up(b, choice)] == ["onnxruntime"]  # one by default, the fastest
    b.artifacts["onnx-int8"]["accuracy"]["by_backend"]["openvino"]["fidelity"] = LOST  # OpenVINO's own figures
    assert [t.backend for t in runners_up(b, choice, limit=3)] == ["onnxruntime"]
    del b.artifacts["onnx-int8"]["accuracy"]  # nothing recorded: not vetted, not offered
    assert [t.precision for t in runners_up(b, choice, limit=3)] == ["fp32"]


def test_auto_names_the_export_for_a_precision_the_bundle_lacks(tiny_bundle):
    from edgecat.bundle import Bundle
    from edgecat.select import measure, open_backend

    with pytest.raises(EdgecatError, match=r"has no int8 export yet: run `edgecat export .* --int8"):
        measure(Bundle.open(tiny_bundle), "int8", threads=1)
    # the same line when the measurement runs in its child process (what predict/stream open)
    with pytest.raises(EdgecatError, match=r"^--backend auto: \S+ has no int8 export yet: run `edgecat export "):
        open_backend(Bundle.open(tiny_bundle), "auto", "int8", threads=1)
