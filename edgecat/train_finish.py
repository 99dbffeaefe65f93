"""The end of a training run, apart from the loop that trains: what is left in the bundle when the
run completes (best weights, history plot, evaluation, the manifest's training record, optional
.h5) or is interrupted (the best model so far and how to resume).

These steps read a :class:`FinishedRun`, a snapshot of what the run produced, and keep no state of
their own: :class:`edgecat.train.Trainer` fills one in and calls :func:`finish` or
:func:`finish_interrupted`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import EdgecatError
from edgecat.fsutil import atomic_path, write_json

log = logging.getLogger(__name__)


class TrainingInterrupted(EdgecatError):
    exit_code = 130


@dataclass
class TrainResult:
    bundle: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    timings: dict[str, Any] = field(default_factory=dict)
    #: the history row of the epoch whose model was kept (lowest val_loss)
    kept: dict[str, Any] = field(default_factory=dict)


@dataclass
class FinishedRun:
    """What a run hands to its finishing steps."""

    bundle: Bundle
    model: Any  # the Keras model as the last epoch left it
    checkpoint: Path  # the run's checkpoint folder (best/last weights, state)
    history: list[dict[str, Any]]
    timings: dict[str, Any]
    best_val_loss: float
    schedule: str
    cache_info: dict[str, Any]
    save_h5: bool
    data: str  # the --data the run was given
    #: TensorFlow Datasets runs (no files to re-read): builds the validation tf.data set; None otherwise
    val_ds_fn: Callable[[], Any] | None = None
    current: str = ""  # the phase running when the run stopped ("" in set-up)


def history_summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Which epoch was kept, and per stage its epochs, seconds per epoch and best validation
    accuracy (so stage 2's gain over stage 1 reads off the manifest)."""
    scored = [r for r in history if "val_loss" in r]
    kept = min(scored, key=lambda r: r["val_loss"]) if scored else {}
    stages: dict[str, Any] = {}
    for row in history:
        st = stages.setdefault(row["stage"], {"epochs": 0, "seconds": 0.0, "best_val_accuracy": None})
        st["epochs"] += 1
        st["seconds"] = round(st["seconds"] + float(row.get("seconds", 0.0)), 2)
        acc = row.get("val_accuracy")
        if acc is not None and (st["best_val_accuracy"] is None or acc > st["best_val_accuracy"]):
            st["best_val_accuracy"] = acc
    for st in stages.values():
        st["seconds_per_epoch"] = round(st["seconds"] / max(1, st["epochs"]), 2)
    out: dict[str, Any] = {"epochs": len(history), "kept": kept, "stages": stages}
    if "stage1" in stages and "stage2" in stages and None not in (
            stages["stage1"]["best_val_accuracy"], stages["stage2"]["best_val_accuracy"]):
        out["stage2_gain"] = round(stages["stage2"]["best_val_accuracy"] - stages["stage1"]["best_val_accuracy"], 4)
    return out


def save_best(bundle: Bundle, model: Any, checkpoint: Path, best_val_loss: float, epoch: int) -> None:
    """The bundle's Keras model and the checkpoint's best weights, both written atomically, so a
    kill at any moment leaves a loadable bundle."""
    with atomic_path(bundle.path / artifacts.file_of("keras")) as tmp:
        model.save(str(tmp))
    with atomic_path(checkpoint / "best.weights.h5", suffix=".weights.h5") as tmp:
        model.save_weights(str(tmp))
    bundle.add_artifact(
        "keras", artifacts.file_of("keras"), format="keras", precision="fp32",
        made_by={"tool": "edgecat train", "versions": tool_versions("tensorflow", "keras")},
        best={"val_loss": best_val_loss, "epoch": epoch},
    )


def finish_interrupted(run: FinishedRun) -> NoReturn:
    """Keep the best model so far (the model as it is, when no epoch ended), mark the bundle
    interrupted, and raise the line that says how to resume."""
    bundle = run.bundle
    if not (bundle.path / artifacts.file_of("keras")).exists() and run.model is not None:
        save_best(bundle, run.model, run.checkpoint, run.best_val_loss, len(run.history))
    bundle.manifest["status"] = "interrupted"
    bundle.manifest["history_summary"] = {"epochs": len(run.history), "interrupted_in": run.current}
    bundle.save()
    write_json(bundle.path / "history.json", run.history)
    raise TrainingInterrupted(
        f"training interrupted in {run.current or 'set-up'}; the best model so far is saved in "
        f"{bundle.path} (edgecat evaluate {bundle.path}); continue with "
        f"edgecat train --resume --out {bundle.path}"
    )


def finish(run: FinishedRun) -> TrainResult:
    """Best weights back in the model, history and plot, evaluation, the manifest's training
    record, the checkpoint removed, and the .h5 copy when asked for."""
    restore_best(run)
    metrics = evaluate_run(run)
    bundle = record_training(run)
    shutil.rmtree(run.checkpoint, ignore_errors=True)
    if run.save_h5:
        from edgecat.export.h5 import export_h5

        export_h5(bundle)
    kept = bundle.manifest["history_summary"].get("kept") or {}
    if kept:
        log.info("kept epoch %d (%s epoch %d, lowest val_loss %.4f, val_acc %.4f)", kept["epoch"], kept["stage"],
                 kept["stage_epoch"], kept["val_loss"], kept.get("val_accuracy", float("nan")))
    return TrainResult(bundle.path, metrics, run.history, run.timings, kept)


def restore_best(run: FinishedRun) -> None:
    """The model evaluated and kept is the best epoch's, not the last one's."""
    best = run.checkpoint / "best.weights.h5"
    if best.exists():
        run.model.load_weights(str(best))
    if not run.bundle.has("keras"):
        save_best(run.bundle, run.model, run.checkpoint, run.best_val_loss, len(run.history))


def evaluate_run(run: FinishedRun) -> dict[str, Any]:
    """History and its plot, then the metrics (which the evaluation also saves into the manifest)."""
    from edgecat.evaluate import evaluate_bundle, evaluate_dataset
    from edgecat.plots import plot_history

    write_json(run.bundle.path / "history.json", run.history)
    plot_history(run.history, run.bundle.path / "plots" / "history.png")
    if run.val_ds_fn is not None:  # TensorFlow Datasets: no files to re-read, use the val pipeline
        return evaluate_dataset(run.bundle, run.model, run.val_ds_fn(), run.data).metrics
    return evaluate_bundle(run.bundle, backend="keras", write=True).metrics


def record_training(run: FinishedRun) -> Bundle:
    """The manifest's training record and status "complete"; returns the bundle as saved."""
    bundle = Bundle.open(run.bundle.path)  # evaluation saved metrics into the manifest
    summary = history_summary(run.history)
    bundle.manifest["training"] = {"schedule": run.schedule, "timings": run.timings,
                                   "best_val_loss": run.best_val_loss, "epochs": len(run.history),
                                   "stages": summary["stages"], "feature_cache": run.cache_info or None}
    bundle.manifest["history_summary"] = summary  # replaces an earlier run's "interrupted_in"
    bundle.manifest["status"] = "complete"
    bundle.save()
    return bundle
