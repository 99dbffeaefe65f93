"""The golden path: a user's first real run, end to end, on real photos and ImageNet weights.

The README's default job (MobileNetV2, 224 px, two-stage) trained on ``../shared/data/cats-vs-dogs``
with the shared weights, exported to every CPU format in one command, then evaluated, predicted,
benchmarked and streamed with no backend named (auto). Every command runs as a user runs it: in
its own working folder (never the one training ran in), with ``COLUMNS`` unset, no terminal, and
stderr going to a file a service would keep. A second export of the same bundle runs while the big
one does, and nothing either writes may be lost. Needs ``../shared``; skips with the reason without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import needs_tf

SHARED = Path(__file__).resolve().parents[2] / "shared"
PHOTOS = SHARED / "data" / "cats-vs-dogs"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_224_no_top_imagenet_from_coral_tf2_ptq.h5"

pytestmark = [
    needs_tf,
    pytest.mark.golden,
    pytest.mark.timeout(5400),  # the first test also pays for the module's run (training is most of it)
    pytest.mark.skipif(not (PHOTOS.is_dir() and WEIGHTS.is_file()),
                       reason=f"needs the real photos and ImageNet weights in {SHARED} (not on this machine)"),
]

#: a folder name longer than any terminal, so a log line that cuts or wraps a path is caught
LONG = "photos-from-the-back-door-camera-of-the-shop-collected-over-the-whole-summer-season"
#: an unreadable file among the training photos, named as a phone camera names them
BROKEN = "IMG_20260704_183212_back-door-camera-burst-frame-000123-with-a-long-name.jpg"
#: FP32 accuracy the default job must reach on the 1,000 validation photos
MIN_ACCURACY = 0.99
#: how far each INT8 file's accuracy may fall below FP32's on the same photos
MAX_INT8_DROP = 0.005
#: FP16 keeps every label FP32 gives with p outside 0.5 +- this: its rounding moves this model's
#: logits by up to ~0.2 on these photos (p 0.45..0.55 at the boundary), so a photo FP32 puts inside
#: that band is a coin toss any rounding decides (one at p = 0.499 flipped in both FP16 files)
FP16_COIN_TOSS = 0.05


@dataclass
class Run:
    """Everything the path produced, for the assertions below."""

    root: Path
    data: Path
    bundle: Path
    logs: dict[str, str] = field(default_factory=dict)
    out: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def manifest(self) -> dict:
        return json.loads((self.bundle / "edgecat.json").read_text())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERM")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                     env.get("PYTHONPATH", "")) if p)
    return env


def _start(run: Run, name: str, cwd: Path, *args: str) -> tuple[subprocess.Popen, float]:
    """``python -m edgecat ARGS`` in ``cwd``: stdin closed, stdout a pipe, stderr a log file."""
    cwd.mkdir(parents=True, exist_ok=True)
    err = open(run.root / f"{name}.stderr.log", "w")  # noqa: SIM115 - closed by _finish
    proc = subprocess.Popen([sys.executable, "-m", "edgecat", *args], cwd=cwd, env=_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
    proc._log = err  # type: ignore[attr-defined]
    return proc, time.monotonic()


def _finish(run: Run, name: str, started: tuple[subprocess.Popen, float], timeout: float = 3600) -> str:
    proc, t0 = started
    out, _ = proc.communicate(timeout=timeout)
    proc._log.close()  # type: ignore[attr-defined]
    run.seconds[name] = time.monotonic() - t0
    run.logs[name] = (run.root / f"{name}.stderr.log").read_text()
    run.out[name] = out
    assert proc.returncode == 0, f"edgecat {name} exited {proc.returncode}:\n{run.logs[name][-3000:]}"
    return out


def _edgecat(run: Run, name: str, cwd: Path, *args: str, timeout: float = 3600) -> str:
    return _finish(run, name, _start(run, name, cwd, *args), timeout)


def _photos(root: Path) -> Path:
    """The shared photos linked under a long folder name, with one broken file among them."""
    data = root / LONG
    for split in ("train", "validation"):
        for cls in ("cats", "dogs"):
            folder = data / split / cls
            folder.mkdir(parents=True)
            for f in sorted((PHOTOS / split / cls).iterdir()):
                (folder / f.name).symlink_to(f)
    (data / "train" / "cats" / BROKEN).write_bytes(b"\xff\xd8\xff\xe0 this upload was cut short")
    return data


def _clip(photos: list[Path], path: Path) -> Path:
    """A short 640x480 MPEG-4 video of validation photos, as a doorbell camera would record."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    for f in photos:
        writer.write(cv2.resize(cv2.imread(str(f)), (640, 480), interpolation=cv2.INTER_AREA))
    writer.release()
    return path


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("golden")
    data = _photos(root)
    run = Run(root=root, data=data, bundle=root / "where-training-ran" / "runs" / "default")
    # the README's default job, as typed: no size, backbone or schedule flags
    _edgecat(run, "train", root / "where-training-ran", "train", "--data", str(data),
             "--weights", str(WEIGHTS), "--out", "runs/default")
    # one export of every CPU format, and a second export of the same bundle at the same time
    big = _start(run, "export", root / "export-folder", "export", str(run.bundle), "--fp16", "--int8", "--tflite")
    time.sleep(2.0)
    side = _start(run, "export-h5", root / "another-shell", "export", str(run.bundle), "--h5")
    _finish(run, "export-h5", side)
    _finish(run, "export", big)
    elsewhere = root / "somewhere-else"
    val = [PHOTOS / "validation" / c / f"{c[:-1]}.{i}.jpg" for c in ("cats", "dogs") for i in range(2000, 2006)]
    val = [f for f in val if f.is_file()] or sorted((PHOTOS / "validation" / "cats").iterdir())[:12]
    _edgecat(run, "evaluate", elsewhere, "evaluate", str(run.bundle), "--json")
    _edgecat(run, "predict", elsewhere, "predict", str(run.bundle), *map(str, val), "--format", "json")
    _edgecat(run, "bench", elsewhere, "bench", str(run.bundle), "--iters", "20", "--warmup", "3",
             "--json", "bench.json")
    clip = _clip(sorted((PHOTOS / "validation" / "dogs").iterdir())[:60], root / "doorbell.mp4")
    _edgecat(run, "stream", elsewhere, "stream", str(run.bundle), "--source", str(clip),
             "--sink", "jsonl://events.jsonl", "--json")
    summary = "\n".join(f"  {k}: {v:.0f} s" for k, v in run.seconds.items())
    print(f"golden path timings:\n{summary}")
    return run


