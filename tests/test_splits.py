"""Where a bundle's own images are (splits.json): found from any working folder, after moving the
bundle together with its data, from records written by older versions, and a clear line naming the
folder when they are really gone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import needs_tf
from edgecat.bundle import Bundle
from edgecat.cli import main
from edgecat.data import checked, discover
from edgecat.splits import SPLITS_FILE, split_files, validation_files, write_splits


def _trained_here(work: Path, synth_data: Path, monkeypatch: pytest.MonkeyPatch, bundle: Path | None = None) -> Path:
    """What `edgecat train --data data --out runs/tiny` run in ``work`` records: a relative --data."""
    shutil.copytree(synth_data, work / "data")
    monkeypatch.chdir(work)
    if bundle is not None:
        shutil.copytree(bundle, work / "runs" / "tiny")
        b = Bundle.open("runs/tiny")
    else:
        b = Bundle.create("runs/tiny", name="tiny", backbone="mobilenet_v2", input_size=(48, 48),
                          classes=["cat", "dog"], preprocessing="tf")
    write_splits(b, checked(discover("data")))
    return work / "runs" / "tiny"


def test_relative_data_is_found_from_any_folder_and_after_a_move(tmp_path: Path, synth_data: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    bundle = _trained_here(work, synth_data, monkeypatch)
    rec = json.loads((bundle / SPLITS_FILE).read_text())
    assert rec["root"] == str(work / "data") and rec["root_from_bundle"] == "../../data"
    assert all(os.path.isabs(f) for part in ("train", "validation") for f, _ in rec[part])

    monkeypatch.chdir("/")  # `cd / && edgecat evaluate <work>/runs/tiny`
    b = Bundle.open(bundle)
    assert len(validation_files(b)) == 12 and len(split_files(b, "train")) == 36

    moved = tmp_path / "copied-elsewhere"  # the bundle moved together with its data
    shutil.move(work, moved)
    b = Bundle.open(moved / "runs" / "tiny")
    files = [f for f, _ in validation_files(b)]
    assert len(files) == 12 and all(f.startswith(str(moved / "data") + os.sep) for f in files)

    shutil.rmtree(moved / "data")  # really gone: say where it was looked for and what to pass
    assert validation_files(b) == []
    from edgecat.splits import missing_hint

    hint = missing_hint(b, "validation", "--data")
    assert str(work / "data") in hint and str(moved / "data") in hint and hint.endswith("pass --data DIR")


def test_older_relative_records_still_resolve(tmp_path: Path, synth_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A splits.json written before paths were recorded absolute: paths as given to --data."""
    work = tmp_path / "work"
    bundle = _trained_here(work, synth_data, monkeypatch)
    ds = discover("data")
    (bundle / SPLITS_FILE).write_text(json.dumps({
        "classes": ds.classes, "source": "data",
        "train": [[f, y] for f, y in zip(ds.train.files, ds.train.labels)],
        "validation": [[f, y] for f, y in zip(ds.val.files, ds.val.labels)]}))
    assert not os.path.isabs(ds.val.files[0])
    assert len(validation_files(Bundle.open("runs/tiny"))) == 12  # from the folder it was made in
    monkeypatch.chdir("/")
    found = validation_files(Bundle.open(bundle))  # elsewhere: the folder above the bundle that holds data/
    assert len(found) == 12 and all(Path(f).is_file() and os.path.isabs(f) for f, _ in found)
    shutil.rmtree(work / "data")
    from edgecat.splits import missing_hint

    assert "looked for data/ in the working folder" in missing_hint(Bundle.open(bundle), "train", "--calib")


@needs_tf
def test_commands_find_the_data_from_another_folder_and_say_when_it_is_gone(
        tmp_path: Path, synth_data: Path, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = _trained_here(tmp_path / "work", synth_data, monkeypatch, bundle=tiny_bundle)
    monkeypatch.chdir("/")
    res = CliRunner().invoke(main, ["evaluate", str(bundle), "--backend", "onnxruntime", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["n"] == 12

    shutil.rmtree(tmp_path / "work" / "data")
    res = CliRunner().invoke(main, ["evaluate", str(bundle), "--backend", "onnxruntime"])
    assert res.exit_code == 2
    assert f"bundle {bundle}: its validation images are not here" in res.stderr
    assert str(tmp_path / "work" / "data") in res.stderr and "pass --data DIR" in res.stderr

    res = CliRunner().invoke(main, ["export", str(bundle), "--int8"])
    assert res.exit_code == 2 and "its training images are not here" in res.stderr
    assert str(tmp_path / "work" / "data") in res.stderr and "pass --calib DIR" in res.stderr
    assert not (bundle / "model.int8.onnx").exists()

    res = CliRunner().invoke(main, ["export", str(bundle), "--fp16"])  # parity on random pixels: said
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert ("the parity check of model.fp16.onnx and the precision table ran on synthetic images "
            "(random pixels, not photos)") in said
    assert "its validation images are not here" in said and "pass --eval DIR" in said
