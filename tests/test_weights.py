"""``--weights imagenet`` offline: the official file is found where edgecat and Keras look, and
without it the error names the file and the folder, before any run folder exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecat.errors import EdgecatError
from edgecat import weights


def test_official_names_follow_keras() -> None:
    assert weights.official_file("MobileNetV2", 160)[0] == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    assert weights.official_file("MobileNetV2", 200)[0].endswith("_1.0_224_no_top.h5")  # Keras' fallback
    name, url = weights.official_file("ResNet50", 224)
    assert name == "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" and url.endswith("/resnet/" + name)
    assert weights.official_file("EfficientNetB3", 300)[0] == "efficientnetb3_notop.h5"
    with pytest.raises(EdgecatError, match="--weights PATH"):
        weights.official_file("NoSuchNet", 224)


def test_found_in_edgecat_weights_dir_then_keras_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine, keras_home = tmp_path / "mine", tmp_path / "keras"
    monkeypatch.setenv("EDGECAT_WEIGHTS_DIR", str(mine))
    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    name = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / name).write_bytes(b"x")
    assert weights.locate_imagenet("ResNet50", 224) == keras_home / "models" / name
    mine.mkdir()
    (mine / name).write_bytes(b"x")
    assert weights.locate_imagenet("ResNet50", 224) == mine / name  # EDGECAT_WEIGHTS_DIR wins


def test_offline_error_names_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGECAT_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    monkeypatch.setattr(weights, "_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(EdgecatError) as err:
        weights.locate_imagenet("MobileNetV2", 224)
    msg = str(err.value)
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5" in msg
    assert str(tmp_path / "w") in msg and "--weights PATH" in msg and "\n" not in msg


def test_train_fails_before_making_a_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgecat.cli import main
    from click.testing import CliRunner

    pytest.importorskip("tensorflow")
    monkeypatch.setenv("EDGECAT_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    monkeypatch.setattr(weights, "_reachable", lambda url, timeout=3.0: False)
    (tmp_path / "data").mkdir()
    out = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "data"), "--out", str(out)])
    assert res.exit_code != 0 and "no_top.h5" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_found_file_is_staged_where_keras_reads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keras then builds with weights='imagenet' offline (EfficientNet's ImageNet normalisation
    layer exists only on that path), reading the very file found."""
    cache = tmp_path / "keras-cache" / "models"
    monkeypatch.setattr(weights, "keras_cache_dir", lambda: cache)
    found = tmp_path / "w" / "efficientnetb0_notop.h5"
    found.parent.mkdir()
    found.write_bytes(b"weights")
    weights.stage_for_keras(found)
    assert (cache / found.name).resolve() == found.resolve()
    weights.stage_for_keras(found)  # idempotent