def test_default_job_reaches_the_accuracy_bar(golden: Run) -> None:
    m = golden.manifest()
    val = m["metrics"]["validation"]
    assert val["n"] == 1000, f"validation split has {val['n']} photos, expected the 1,000 of ../shared"
    assert val["accuracy"] >= MIN_ACCURACY, f"validation accuracy {val['accuracy']:.3f} < {MIN_ACCURACY}"
    assert m["config"]["img_size"] == 224 and m["backbone"] == "mobilenet_v2", (m["config"], m["backbone"])


def test_every_export_is_recorded_with_its_file(golden: Run) -> None:
    """Both exports ran at once; the manifest keeps every entry either wrote, each file on disk."""
    arts = golden.manifest()["artifacts"]
    wanted = {"keras", "onnx-fp32", "onnx-fp16", "onnx-int8", "onnx-int8-trt",
              "tflite-fp32", "tflite-fp16", "tflite-int8", "keras-h5"}
    assert wanted <= set(arts), f"manifest lacks {sorted(wanted - set(arts))}"
    for key in wanted:
        assert (golden.bundle / arts[key]["file"]).is_file(), f"{key}: {arts[key]['file']} missing"
    from edgecat.bundle import Bundle

    status = Bundle.open(golden.bundle).verify()
    assert set(status.values()) == {"ok"}, f"not ok right after export: {status}"


