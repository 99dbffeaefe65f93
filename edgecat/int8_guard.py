"""Whether a reduced-precision file may stand in for FP32: judged by what a user notices.

Raw label agreement with FP32 counts a flip on a photo FP32 itself is unsure of (p = 0.49 -> 0.51)
as a failure, and one photo either side of a 99.5% threshold decides whether INT8 is used at all,
while it says nothing about accuracy. Two rules instead:

- ``accuracy_drop`` (labelled photos only): the candidate's accuracy may fall at most
  ``max_accuracy_drop`` below FP32's on the same photos (default 0.3 points);
- ``confident_flips``: of the photos FP32 is confident about (``|p - 0.5| > margin``, default 0.25,
  i.e. p < 0.25 or p > 0.75), at most ``max_confident_flips`` (default 0.3%) may change label.

Without labels only the second rule applies. The export judges its files with stricter targets
(:data:`EXPORT_LIMITS`, 0.2 / 0.2%) and records the figures in the manifest, so a device without
labelled photos can rely on :func:`judge_recorded`. Pure functions over probabilities: no runtime,
no bundle, importable anywhere (the edge side included).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: the confidence margin around 0.5 beyond which FP32's answer counts as confident
CONFIDENT_MARGIN = 0.25
#: manifest key holding the limits ``--backend auto`` applies to this bundle
#: (``{"max_accuracy_drop": .., "max_confident_flips": .., "margin": ..}``; written at export, editable)
MANIFEST_KEY = "int8_guard"
#: manifest key holding the targets ``edgecat export`` warns against (same fields)
TARGETS_KEY = "int8_targets"
RULES = ("accuracy_drop", "confident_flips")
#: key, in an artifact's recorded ``accuracy``, of the figures each other runtime scored the file
#: with (``{"openvino": {"accuracy", "agreement_with_fp32", "fidelity", ...}}``)
BY_BACKEND = "by_backend"


@dataclass(frozen=True)
class Limits:
    """Bounds as fractions: 0.003 is 0.3 points of accuracy / 0.3% of FP32's confident answers."""

    max_accuracy_drop: float = 0.003
    max_confident_flips: float = 0.003
    margin: float = CONFIDENT_MARGIN

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


#: what ``--backend auto`` allows by default
AUTO_LIMITS = Limits()
#: what ``edgecat export`` aims for and warns about: tighter than auto's, so a file that meets them
#: on the validation photos keeps auto's bounds on photos from elsewhere
EXPORT_LIMITS = Limits(max_accuracy_drop=0.002, max_confident_flips=0.002)


@dataclass(frozen=True)
class Fidelity:
    """A candidate's figures against FP32 on the same images."""

    images: int
    agreement: float
    confident: int
    confident_flips: int
    confident_flip_rate: float
    accuracy_fp32: float | None = None
    accuracy: float | None = None
    #: FP32 accuracy minus the candidate's (fraction; negative: the candidate scored better)
    accuracy_drop: float | None = None
    #: FP32's top-class probability on the surest photo whose label changed (None: none changed);
    #: near 0.5 means every flip was a coin toss that any rounding decides
    surest_flip: float | None = None

    @property
    def labelled(self) -> bool:
        return self.accuracy_drop is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    #: the rule that refused (one of RULES), None when accepted
    rule: str | None
    reason: str
    fidelity: Fidelity
    limits: Limits

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rule": self.rule, "reason": self.reason, "fidelity": self.fidelity.to_dict(),
                "limits": self.limits.to_dict()}


