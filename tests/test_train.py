"""Training: the two-stage schedule with the stage-1 feature cache, the full schedule, config files,
and interruption (exception in stage 2, SIGTERM to a real process) followed by --resume.

Tiny on purpose: 32 px, weights=None, one epoch per stage; nothing here checks accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import needs_tf
from edgecat.bundle import Bundle
from edgecat.config import TrainConfig
from edgecat.errors import EdgecatError

pytestmark = needs_tf


def _cfg(data: Path, out: Path, **kw: Any) -> TrainConfig:
    base = dict(data=str(data), out=str(out), weights="none", img_size=32, batch_size=16,
                stage1_epochs=1, stage2_epochs=1, unfreeze=20, tensorboard=False, seed=7)
    return TrainConfig(**(base | kw))


def test_two_stage_with_feature_cache(synth_data: Path, tmp_path: Path) -> None:
    from edgecat.train import train

    res = train(_cfg(synth_data, tmp_path / "run", schedule="two-stage", augment=False, tensorboard=True))
    b = Bundle.open(res.bundle)
    assert b.manifest["status"] == "complete"
    assert [r["stage"] for r in res.history] == ["stage1", "stage2"]
    assert res.timings["stage1"]["feature_cache"] is True
    assert res.timings["stage2"]["feature_cache"] is True  # the unfrozen tail trains on cached activations
    assert "feature_extraction_seconds" in res.timings["stage1"]
    assert b.manifest["training"]["schedule"] == "two-stage"
    cache = b.manifest["training"]["feature_cache"]
    assert cache["views"] == 1 and cache["train_images"] == 36 and cache["boundary"].endswith("_add")
    kept = b.manifest["history_summary"]["kept"]
    assert kept["val_loss"] == min(r["val_loss"] for r in res.history) and res.kept == kept
    assert b.manifest["config"]["stage2_lr"] == pytest.approx(1e-5)
    for f in ["model.keras", "history.json", "metrics.json", "splits.json", "data_report.json",
              "plots/history.png", "plots/confusion_matrix.png", "plots/val_grid.png"]:
        assert (b.path / f).is_file(), f
    assert any((b.path / "logs" / "stage2").rglob("events.out.tfevents*"))
    assert not (b.path / "checkpoint").exists()
    assert b.verify() == {"keras": "ok"}
    metrics = json.loads((b.path / "metrics.json").read_text())
    assert metrics["n"] == 12 and {"precision", "recall", "f1", "roc_auc", "confusion_matrix"} <= set(metrics)
    cm = metrics["confusion_matrix"]
    assert sum(map(sum, cm)) == 12 and metrics["accuracy"] == pytest.approx((cm[0][0] + cm[1][1]) / 12)
    # the recorded figure is what the saved model scores on the recorded validation split
    from edgecat.evaluate import evaluate_bundle

    again = evaluate_bundle(b.path, backend="keras", write=False).metrics
    assert (again["accuracy"], again["confusion_matrix"]) == (pytest.approx(metrics["accuracy"]), cm)


def test_feature_cache_trains_the_full_models_layers(synth_data: Path, tmp_path: Path) -> None:
    """Head (stage 1) and unfrozen tail (stage 2) trained on cached outputs are the model's own
    layers; layers before the cut keep the weights the run started from."""
    from edgecat.models import recalibrate_batchnorm
    from edgecat.train import Trainer

    snaps: dict[str, Any] = {}

    def snapshot(trainer: Trainer) -> dict[str, Any]:
        base = trainer.model.get_layer("backbone")
        out = {n: [w.copy() for w in base.get_layer(n).get_weights()] for n in ("Conv1", "Conv_1")}
        return out | {"head": trainer.model.get_layer("probabilities").get_weights()[0].copy()}

    class Snapshots(Trainer):
        def _prepare(self, weights: str, classes: list[str]) -> Any:
            strategy = super()._prepare(weights, classes)
            # a random MobileNetV2 with initial BatchNorm statistics saturates every ReLU6 (no
            # gradient reaches the tail): statistics from one batch make it a working network
            x = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype("float32")
            recalibrate_batchnorm(self.base, [x], 1)
            snaps["init"] = snapshot(self)
            return strategy

        def epoch_end(self, phase: Any, epoch: int, logs: dict[str, Any], seconds: float) -> None:
            snaps[phase.name] = snapshot(self)
            super().epoch_end(phase, epoch, logs, seconds)

    Snapshots(_cfg(synth_data, tmp_path / "run", schedule="two-stage", augment=False, stage1_lr=1e-2,
                   stage2_lr=1e-2)).run()
    init = snaps["init"]

    def same(a: list[Any], b: list[Any]) -> bool:
        return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

    assert same(snaps["stage2"]["Conv1"], init["Conv1"]), "a layer before the cut changed"
    assert same(snaps["stage1"]["Conv_1"], init["Conv_1"]), "stage 1 trained the backbone"
    assert not same(snaps["stage2"]["Conv_1"], init["Conv_1"]), "stage 2 did not train the unfrozen tail"
    assert not np.array_equal(snaps["stage1"]["head"], init["head"]), "stage 1 did not train the model's head"


def test_cached_tail_computes_what_the_model_computes() -> None:
    """The split is exact: model(x) == tail(boundary(x)); the boundary carries every live tensor."""
    import keras

    from edgecat.feature_cache import boundary_index, split_frozen, view_batches
    from edgecat.models import build_model

    keras.utils.set_random_seed(0)
    model, base = build_model("mobilenet_v2", img_size=32, weights="none")
    cut = len(base.layers) - 40
    b = boundary_index(base, cut)
    assert cut - 15 < b < cut
    split = split_frozen(model, base, cut)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    bnd, pooled = split.extractor(x)
    np.testing.assert_allclose(split.tail(bnd).numpy(), model(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(split.head(pooled).numpy(), model(x).numpy(), atol=1e-5)
    views = np.arange(3 * 4).reshape(3, 4, 1).astype("float16")
    data = view_batches(views, np.zeros(4), batch_size=4, seed=0, first_epoch=1)
    seen = []
    for _ in range(3):
        seen.append(sorted(data[0][0].ravel().tolist()))
        data.on_epoch_end()
    assert seen == [[4, 5, 6, 7], [8, 9, 10, 11], [0, 1, 2, 3]]  # epoch e trains on view e mod 3


def test_full_schedule_with_augmentation(synth_data: Path, tmp_path: Path, monkeypatch) -> None:
    """Also the epoch bar, drawn on a terminal console: a total although the image pipeline's size is
    unknown to Keras (36 images / batch 16 = 3 steps, not ``0/?``), and what it waits for before step 1."""
    import io

    from rich.console import Console

    from edgecat import log as edgecat_log
    from edgecat.train import train

    class Screen(io.StringIO):
        def isatty(self) -> bool:  # a terminal, as the bar needs (a forced colour on a pipe is not one)
            return True

    screen = Screen()
    monkeypatch.setattr(edgecat_log, "_STDERR_CONSOLE", Console(file=screen, force_terminal=True, width=160))
    res = train(_cfg(synth_data, tmp_path / "full", full_epochs=1))  # weights none -> full by default
    assert [r["stage"] for r in res.history] == ["full"]
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    assert re.search(r"full epoch 1/1 +\S* +3/3", drawn), drawn[-2000:]
    assert "full epoch 1/1 (starting: building the training step)" in drawn
    assert "0/?" not in drawn
    assert res.timings["full"]["feature_cache"] is False
    assert Bundle.open(res.bundle).manifest["training"]["schedule"] == "full"


def test_weights_none_runs_the_epochs_the_stages_asked_for(synth_data: Path, tmp_path: Path, caplog) -> None:
    """--weights none --stage1-epochs 1 --stage2-epochs 1: the full schedule (a frozen random backbone
    learns nothing) for 1 + 1 epochs, not --full-epochs' 6, and one line says so."""
    from edgecat.train import train

    with caplog.at_level(logging.INFO, logger="edgecat"):
        res = train(_cfg(synth_data, tmp_path / "run", augment=False))
    assert [r["stage"] for r in res.history] == ["full", "full"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("schedule:")]
    assert lines == ["schedule: full, 2 epoch(s) (--stage1-epochs 1 + --stage2-epochs 1), lr 0.001; --weights "
                     "none: a frozen random backbone would learn nothing, so every layer trains"], lines
    from edgecat.train import plan, resolve_schedule

    cfg = TrainConfig(weights="none", full_epochs=4)
    assert [(p.name, p.epochs) for p in plan(cfg, resolve_schedule(cfg))] == [("full", 4)]
    assert [(p.name, p.epochs) for p in plan(TrainConfig(weights="none"), "full")] == [("full", 6)]


