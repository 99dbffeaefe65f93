"""The INT8 guard's rules (pure functions over probabilities: no runtime, no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from edgecat import int8_guard as g


def _case(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """FP32 probabilities: 900 confident (0.05 / 0.95), 100 unsure (0.45 / 0.55); labels = FP32's."""
    p = np.where(np.arange(n) % 2 == 0, 0.05, 0.95)
    p[:100] = np.where(np.arange(100) % 2 == 0, 0.45, 0.55)
    return p, (p >= 0.5).astype(int)


def test_unsure_flips_pass_where_raw_agreement_would_refuse():
    """Ten flips, all on photos FP32 is unsure of, and accuracy kept: agreement 99.0% (below the old
    99.5% threshold) but nothing a user notices, so the guard accepts."""
    p, y = _case()
    q = p.copy()
    q[[0, 2, 4, 6, 8]] = 0.55  # unsure cats -> dogs: truly dogs (below), so INT8 fixes five
    q[[1, 3, 5, 7, 9]] = 0.45  # unsure dogs -> cats: INT8 breaks five FP32 had right
    y2 = y.copy()
    y2[[0, 2, 4, 6, 8]] = 1
    v = g.judge(p, q, y2)
    assert v.fidelity.agreement == pytest.approx(0.99)
    assert v.fidelity.confident_flips == 0 and v.fidelity.confident == 900
    assert v.fidelity.accuracy_drop == pytest.approx(0.0)
    assert v.ok and v.rule is None
    assert v.fidelity.surest_flip == pytest.approx(0.55)  # every flip a coin toss
    assert list(g.flipped(p, q)) == list(range(10))


def test_flips_are_listed_surest_first():
    p = np.array([0.9, 0.52, 0.3, 0.99, 0.6])
    q = np.array([0.4, 0.49, 0.3, 0.2, 0.6])
    assert list(g.flipped(p, q)) == [3, 0, 1]
    assert g.fidelity(p, q).surest_flip == pytest.approx(0.99)
    assert g.fidelity(p, p).surest_flip is None and len(g.flipped(p, p)) == 0


def test_accuracy_rule_refuses_and_says_so():
    p, y = _case()
    q = p.copy()
    q[[1, 3, 5, 7]] = 0.45  # four unsure photos FP32 had right now wrong: -0.4 points, no confident flip
    v = g.judge(p, q, y)
    assert not v.ok and v.rule == "accuracy_drop"
    assert v.reason.startswith("accuracy_drop:") and "0.40 points lost > 0.30 allowed" in v.reason
    assert v.fidelity.confident_flips == 0
    # the same figures pass a looser bound, and exactly the bound passes
    assert g.judge(p, q, y, g.Limits(max_accuracy_drop=0.004)).ok
    # without labels the accuracy rule cannot apply
    assert g.judge(p, q).ok


def test_confident_flip_rule_refuses_with_and_without_labels():
    p, y = _case()
    q = p.copy()
    q[[100, 101, 102, 103]] = 1 - q[[100, 101, 102, 103]]  # 4 of 900 confident answers flipped: 0.44%
    y2 = y.copy()
    y2[[100, 101]] = 1 - y2[[100, 101]]  # two of them FP32 had wrong: accuracy drop only 0 points
    for labels in (y2, None):
        v = g.judge(p, q, labels)
        assert not v.ok and v.rule == "confident_flips", v.reason
        assert "4 of 900 answers FP32 is confident about flipped (0.44%" in v.reason
    assert g.judge(p, q, y2).fidelity.accuracy_drop == pytest.approx(0.0)
    assert g.judge(p, q, y2, g.Limits(max_confident_flips=0.005)).ok


def test_margin_decides_what_counts_as_confident():
    p, y = _case()
    q = p.copy()
    q[[1, 3, 5]] = 0.45  # unsure (0.55) answers flipped
    assert g.fidelity(p, q).confident_flips == 0
    assert g.fidelity(p, q, margin=0.0).confident_flips == 3


def test_class_probability_rows_and_threshold():
    """[n, 2] rows of [1 - p, p] judge as P(positive) with the bundle's threshold."""
    p = np.array([0.1, 0.3, 0.9, 0.95])
    q = np.array([0.1, 0.35, 0.9, 0.95])
    rows = lambda v: np.stack([1 - v, v], axis=1)  # noqa: E731
    assert g.fidelity(rows(p), rows(q), threshold=0.32).agreement == 0.75
    assert g.fidelity(rows(p), rows(q)).agreement == 1.0
    with pytest.raises(ValueError, match="labels"):
        g.fidelity(p, q, np.array([0, 1]))


def test_recorded_figures_and_manifest_limits():
    p, y = _case()
    q = p.copy()
    q[[100, 101, 102, 103]] = 1 - q[[100, 101, 102, 103]]
    recorded = g.fidelity(p, q, y).to_dict()
    v = g.judge_recorded(recorded)
    assert v is not None and v.rule == "accuracy_drop"  # the first rule broken is the one named
    assert g.judge_recorded({**recorded, "accuracy_drop": None}).rule == "confident_flips"
    assert g.judge_recorded({"images": 3}) is None
    assert g.judge_recorded(recorded, g.Limits(max_accuracy_drop=0.01, max_confident_flips=0.01)).ok
    lim = g.limits_from_manifest({"int8_guard": {"max_accuracy_drop": 0.01, "max_confident_flips": "x"}})
    assert lim.max_accuracy_drop == 0.01 and lim.max_confident_flips == g.AUTO_LIMITS.max_confident_flips
    assert g.limits_from_manifest({}, g.EXPORT_LIMITS, g.TARGETS_KEY) == g.EXPORT_LIMITS
    assert g.verdict(g.fidelity(p, q, y), lim).to_dict()["limits"]["max_accuracy_drop"] == 0.01