def _labels_and_confidence(p: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(label index, top-class probability) from P(positive class) per image ([n], [n, 1], or
    [n, 2] rows of [1 - p, p]) or per-class probabilities ([n, k], k > 2: argmax)."""
    p = np.asarray(p, np.float64)
    if p.ndim == 2 and p.shape[1] > 2:
        return p.argmax(axis=1), p.max(axis=1)
    p = p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p.reshape(-1)  # [1 - p, p] rows: P(positive)
    return (p >= threshold).astype(np.int64), np.maximum(p, 1.0 - p)


def fidelity(p_ref: np.ndarray, p: np.ndarray, labels: np.ndarray | None = None, threshold: float = 0.5,
             margin: float = CONFIDENT_MARGIN) -> Fidelity:
    """The candidate's figures against FP32: ``p_ref`` and ``p`` are probabilities on the same
    images (P(positive class) per image, or one row of class probabilities per image), ``labels``
    the true class indices where known; ``threshold`` turns P(positive) into a label."""
    ref_lab, ref_conf = _labels_and_confidence(p_ref, threshold)
    lab, _ = _labels_and_confidence(p, threshold)
    if ref_lab.shape != lab.shape:
        raise ValueError(f"FP32 and candidate outputs differ in shape: {np.shape(p_ref)} vs {np.shape(p)}")
    n = int(ref_lab.size)
    if n == 0:
        raise ValueError("no images to judge on")
    confident = ref_conf > 0.5 + margin
    changed = ref_lab != lab
    flips = int(np.sum(confident & changed))
    n_conf = int(confident.sum())
    acc_ref = acc = drop = None
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        if y.size != n:
            raise ValueError(f"{y.size} labels for {n} images")
        right_ref, right = int(np.sum(ref_lab == y)), int(np.sum(lab == y))
        acc_ref, acc, drop = right_ref / n, right / n, (right_ref - right) / n
    return Fidelity(images=n, agreement=float(np.mean(ref_lab == lab)), confident=n_conf, confident_flips=flips,
                    confident_flip_rate=flips / n_conf if n_conf else 0.0,
                    accuracy_fp32=acc_ref, accuracy=acc, accuracy_drop=drop,
                    surest_flip=float(ref_conf[changed].max()) if changed.any() else None)


def flipped(p_ref: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Indices of the images whose label the candidate changed, FP32's surest answer first: where
    a user looks first to see whether a flip matters."""
    ref_lab, ref_conf = _labels_and_confidence(p_ref, threshold)
    lab, _ = _labels_and_confidence(p, threshold)
    idx = np.flatnonzero(ref_lab != lab)
    return idx[np.argsort(-ref_conf[idx], kind="stable")]


def verdict(fid: Fidelity, limits: Limits = AUTO_LIMITS) -> Verdict:
    """Apply the rules to recorded or measured figures; the reason names the rule and its figures."""
    eps = 1e-9  # counts over n: a drop of exactly the bound passes
    flips = (f"{fid.confident_flips} of {fid.confident} answers FP32 is confident about flipped "
             f"({100 * fid.confident_flip_rate:.2f}%")
    if fid.accuracy_drop is not None and fid.accuracy_drop > limits.max_accuracy_drop + eps:
        return Verdict(False, "accuracy_drop",
                       f"accuracy_drop: accuracy {100 * fid.accuracy_fp32:.2f}% -> {100 * fid.accuracy:.2f}%, "  # type: ignore[operator]
                       f"{100 * fid.accuracy_drop:.2f} points lost > {100 * limits.max_accuracy_drop:.2f} allowed "
                       f"on {fid.images} labelled images", fid, limits)
    if fid.confident_flip_rate > limits.max_confident_flips + eps:
        return Verdict(False, "confident_flips",
                       f"confident_flips: {flips} > {100 * limits.max_confident_flips:.2f}% allowed) "
                       f"on {fid.images} images", fid, limits)
    acc = (f"accuracy {-100 * fid.accuracy_drop:+.2f} points (>= -{100 * limits.max_accuracy_drop:.2f}), "
           if fid.accuracy_drop is not None else "no labels (confident-answer rule only), ")
    return Verdict(True, None, f"{acc}{flips} <= {100 * limits.max_confident_flips:.2f}%) on {fid.images} images",
                   fid, limits)


def judge(p_ref: np.ndarray, p: np.ndarray, labels: np.ndarray | None = None, limits: Limits = AUTO_LIMITS,
          threshold: float = 0.5) -> Verdict:
    """:func:`fidelity` then :func:`verdict`: the candidate refused by the first rule it breaks."""
    return verdict(fidelity(p_ref, p, labels, threshold, limits.margin), limits)


def judge_recorded(recorded: Mapping[str, Any], limits: Limits = AUTO_LIMITS) -> Verdict | None:
    """The verdict on figures the export recorded (an artifact entry's ``accuracy.fidelity``), for a
    machine without labelled photos; None when nothing usable was recorded."""
    try:
        fid = Fidelity(**{k: recorded[k] for k in Fidelity.__dataclass_fields__ if k in recorded})
    except TypeError:
        return None
    return verdict(fid, limits)


def limits_from_manifest(manifest: Mapping[str, Any], default: Limits = AUTO_LIMITS, key: str = MANIFEST_KEY) -> Limits:
    """A bundle's own limits (manifest ``key``: ``int8_guard`` for auto, ``int8_targets`` for the
    export), else ``default``'s; a value that is not a number in [0, 0.5) is ignored."""
    own = manifest.get(key) or {}
    values = {}
    for key in ("max_accuracy_drop", "max_confident_flips", "margin"):
        v = own.get(key) if isinstance(own, Mapping) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 0.5:
            values[key] = float(v)
    return Limits(**{**default.to_dict(), **values})


__all__ = ["AUTO_LIMITS", "BY_BACKEND", "CONFIDENT_MARGIN", "EXPORT_LIMITS", "MANIFEST_KEY", "TARGETS_KEY", "Fidelity", "Limits",
           "RULES", "Verdict",
           "fidelity", "flipped", "judge", "judge_recorded", "limits_from_manifest", "verdict"]
