"""Signed bundles: keygen, sign, and the refusal of unsigned, wrongly signed or changed bundles."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgecat.bundle import Bundle
from edgecat.cli import main
from edgecat.errors import EdgecatError
from edgecat.signing import SIGNATURE, TRUSTED_ENV, keygen, open_trusted, sign_bundle, verify_bundle


def _bundle(root: Path) -> Path:
    """A bundle with one small artifact (signing looks at bytes and hashes, not at the model)."""
    b = Bundle.create(root, name="signed", backbone="none", input_size=(32, 32), classes=["cat", "dog"],
                      preprocessing="none")
    (root / "model.onnx").write_bytes(b"not really a model, but bytes with a hash" * 10)
    b.add_artifact("onnx", root / "model.onnx", format="onnx", precision="fp32")
    return root


@pytest.fixture
def keys(tmp_path) -> tuple[Path, Path]:
    return keygen(tmp_path / "keys")


@pytest.fixture
def signed(tmp_path, keys) -> Path:
    root = _bundle(tmp_path / "b")
    sign_bundle(root, keys[0])
    return root


def _one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_keygen_private_key_is_private_and_never_overwritten(keys, tmp_path):
    priv, pub = keys
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in priv.read_bytes() and b"PUBLIC KEY" in pub.read_bytes()
    before = priv.read_bytes()
    with pytest.raises(EdgecatError, match="already exists"):
        keygen(tmp_path / "keys")
    assert priv.read_bytes() == before


def test_signed_bundle_opens_with_its_key(signed, keys):
    b = verify_bundle(signed, [str(keys[1])])
    assert b.name == "signed"
    assert json.loads((signed / SIGNATURE).read_text())["algorithm"] == "ed25519"


def test_unsigned_bundle_refused_only_when_keys_are_configured(tmp_path, keys, monkeypatch):
    root = _bundle(tmp_path / "u")
    assert open_trusted(root).name == "signed"  # no keys: as before
    with pytest.raises(EdgecatError, match="not signed"):
        open_trusted(root, [str(keys[1])])
    monkeypatch.setenv(TRUSTED_ENV, str(keys[1]))
    with pytest.raises(EdgecatError, match="not signed"):
        open_trusted(root)


def test_bundle_signed_by_another_key_is_refused(signed, tmp_path):
    _, other_pub = keygen(tmp_path / "other")
    with pytest.raises(EdgecatError, match="not trusted here"):
        verify_bundle(signed, [str(other_pub)])


def test_changed_artifact_after_signing_is_refused(signed, keys):
    (signed / "model.onnx").write_bytes(b"an attacker's model")
    with pytest.raises(EdgecatError, match="changed after signing"):
        verify_bundle(signed, [str(keys[1])])


def test_changed_artifact_with_its_hash_updated_in_the_manifest_is_refused(signed, keys):
    (signed / "model.onnx").write_bytes(b"an attacker's model")
    b = Bundle.open(signed)
    b.add_artifact("onnx", signed / "model.onnx", format="onnx", precision="fp32")  # manifest agrees again
    with pytest.raises(EdgecatError, match="manifest was changed after signing"):
        verify_bundle(signed, [str(keys[1])])


def test_changed_manifest_after_signing_is_refused(signed, keys):
    b = Bundle.open(signed)
    b.manifest["threshold"] = 0.01
    b.save()
    with pytest.raises(EdgecatError, match="manifest was changed after signing"):
        verify_bundle(signed, [str(keys[1])])


def test_device_sections_saved_after_signing_keep_the_signature(signed, keys):
    """--backend auto remembers its choice in the manifest on the device: not a change of the bundle."""
    b = Bundle.open(signed)
    b.manifest["autoselect"] = {"machine": {"backend": "onnxruntime"}}
    b.save()
    assert verify_bundle(signed, [str(keys[1])]).name == "signed"


def test_cli_keygen_sign_and_refusals_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    root = _bundle(tmp_path / "b")
    pub = str(tmp_path / "k" / "edgecat.pub")
    res = runner.invoke(main, ["predict", str(root), str(tmp_path), "--trusted-key", pub])
    assert res.exit_code != 0 and "not signed" in _one_line(res)
    res = runner.invoke(main, ["sign", str(root), "--key", str(tmp_path / "k" / "edgecat.key")])
    assert res.exit_code == 0, res.output
    (root / "model.onnx").write_bytes(b"tampered")
    res = runner.invoke(main, ["stream", str(root), "--source", str(tmp_path), "--trusted-key", pub])
    assert res.exit_code != 0 and "changed after signing" in _one_line(res)
    res = runner.invoke(main, ["sign", str(root), "--key", pub])  # a public key cannot sign
    assert res.exit_code != 0 and "not an unencrypted PEM private key" in _one_line(res)