def test_early_stopping_says_when_and_what_is_kept(synth_data: Path, tmp_path: Path, caplog) -> None:
    """A learning rate too small to move a float32 weight: val_loss never improves after epoch 1, so
    patience 0 stops stage 1 after epoch 2 of 3."""
    from edgecat.train import train

    cfg = _cfg(synth_data, tmp_path / "run", schedule="two-stage", stage1_epochs=3, stage2_epochs=0,
               stage1_lr=1e-30, patience=0, augment=False)
    with caplog.at_level(logging.INFO, logger="edgecat"):
        res = train(cfg)
    assert [r["stage_epoch"] for r in res.history] == [1, 2]
    stops = [r for r in caplog.records if "early stopping" in r.getMessage()]
    assert len(stops) == 1 and stops[0].levelno == logging.INFO
    line = stops[0].getMessage()
    assert line.startswith("stage1: early stopping after epoch 2/3: val_loss has not improved since stage1 epoch 1 ")
    assert "(patience 0); the bundle keeps epoch 1 (stage1 epoch 1, val_loss " in line, line


def test_interrupt_in_stage2_then_resume(synth_data: Path, tmp_path: Path) -> None:
    from edgecat.evaluate import evaluate_bundle
    from edgecat.train import Trainer, TrainingInterrupted

    class StopInStage2(Trainer):
        def epoch_end(self, phase: Any, epoch: int, logs: dict[str, Any], seconds: float) -> None:
            super().epoch_end(phase, epoch, logs, seconds)
            if phase.name == "stage2":
                raise KeyboardInterrupt  # what Ctrl-C raises in the main thread

    out = tmp_path / "run"
    cfg = _cfg(synth_data, out, schedule="two-stage", stage2_epochs=2)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        StopInStage2(cfg).run()
    b = Bundle.open(out)
    assert b.manifest["status"] == "interrupted"
    assert b.manifest["history_summary"]["interrupted_in"] == "stage2"
    assert (out / "checkpoint" / "last.weights.h5").exists()
    # the interrupted bundle is usable as it is
    res = evaluate_bundle(out, backend="keras", write=False)
    assert res.metrics["n"] == 12

    from edgecat.train import make_config

    cfg2 = make_config({"out": str(out)}, resume=True)
    assert cfg2.stage2_epochs == 2 and cfg2.img_size == 32
    done = Trainer(cfg2, resume=True).run()
    assert [r["stage"] for r in done.history] == ["stage1", "stage2", "stage2"]
    assert [r["stage_epoch"] for r in done.history] == [1, 1, 2]
    after = Bundle.open(out).manifest
    assert after["status"] == "complete"
    assert "interrupted_in" not in after["history_summary"] and after["history_summary"]["epochs"] == 3


