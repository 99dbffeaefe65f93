"""edgecat.validate: the one output comparison every export step and the precision table use."""

from __future__ import annotations

import numpy as np
import pytest

from edgecat.bundle import Bundle
from edgecat.validate import ParityError, validate


@pytest.fixture()
def bundle(tmp_path):
    return Bundle.create(tmp_path / "b", name="b", backbone="mobilenet_v2", input_size=(32, 32),
                         classes=["cat", "dog"], preprocessing="mobilenet_v2")


def test_figures_and_manifest_keys(bundle):
    ref = np.array([[0.9], [0.2], [0.6]], np.float32)  # sigmoid outputs: dog probability
    got = ref + np.array([[0.01], [-0.02], [-0.2]], np.float32)  # the last one crosses the threshold
    report = validate(ref, got, "3 test images", bundle=bundle, reference_name="onnx-fp32")
    assert report.ok and report.tolerance is None  # no bound given: recorded, not enforced
    assert report.max_abs_diff == pytest.approx(0.2, abs=1e-6)
    assert report.mean_abs_diff == pytest.approx((0.01 + 0.02 + 0.2) / 3, abs=1e-6)
    assert report.label_agreement == pytest.approx(2 / 3)
    parity = report.parity()
    assert {"reference", "images", "max_abs_diff", "label_agreement"} <= set(parity)  # what old bundles hold
    assert parity["reference"] == "onnx-fp32" and parity["images"] == "3 test images"


def test_failures_are_collected_and_raised_with_the_figures(bundle):
    ref = np.array([[0.9], [0.2]], np.float32)
    report = validate(ref, ref + 0.05, "2 images", 1e-3, bundle=bundle, reference_name="keras", space="raw")
    assert not report.ok and "max abs difference 0.05 > 0.001" in report.problems[0]
    with pytest.raises(ParityError, match=r"ONNX export does not match Keras: max abs difference .* on 2 images.*"
                                          r"; no model.onnx written") as info:
        report.raise_if_failed("ONNX export", "Keras", "no model.onnx written")
    assert info.value.report.max_abs_diff == pytest.approx(0.05, abs=1e-6)


def test_structure_and_non_finite_outputs_fail_whatever_the_tolerance(bundle):
    ref = {"probabilities": np.array([[0.9], [0.2]], np.float32)}
    renamed = validate(ref, {"output_0": ref["probabilities"]}, "x", bundle=bundle, reference_name="r")
    assert any("output names differ" in p for p in renamed.problems)
    reshaped = validate(ref["probabilities"], np.zeros((3, 1), np.float32), "x", bundle=bundle, reference_name="r")
    assert any("shape" in p for p in reshaped.problems)
    overflow = validate(ref["probabilities"], np.array([[np.nan], [0.2]], np.float32), "x", bundle=bundle,
                        reference_name="r")
    assert overflow.problems == ["non-finite outputs (an overflow, e.g. fp16 in the preprocessing)"]


def test_logit_space_bound_grows_with_the_logits(bundle):
    ref = np.array([[0.999], [0.001], [0.5]], np.float32)  # centred logits up to ~3.45
    near = np.array([[0.9988], [0.0012], [0.5]], np.float32)  # a small logit change on a large logit
    ok = validate(ref, near, "x", 2e-2, bundle=bundle, reference_name="onnx-fp32", space="logits", floor=5e-2)
    assert ok.ok and ok.extra["max_logit_diff"] < ok.extra["logit_bound"]
    assert ok.extra["logit_bound"] == pytest.approx(5e-2 + 2e-2 * float(np.log(0.999 / 0.001)) / 2, rel=1e-3)
    flipped = validate(ref, ref[::-1].copy(), "x", 2e-2, bundle=bundle, reference_name="onnx-fp32", space="logits",
                       floor=5e-2)
    assert not flipped.ok and "max logit difference" in flipped.problems[0]
