"""Data discovery (three layouts), image checks (bad and odd files), and the tf.data pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import needs_tf
from edgecat.data import check_images, checked, discover
from edgecat.errors import EdgecatError
from edgecat.synthetic import make_dataset, make_image


def test_split_layout(synth_data: Path) -> None:
    ds = discover(synth_data)
    assert ds.classes == ["cat", "dog"]
    assert ds.layout.endswith("train+validation")
    assert len(ds.train) == 36 and len(ds.val) == 12
    assert ds.val.counts(ds.classes) == {"cat": 6, "dog": 6}


def test_flat_layout_stratified_seeded(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "flat", per_class=20, size=32, layout="flat")
    a = discover(root, val_split=0.25, seed=1)
    b = discover(root, val_split=0.25, seed=1)
    c = discover(root, val_split=0.25, seed=2)
    assert a.val.files == b.val.files
    assert a.val.files != c.val.files
    assert a.val.counts(a.classes) == {"cat": 5, "dog": 5}
    assert not set(a.train.files) & set(a.val.files)


def test_kaggle_layout(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "kaggle", per_class=10, size=32, layout="kaggle")
    ds = discover(root, val_split=0.2)
    assert ds.layout.startswith("kaggle")
    assert ds.classes == ["cat", "dog"]
    for f, y in zip(ds.train.files + ds.val.files, ds.train.labels + ds.val.labels, strict=True):
        assert Path(f).name.startswith(ds.classes[y] + ".")
    # the same naming under DIR/train/ works too
    (tmp_path / "k2").mkdir()
    os.rename(root, tmp_path / "k2" / "train")
    assert discover(tmp_path / "k2").classes == ["cat", "dog"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda r: None, "not found"),
        (lambda r: (r / "cat").mkdir(parents=True) or (r / "dog").mkdir(), "no images"),
        (lambda r: make_dataset(r, per_class=3, size=32, layout="flat") and
         [f.unlink() for f in (r / "dog").iterdir()], "with no images"),
        (lambda r: make_dataset(r, per_class=3, size=32, layout="flat") and
         __import__("shutil").rmtree(r / "dog"), "only one class"),
    ],
    ids=["missing", "empty-classes", "empty-class", "single-class"],
)
def test_bad_folders(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(EdgecatError, match=message):
        discover(root)


def _bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each awkward kind; returns name -> expected status."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = make_image(0, 48, np.random.default_rng(0))
    im = Image.fromarray(rgb)
    (folder / "zero.jpg").write_bytes(b"")
    im.save(folder / "full.jpg", format="JPEG")
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.jpg").write_text("this is not an image\n")
    im.save(folder / "png_named.jpg", format="PNG")
    im.convert("CMYK").save(folder / "cmyk.jpg", format="JPEG")
    im.convert("L").save(folder / "gray.jpg", format="JPEG")
    im.convert("RGBA").save(folder / "rgba.png", format="PNG")
    im.save(folder / "pic.bmp", format="BMP")
    im.save(folder / "pic.webp", format="WEBP")
    im.convert("P").save(folder / "pic.gif", format="GIF")
    return {
        "zero.jpg": "skipped", "truncated.jpg": "skipped", "text.jpg": "skipped",
        "full.jpg": "ok", "png_named.jpg": "converted", "cmyk.jpg": "converted",
        "gray.jpg": "converted", "rgba.png": "converted", "pic.bmp": "converted",
        "pic.webp": "converted", "pic.gif": "converted",
    }


def test_check_images_statuses_and_cache(tmp_path: Path) -> None:
    expected = _bad_files(tmp_path / "imgs")
    files = [str(tmp_path / "imgs" / n) for n in expected]
    res = check_images(files)
    got = {Path(f).name: r.status for f, r in res.items()}
    assert got == expected
    assert "empty" in res[files[0]].reason
    assert "truncated" in res[str(tmp_path / "imgs" / "truncated.jpg")].reason
    assert res[str(tmp_path / "imgs" / "text.jpg")].reason == "not an image"
    for r in res.values():
        if r.status == "converted":
            with Image.open(r.use) as im:
                assert im.mode == "RGB" and im.format == "PNG"
    # cached: same answers; a changed file is checked again
    again = check_images(files)
    assert {f: r.status for f, r in again.items()} == {f: r.status for f, r in res.items()}
    Image.fromarray(make_image(1, 48)).save(tmp_path / "imgs" / "text.jpg", format="JPEG")
    assert check_images([str(tmp_path / "imgs" / "text.jpg")])[str(tmp_path / "imgs" / "text.jpg")].status == "ok"


def test_checked_dataset_reports_exactly_the_bad_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", per_class=8, size=32, layout="split")
    expected = _bad_files(root / "train" / "cat")
    ds = checked(discover(root))
    rep = ds.checks
    skipped = sorted(Path(d["file"]).name for d in rep["skipped"])
    converted = sorted(Path(d["file"]).name for d in rep["converted"])
    assert skipped == sorted(n for n, s in expected.items() if s == "skipped")
    assert converted == sorted(n for n, s in expected.items() if s == "converted")
    assert len(ds.train) == 12 + sum(s != "skipped" for s in expected.values())
    assert rep["checked"] == 16 + len(expected)


@needs_tf
def test_pipeline_decodes_every_checked_file(tmp_path: Path) -> None:
    from edgecat.input_pipeline import image_dataset

    root = make_dataset(tmp_path / "d", per_class=4, size=40, layout="split", val_fraction=0.5)
    _bad_files(root / "train" / "dog")
    ds = checked(discover(root))
    batches = list(image_dataset(ds.train, (32, 32), 4, training=True, augment=True, seed=0))
    n = sum(int(x.shape[0]) for x, _ in batches)
    assert n == len(ds.train)  # nothing dropped: converted files decode, bad ones were removed
    x, y = batches[0]
    assert tuple(x.shape[1:]) == (32, 32, 3)
    assert float(np.max(x)) <= 255.0 and float(np.max(x)) > 1.0  # raw 0-255, not rescaled


@needs_tf
def test_tfds_offline_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    from edgecat.input_pipeline import tfds_splits

    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(EdgecatError, match="pass a local folder with --data"):
        tfds_splits("cats_vs_dogs")