def test_sigterm_keeps_a_loadable_bundle(synth_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgecat", "train", "--data", str(synth_data), "--weights", "none",
         "--img-size", "32", "--batch-size", "16", "--full-epochs", "50", "--patience", "50",
         "--no-tensorboard", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.time() + 480
        while not (out / "history.json").exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.time() < deadline, "no epoch finished in time"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "training interrupted" in output and "Traceback" not in output
    b = Bundle.open(out)
    assert b.manifest["status"] == "interrupted"
    assert b.verify() == {"keras": "ok"}


def test_config_file_and_flags(tmp_path: Path) -> None:
    from edgecat.train import make_config

    yml = tmp_path / "c.yaml"
    yml.write_text("train:\n  backbone: resnet50\n  stage1-epochs: 5\n  stage2_lr: 2.0e-5\n  img_size: 96\n")
    cfg = make_config({"stage1_epochs": 2, "data": "d"}, str(yml))
    assert (cfg.backbone, cfg.stage1_epochs, cfg.stage2_lr, cfg.img_size) == ("resnet50", 2, 2e-5, 96)
    toml = tmp_path / "c.toml"
    toml.write_text("unfreeze = 40\nschedule = 'full'\n")
    assert make_config({}, str(toml)).unfreeze == 40
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_setting: 1\n")
    with pytest.raises(EdgecatError, match="no_such_setting"):
        make_config({}, str(bad))


def test_existing_bundle_and_bad_resume(synth_data: Path, tmp_path: Path) -> None:
    from edgecat.train import make_config, train

    taken = Bundle.create(tmp_path / "taken", name="t", backbone="mobilenet_v2", input_size=(32, 32),
                          classes=["cat", "dog"], preprocessing="tf")
    taken.manifest["status"] = "complete"  # a finished run is never replaced (a dead one would be)
    taken.save()
    with pytest.raises(EdgecatError, match="already holds a bundle"):
        train(_cfg(synth_data, tmp_path / "taken"))
    with pytest.raises(EdgecatError, match="nothing to resume"):
        train(make_config({"out": str(tmp_path / "taken"), "data": str(synth_data)}, resume=True), resume=True)


def test_failed_run_is_marked_and_its_folder_reused(synth_data: Path, tmp_path: Path) -> None:
    from edgecat.train import train

    bad = tmp_path / "broken.weights.h5"
    bad.write_bytes(b"not an HDF5 file")
    out = tmp_path / "run"
    with pytest.raises(EdgecatError, match="cannot load weights"):
        train(_cfg(synth_data, out, weights=str(bad), schedule="two-stage"))
    failed = json.loads((out / "edgecat.json").read_text())
    assert failed["status"] == "failed" and "cannot load weights" in failed["error"]
    res = train(_cfg(synth_data, out, schedule="two-stage", stage2_epochs=0, augment=False))
    assert Bundle.open(res.bundle).manifest["status"] == "complete"


@needs_tf
def test_dataset_evaluation_records_the_training_result(tiny_bundle: Path) -> None:
    """TFDS runs have no files to re-read: metrics, plots and the manifest entry come from the
    validation tf.data set (the path `edgecat train --data tfds:cats_vs_dogs` ends with)."""
    import keras
    import tensorflow as tf

    from edgecat.evaluate import evaluate_dataset

    b = Bundle.open(tiny_bundle)
    model = keras.models.load_model(tiny_bundle / "model.keras")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (20, *b.input_size, 3)).astype("float32")
    y = np.array([0, 1] * 10, dtype="float32")
    res = evaluate_dataset(b, model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), "tfds:test")
    m = json.loads((tiny_bundle / "metrics.json").read_text())
    assert m["n"] == 20 and m["data"] == "tfds:test" and sum(map(sum, m["confusion_matrix"])) == 20
    np.testing.assert_allclose(res.probs, b.class_probs(model.predict(x, verbose=0)), atol=1e-5)
    assert (tiny_bundle / "plots" / "val_grid.png").stat().st_size > 0
    assert Bundle.open(tiny_bundle).manifest["metrics"]["validation"]["n"] == 20
