"""One output comparison for every export step and the precision table (as Optimum's
``validate_model_outputs``): output names, then shapes, then finiteness, then values; every failure is
collected into a :class:`ValidationReport` before a :class:`ParityError` carrying the figures is raised.

Values are compared in one of three spaces: ``raw`` (the model's own outputs: ONNX vs Keras, h5 vs
Keras), ``probs`` (class probabilities: INT8, TensorRT) or ``logits`` (centred class log-probabilities
with a bound that grows with the largest logit: FP16, whose error scales with a value's size while a
saturating probability hides it). The report's :meth:`ValidationReport.parity` is what the manifest
records under an artifact's ``parity`` (keys ``reference``, ``images``, ``max_abs_diff``,
``label_agreement`` kept as before, so older bundles and readers still agree).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecat.bundle import Bundle
from edgecat.errors import EdgecatError

log = logging.getLogger(__name__)

Outputs = np.ndarray | Mapping[str, np.ndarray]
SPACES = ("raw", "probs", "logits")
class ParityError(EdgecatError):
    """A converted model does not match its reference; ``report`` carries the figures."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


class FilesRefused(EdgecatError):
    """Some of a step's files failed their parity checks. ``entries`` are the files that passed and
    were written, so the caller can carry on (score them, do the later steps) and report the
    refusals at the end instead of losing that work; uncaught, it is still one error line."""

    def __init__(self, errors: list[str], entries: list[dict[str, Any]]) -> None:
        more = f" (and {len(errors) - 1} more refused)" if len(errors) > 1 else ""
        super().__init__(errors[0] + more)
        self.errors = errors
        self.entries = entries


@dataclass
class ValidationReport:
    reference: str
    images: str
    max_abs_diff: float = float("nan")
    mean_abs_diff: float = float("nan")
    label_agreement: float | None = None
    tolerance: float | None = None
    #: space-specific figures recorded with the parity (FP16: max_logit_diff, logit_bound)
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def parity(self) -> dict[str, Any]:
        """The manifest's ``parity`` entry."""
        out: dict[str, Any] = {"reference": self.reference, "images": self.images,
                               "max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff}
        if self.label_agreement is not None:
            out["label_agreement"] = self.label_agreement
        if self.tolerance is not None:
            out["tolerance"] = self.tolerance
        return {**out, **self.extra}

    def raise_if_failed(self, candidate: str, reference: str, consequence: str = "") -> ValidationReport:
        """Raise one ParityError line naming every problem, e.g. ``FP16 model does not match FP32: ...``."""
        if self.problems:
            agree = "" if self.label_agreement is None else f", labels {100 * self.label_agreement:.1f}% equal"
            tail = f"; {consequence}" if consequence else ""
            raise ParityError(f"{candidate} does not match {reference}: {'; '.join(self.problems)} "
                              f"on {self.images}{agree}{tail}", self)
        return self


def logits(bundle: Bundle, raw: np.ndarray) -> np.ndarray:
    """Class log-probabilities centred per image (for a sigmoid output, +-logit/2)."""
    probs = np.clip(np.asarray(bundle.class_probs(raw), dtype=np.float64), 1e-12, 1.0)
    logp = np.log(probs)
    return logp - logp.mean(axis=1, keepdims=True)


def _structure(reference: Outputs, candidate: Outputs, report: ValidationReport) -> tuple[np.ndarray, np.ndarray]:
    """Names and shapes; the first (or ``probabilities``) output of each for the value checks."""
    if isinstance(reference, Mapping) and isinstance(candidate, Mapping):
        if set(reference) != set(candidate):
            report.problems.append(f"output names differ ({sorted(reference)} vs {sorted(candidate)})")
        name = "probabilities" if "probabilities" in reference else next(iter(reference))
        ref, got = np.asarray(reference[name]), np.asarray(candidate.get(name, next(iter(candidate.values()))))
    else:
        ref, got = np.asarray(reference), np.asarray(candidate)
    if ref.shape != got.shape:
        report.problems.append(f"output shape {got.shape} instead of {ref.shape}")
    return ref.astype(np.float32), got.astype(np.float32)


def validate(reference: Outputs, candidate: Outputs, images: str, tolerance: float | None = None, *,
             bundle: Bundle, reference_name: str, space: str = "probs", floor: float = 0.0,
             min_agreement: float | None = None, name: str = "") -> ValidationReport:
    """Compare ``candidate``'s outputs with ``reference``'s on the same ``images`` (a description).
    ``name``: the candidate's file, for the debug log (the caller reports the result to the user:
    an export's result line, the precision table; logging it here too would print it twice).

    ``tolerance`` bounds the max difference in ``space`` (None: recorded, not enforced); in ``logits``
    the bound is ``floor + tolerance * max|reference logit|``; ``min_agreement`` is the smallest share
    of equal labels accepted. Non-finite outputs and a different output structure always fail."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}")
    report = ValidationReport(reference=reference_name, images=images, tolerance=tolerance)
    ref, got = _structure(reference, candidate, report)
    if not np.all(np.isfinite(got)):
        report.problems.append("non-finite outputs (an overflow, e.g. fp16 in the preprocessing)")
    if report.problems:
        return report
    p_ref, p_got = bundle.class_probs(ref), bundle.class_probs(got)
    diff = np.abs(ref - got) if space == "raw" else np.abs(p_ref - p_got)
    report.max_abs_diff, report.mean_abs_diff = float(np.max(diff)), float(np.mean(diff))
    report.label_agreement = float(np.mean(np.array(bundle.labels_from_probs(p_ref))
                                           == np.array(bundle.labels_from_probs(p_got))))
    if space == "logits":
        z_ref, z_got = logits(bundle, ref), logits(bundle, got)
        worst = float(np.max(np.abs(z_ref - z_got)))
        bound = floor + (tolerance or 0.0) * float(np.max(np.abs(z_ref)))
        report.extra.update(max_logit_diff=worst, logit_bound=bound)
        if tolerance is not None and not worst <= bound:
            report.problems.append(f"max logit difference {worst:.3g} > {bound:.3g} "
                                   f"({floor:g} + {tolerance:g} x largest |logit|)")
    elif tolerance is not None and not report.max_abs_diff <= tolerance:
        report.problems.append(f"max abs difference {report.max_abs_diff:.3g} > {tolerance:g}")
    if min_agreement is not None and report.label_agreement < min_agreement:
        report.problems.append(f"only {100 * report.label_agreement:.0f}% of the labels kept "
                               f"(< {100 * min_agreement:.0f}%)")
    log.debug("%s vs %s (%s) on %s: max diff %.3g, labels %.1f%% equal%s", name or "candidate", reference_name,
              space, images, report.max_abs_diff, 100 * report.label_agreement, "" if report.ok else " (FAILED)")
    return report


__all__ = ["ParityError", "ValidationReport", "logits", "validate"]
