"""evaluate's files: a run on another folder gets its own metrics file, plots and manifest entry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from conftest import needs_tf
from edgecat.bundle import Bundle
from edgecat.cli import main


def _evaluate(bundle: Path, *args: str) -> dict:
    res = CliRunner().invoke(main, ["evaluate", str(bundle), "--backend", "onnxruntime", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


@needs_tf
def test_evaluate_on_another_folder_keeps_earlier_files(tiny_bundle: Path, synth_data: Path, tmp_path: Path) -> None:
    _evaluate(tiny_bundle)  # the bundle's own validation split
    own = tiny_bundle / "metrics-onnxruntime-fp32.json"
    plots = sorted((tiny_bundle / "plots").glob("*-onnxruntime-fp32.png"))
    before = {p: p.read_bytes() for p in [own, *plots]}
    assert json.loads(own.read_text())["n"] == 12 and len(plots) == 2

    cats = tmp_path / "cats-only" / "cat"  # another folder, another answer
    shutil.copytree(synth_data / "validation" / "cat", cats)
    other = _evaluate(tiny_bundle, "--data", str(cats.parent))
    assert other["n"] == 6
    assert {p: p.read_bytes() for p in before} == before  # nothing of the earlier run overwritten
    from edgecat.evaluate import data_slug

    slug = data_slug(cats.parent)
    assert slug.startswith("cats-only-") and slug != data_slug(tmp_path / "elsewhere" / "cats-only")
    assert json.loads((tiny_bundle / f"metrics-onnxruntime-fp32-{slug}.json").read_text())["n"] == 6
    for name in ("confusion_matrix", "val_grid"):
        assert (tiny_bundle / "plots" / f"{name}-onnxruntime-fp32-{slug}.png").stat().st_size > 0
    metrics = Bundle.open(tiny_bundle).manifest["metrics"]
    assert metrics["onnxruntime/fp32"]["n"] == 12 and metrics[f"onnxruntime/fp32@{slug}"]["n"] == 6