def test_fp16_changes_only_coin_tosses_and_int8_keeps_the_accuracy(golden: Run) -> None:
    from edgecat.export.precision_table import FLIPS_LISTED

    table = golden.manifest()["metrics"]["precision_table"]
    assert table["images"] == 1000 and table["labelled"], table
    rows = {r["precision"]: r for r in table["rows"]}
    fp32 = rows["fp32"]["accuracy"]
    for fp16 in ("fp16", "tflite-fp16"):
        row = rows[fp16]
        assert len(row["flipped"]) == min(FLIPS_LISTED, round(1000 * (1 - row["agreement"]))), row
        assert row["confident_flips"] == 0 and (row["surest_flip"] is None
                                                or row["surest_flip"] < 0.5 + FP16_COIN_TOSS), (
            f"{fp16} changed {row['flipped']}, FP32 sure at p = {row['surest_flip']}")
    for int8 in ("int8", "int8-trt", "tflite-int8"):
        drop = round(fp32 - rows[int8]["accuracy"], 6)  # 0.992 - 0.987 is 0.0050000000000000044
        assert drop <= MAX_INT8_DROP, f"{int8} accuracy {rows[int8]['accuracy']:.3f} is {drop * 100:.1f} pp below FP32"
    # OpenVINO scores the ONNX files with its own kernels, recorded for a device without photos
    recorded = golden.manifest()["artifacts"]["onnx-int8"]["accuracy"].get("by_backend", {})
    assert ("int8 (openvino)" in rows) == ("openvino" in recorded) == bool(importlib.util.find_spec("openvino"))


def test_calibration_never_saw_the_validation_photos(golden: Run) -> None:
    calib = golden.manifest()["artifacts"]["onnx-int8"]["calibration"]
    assert "training split" in calib["source"] or Path(calib["source"]).name == "train", calib
    # the default method judged minmax on other training photos (the split holds 2,000) before keeping it
    assert calib["requested"] == "auto" and calib["tried"]["minmax"]["images"] == 64, calib
    assert calib["tried"][calib["method"]]["confident_flips"] == 0, calib


def test_commands_from_other_folders_use_the_bundle_and_its_data(golden: Run) -> None:
    from edgecat.int8_guard import AUTO_LIMITS

    metrics = json.loads(golden.out["evaluate"])
    fp32 = golden.manifest()["artifacts"]["onnx-fp32"]["accuracy"]["accuracy"]
    # auto may run a file that loses at most its bound against FP32 on these very photos
    floor = round(1000 * (fp32 - AUTO_LIMITS.max_accuracy_drop))
    assert metrics["n"] == 1000 and round(1000 * metrics["accuracy"]) >= floor, (metrics, fp32)
    preds = json.loads(golden.out["predict"])
    assert len(preds) == 12 and all(p["label"] in ("cats", "dogs") for p in preds), preds
    bench = json.loads((golden.root / "somewhere-else" / "bench.json").read_text())
    rows = bench["results"]
    failed = [(r["backend"], r["precision"], r["reason"]) for r in rows if r["status"] == "failed"]
    assert rows and not failed, failed
    assert any(r["backend"] == "auto" for r in rows), "bench with no backend named should time auto"
    stream = json.loads(golden.out["stream"])
    events = (golden.root / "somewhere-else" / "events.jsonl").read_text().splitlines()
    assert stream["frames"] == 60 and len(events) == 60, (stream, len(events))
    dogs = sum(json.loads(e)["label"] == "dogs" for e in events)
    assert dogs >= 57, f"only {dogs} of 60 dog frames called dogs"


def test_logs_a_service_keeps_name_the_skipped_file_whole(golden: Run) -> None:
    """stderr went to a file with no terminal: the skipped photo's line holds its whole path."""
    lines = [ln for ln in golden.logs["train"].splitlines() if BROKEN in ln]
    assert lines, "training's log does not name the broken photo:\n" + golden.logs["train"][-2000:]
    assert any(str(golden.data / "train" / "cats" / BROKEN) in ln for ln in lines), lines
    for name, log in golden.logs.items():
        assert "Traceback" not in log, f"{name} printed a traceback"
        padded = [ln for ln in log.splitlines() if ln != ln.rstrip()]
        assert not padded, f"{name}: lines padded with spaces: {padded[:3]}"
