"""Signed bundles: a device runs only a bundle its owner signed.

A fleet pulls new bundles over the network, so a bundle dropped into the watched folder by anyone
else must not run. ``edgecat keygen`` makes an Ed25519 key pair; ``edgecat sign BUNDLE --key KEY``
writes ``edgecat.sig`` beside the manifest. The signature covers the manifest, and the manifest
lists the sha256 of every artifact, so it covers every artifact too: a changed artifact no longer
matches its listed hash, a changed manifest no longer matches the signature.

What is signed is the manifest in a canonical form (sorted keys, compact separators) without the
two sections a device writes for itself: ``updated`` (the time of the last save) and
``autoselect`` (``--backend auto``'s timings on this machine). Everything else (classes,
threshold, input contract, artifacts and their hashes) is signed.

With trusted keys configured (``--trusted-key FILE`` or ``EDGECAT_TRUSTED_KEYS``, a list of public
key files separated by ``:``), :func:`open_trusted` refuses an unsigned bundle, one signed by
another key and one changed after signing, with one line.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from edgecat.bundle import MANIFEST, Bundle
from edgecat.errors import EdgecatError, MissingDependencyError
from edgecat.fsutil import atomic_path, write_json

log = logging.getLogger(__name__)

SIGNATURE = "edgecat.sig"
TRUSTED_ENV = "EDGECAT_TRUSTED_KEYS"
PRIVATE_KEY = "edgecat.key"
PUBLIC_KEY = "edgecat.pub"
#: manifest sections a device writes for itself: not signed, so saving them keeps the signature valid
UNSIGNED_KEYS = ("updated", "autoselect")


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError("signed bundles need the cryptography package: pip install cryptography") \
            from None
    return serialization, ed25519


def signed_bytes(manifest: dict[str, Any]) -> bytes:
    """The canonical bytes a signature covers: the manifest without the device's own sections."""
    body = {k: v for k, v in manifest.items() if k not in UNSIGNED_KEYS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def bundle_hash(manifest: dict[str, Any]) -> str:
    """The sha256 of what a signature covers: names the exact bundle a device runs (events, metrics)."""
    return hashlib.sha256(signed_bytes(manifest)).hexdigest()


def key_id(public_raw: bytes) -> str:
    """A short name for a public key, so a refusal can say which key signed a bundle."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def keygen(out: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new key pair into folder ``out``: ``edgecat.key`` (private, mode 0600) and
    ``edgecat.pub`` (public, for the devices). An existing key is never overwritten."""
    serialization, ed25519 = _crypto()
    folder = Path(out)
    priv_path, pub_path = folder / PRIVATE_KEY, folder / PUBLIC_KEY
    for p in (priv_path, pub_path):
        if p.exists():
            raise EdgecatError(f"{p} already exists: keep it, or remove it yourself to make a new key")
    folder.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with atomic_path(priv_path) as tmp:  # mkstemp makes it 0600: the private key is never readable by others
        tmp.write_bytes(priv)
    os.chmod(priv_path, 0o600)
    with atomic_path(pub_path) as tmp:
        tmp.write_bytes(pub)
    os.chmod(pub_path, 0o644)
    return priv_path, pub_path


def _load_private(path: str | os.PathLike[str]) -> Any:
    serialization, ed25519 = _crypto()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EdgecatError(f"cannot read key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EdgecatError(f"{path} is not an unencrypted PEM private key (make one with `edgecat keygen`): "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgecatError(f"{path} is not an Ed25519 key (make one with `edgecat keygen`)")
    return key


def load_public(path: str | os.PathLike[str]) -> Any:
    """An Ed25519 public key from a PEM file; anything else is one line."""
    serialization, ed25519 = _crypto()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise EdgecatError(f"cannot read trusted key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise EdgecatError(f"trusted key {path} is not a PEM public key (use the edgecat.pub `edgecat keygen` "
                           "wrote)") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise EdgecatError(f"trusted key {path} is not an Ed25519 public key")
    return key


def _raw_public(key: Any) -> bytes:
    serialization, _ = _crypto()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def trusted_keys(paths: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The trusted public key files: those given, else ``$EDGECAT_TRUSTED_KEYS`` (``:``-separated)."""
    if paths:
        return [str(p) for p in paths]
    env = os.environ.get(TRUSTED_ENV, "")
    return [p for p in env.split(os.pathsep) if p.strip()]


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgecatError(f"cannot read {path / MANIFEST}: {exc}") from None


def sign_bundle(bundle: str | os.PathLike[str], key: str | os.PathLike[str]) -> Path:
    """Sign ``bundle`` with private key file ``key``: every listed artifact must be present and match
    its hash first (a signature vouches for the files as they are). Returns the signature's path."""
    b = Bundle.open(bundle)
    private = _load_private(key)
    checks = b.verify()
    bad = {k: v for k, v in checks.items() if v not in ("ok", "stale")}
    if bad:
        key0 = next(iter(bad))
        raise EdgecatError(f"cannot sign {b.path}: artifact '{key0}' is {bad[key0]} ({b.problems[key0]})")
    manifest = _read_manifest(b.path)
    body = signed_bytes(manifest)
    raw = _raw_public(private.public_key())
    record = {
        "format": "edgecat-signature",
        "algorithm": "ed25519",
        "key_id": key_id(raw),
        "public_key": base64.b64encode(raw).decode(),
        "manifest_sha256": hashlib.sha256(body).hexdigest(),
        "signature": base64.b64encode(private.sign(body)).decode(),
    }
    dest = b.path / SIGNATURE
    write_json(dest, record)
    return dest


def verify_bundle(bundle: str | os.PathLike[str], keys: list[str]) -> Bundle:
    """The bundle, opened, after checking that one of the public key files ``keys`` signed it and
    nothing changed since; otherwise one line saying what is wrong."""
    publics = [load_public(k) for k in keys]  # first: a missing cryptography package is one line
    from cryptography.exceptions import InvalidSignature

    b = Bundle.open(bundle)
    sig_path = b.path / SIGNATURE
    if not sig_path.exists():
        raise EdgecatError(f"bundle {b.path} is not signed and trusted keys are configured: sign it with "
                           "`edgecat sign BUNDLE --key edgecat.key`")
    try:
        record = json.loads(sig_path.read_text(encoding="utf-8"))
        signature = base64.b64decode(record["signature"], validate=True)
        signer = str(record.get("key_id", "?"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise EdgecatError(f"bundle {b.path}: {SIGNATURE} is unreadable or malformed") from None
    # the manifest as the Bundle object holds it: what is verified is what will be used
    body = signed_bytes(copy.deepcopy(b.manifest))
    for pub in publics:
        try:
            pub.verify(signature, body)
            break
        except InvalidSignature:
            continue
    else:
        trusted = ", ".join(key_id(_raw_public(p)) for p in publics)
        if signer not in {key_id(_raw_public(p)) for p in publics}:
            raise EdgecatError(f"bundle {b.path} is signed by key {signer}, which is not trusted here "
                               f"(trusted: {trusted})")
        raise EdgecatError(f"bundle {b.path}: the signature does not match its manifest (the manifest was "
                           "changed after signing); refusing it")
    for k in b.artifacts:  # present files must match their signed hashes; deleted ones cannot be run
        if b.has(k):
            try:
                b.artifact_path(k)
            except EdgecatError as exc:
                raise EdgecatError(f"bundle {b.path} was changed after signing: {exc}") from None
    log.info("bundle %s: signature by key %s verified", b.path, signer)
    return b


def open_trusted(bundle: str | os.PathLike[str] | Bundle, keys: list[str] | tuple[str, ...] | None = None) -> Bundle:
    """Open ``bundle`` for running: verified against the trusted keys when any are configured
    (``keys`` or ``$EDGECAT_TRUSTED_KEYS``), opened as it is otherwise."""
    files = trusted_keys(keys)
    if not files:
        return bundle if isinstance(bundle, Bundle) else Bundle.open(bundle)
    path = bundle.path if isinstance(bundle, Bundle) else bundle
    return verify_bundle(path, files)
