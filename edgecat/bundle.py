"""The model bundle: one directory and one manifest that travel together.

Everything a deployed model needs (weights, exported graphs, class names, input contract, threshold)
lives in one folder described by ``edgecat.json``, so preprocessing can never drift between training
and deployment. Every artifact is listed with its sha256; a file that does not match is refused.

A bundle may come from someone else, so it is checked on open, before anything else is read or
written: the manifest against :mod:`edgecat.bundle_schema` (one line naming the bad field), every
artifact name for staying inside the folder, and no file or folder at the top of the bundle may be a
symlink that resolves outside it. A listed artifact whose file was deleted (to save space, or left
behind when copying to a device) is *missing*, not broken: commands that do not need it work, and
the one that does says which command re-makes it.

Several commands may write one bundle at once (two exports, an export and an ``auto`` measurement).
:meth:`Bundle.save` is the only writer of the manifest: under a lock file beside it, it re-reads the
manifest from disk and merges three ways against the manifest as this process last read or wrote
it, so what this process changed wins and everything else another process wrote is kept.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecat import __version__, artifacts
from edgecat.bundle_schema import FORMAT, FORMAT_VERSION, check_file_name, first_problem
from edgecat.errors import EdgecatError
from edgecat.fsutil import locked, require_writable, sha256_file, write_json
from edgecat.redact import redact_obj

log = logging.getLogger(__name__)

MANIFEST = "edgecat.json"
#: held while the manifest is read, merged and written (see Bundle.save)
MANIFEST_LOCK = f".{MANIFEST}.lock"
_ABSENT = object()

def remake_hint(bundle: str | Path, key: str) -> str:
    """The command that re-makes artifact ``key`` of ``bundle`` (the registry's export flags)."""
    if key not in artifacts.ARTIFACTS:
        return f"edgecat export {bundle}"
    if artifacts.kind(key).made_from is None:
        return "train it again (`edgecat train`); the Keras model cannot be re-made from the exports"
    return artifacts.export_command(bundle, key)


def class_indices(probs: Any, threshold: float = 0.5) -> Any:
    """The decision, made once for every caller: class index per row of (N, C) probabilities; two
    classes: the second when its probability reaches ``threshold``, else the most probable class."""
    import numpy as np

    probs = np.asarray(probs)
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(axis=1)


def _outside(path: Path, root: Path) -> bool:
    """Whether ``path`` (following symlinks) resolves outside ``root``."""
    try:
        path.resolve(strict=False).relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return True
    return False


def check_contained(root: Path, names: list[str]) -> None:
    """Refuse a bundle whose manifest, listed files or top-level entries resolve outside ``root``."""
    entries = [root / MANIFEST, *(root / n for n in names)]
    try:
        entries += [Path(e.path) for e in os.scandir(root) if e.is_symlink()]
    except OSError as exc:
        raise EdgecatError(f"cannot read bundle folder {root}: {exc.strerror or exc}") from None
    for p in entries:
        if (p.is_symlink() or p.parent != root) and _outside(p, root):
            raise EdgecatError(f"bundle {root}: {p.relative_to(root).as_posix()} points outside the bundle "
                               "folder (a symlink); a bundle must hold its own files: copy the file in")


def _merge_value(base: Any, ours: Any, theirs: Any) -> Any:
    """What this process changed since ``base`` wins; otherwise what is on disk (``theirs``)."""
    return ours if ours != base else theirs


def merge_manifests(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge of manifests: per top-level key, and one level deeper where the key holds a
    dict on both sides (each artifact entry, each ``metrics`` or ``autoselect`` entry): a key this
    process added, changed or removed since ``base`` is taken from ``ours``, every other key from
    ``theirs`` (the manifest on disk, with what other processes wrote since)."""
    out: dict[str, Any] = {}
    for key in [*theirs, *(k for k in ours if k not in theirs)]:
        b, o, t = base.get(key, _ABSENT), ours.get(key, _ABSENT), theirs.get(key, _ABSENT)
        if isinstance(o, dict) and isinstance(t, dict) and (b is _ABSENT or isinstance(b, dict)):
            b = b if isinstance(b, dict) else {}
            section = {}
            for sub in [*t, *(k for k in o if k not in t)]:
                value = _merge_value(b.get(sub, _ABSENT), o.get(sub, _ABSENT), t.get(sub, _ABSENT))
                if value is not _ABSENT:
                    section[sub] = value
            out[key] = section
            continue
        value = _merge_value(b, o, t)
        if value is not _ABSENT:
            out[key] = value
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def tool_versions(*modules: str) -> dict[str, str]:
    """Versions of the libraries that made an artifact; only modules already importable are listed."""
    import importlib

    out = {"edgecat": __version__, "python": platform.python_version()}
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional library is simply not recorded
            continue
        out[name] = str(getattr(mod, "__version__", "unknown"))
    return out


@dataclass
class Bundle:
    """A bundle on disk. Open with :meth:`open`, create with :meth:`create`."""

    path: Path
    manifest: dict[str, Any]
    _verified: set[str] = field(default_factory=set, repr=False)
    problems: dict[str, str] = field(default_factory=dict, repr=False)  # key -> why, from verify()
    #: the manifest as this process last read or wrote it: the base of save()'s three-way merge
    #: (None: write the manifest as it is, e.g. a new bundle)
    _base: dict[str, Any] | None = field(default=None, repr=False)
    _warned: set[str] = field(default_factory=set, repr=False)

    # ----------------------------------------------------------------- construction
    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        path = Path(path)
        if path.is_file() and path.name == MANIFEST:
            path = path.parent
        if not path.exists():
            raise EdgecatError(f"bundle not found: {path}")
        if not path.is_dir():
            raise EdgecatError(f"not a bundle folder: {path} (expected a folder with {MANIFEST})")
        mpath = path / MANIFEST
        if not mpath.exists():
            raise EdgecatError(f"not a bundle: {path} has no {MANIFEST} (train one with `edgecat train`)")
        if _outside(mpath, path):
            raise EdgecatError(f"bundle {path}: {MANIFEST} points outside the bundle folder (a symlink)")
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EdgecatError(f"corrupt bundle manifest {mpath}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise EdgecatError(f"{mpath} is not an edgecat manifest")
        version = manifest.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise EdgecatError(
                f"{mpath} has bundle format {version}; this edgecat reads up to {FORMAT_VERSION} "
                "(upgrade edgecat)"
            )
        problem = first_problem(manifest)
        if problem:
            raise EdgecatError(f"bad bundle manifest {mpath}: {problem}")
        check_contained(path, [e["file"] for e in manifest["artifacts"].values()])
        return cls(path=path, manifest=manifest, _base=copy.deepcopy(manifest))

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        name: str,
        backbone: str,
        input_size: tuple[int, int],
        classes: list[str],
        preprocessing: str,
        threshold: float = 0.5,
        config: dict[str, Any] | None = None,
    ) -> Bundle:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        binary = len(classes) == 2
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": now_iso(),
            "status": "training",
            "backbone": backbone,
            "input": {
                "name": "image",
                "shape": [int(input_size[0]), int(input_size[1]), 3],
                "layout": "NHWC",
                "dtype": "float32",
                "accepts": ["float32", "uint8"],
                "range": [0.0, 255.0],
                "color": "RGB",
                "resize": "bilinear",
                "preprocessing": preprocessing,
                "preprocessing_in_model": True,
            },
            "output": {
                "name": "probabilities",
                "activation": "sigmoid" if binary else "softmax",
                "shape": [1 if binary else len(classes)],
                "meaning": (
                    f"probability of '{classes[1]}'" if binary else "probability of each class"
                ),
            },
            "classes": list(classes),
            "threshold": float(threshold),
            "config": config or {},
            "metrics": {},
            "data": {},
            "versions": tool_versions(),
            "artifacts": {},
        }
        bundle = cls(path=path, manifest=manifest)
        bundle.save()  # a new manifest: nothing on disk to merge with
        return bundle

    # ----------------------------------------------------------------- properties
    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def backbone(self) -> str:
        return str(self.manifest.get("backbone", ""))

    @property
    def input_size(self) -> tuple[int, int]:
        h, w, _ = self.manifest["input"]["shape"]
        return int(h), int(w)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    @property
    def threshold(self) -> float:
        return float(self.manifest.get("threshold", 0.5))

    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        return self.manifest["artifacts"]

    # ----------------------------------------------------------------- artifacts
    def lists(self, key: str) -> bool:
        """Whether the manifest lists ``key`` (its file may have been deleted: see :meth:`has`)."""
        return key in self.artifacts

    def has(self, key: str) -> bool:
        """Whether ``key`` is listed and its file is there: what every command asks before using one."""
        entry = self.artifacts.get(key)
        return entry is not None and (self.path / entry["file"]).exists()

    def missing(self) -> list[str]:
        """Listed artifacts whose files are gone."""
        return [k for k in self.artifacts if not self.has(k)]

    def _file(self, key: str, entry: dict[str, Any]) -> Path:
        """The artifact's path, after checking its name and that it stays inside the bundle."""
        try:
            check_file_name(entry.get("file", ""))
        except ValueError as exc:
            raise EdgecatError(f"bundle {self.path}: artifact '{key}' file {exc}") from None
        path = self.path / entry["file"]
        if _outside(path, self.path):
            raise EdgecatError(f"bundle {self.path}: {entry['file']} points outside the bundle folder (a symlink)")
        return path

    def artifact_path(self, key: str, verify: bool = True) -> Path:
        """Path of an artifact, after checking it exists and matches the manifest's sha256."""
        entry = self.artifacts.get(key)
        if entry is None:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise EdgecatError(f"bundle {self.path} has no '{key}' artifact (it has: {have}); make it: "
                               f"{remake_hint(self.path, key)}")
        path = self._file(key, entry)
        if not path.exists():
            raise EdgecatError(
                f"bundle {self.path} lists {entry['file']} but the file is missing; re-make it: "
                f"{remake_hint(self.path, key)}"
            )
        if verify and key not in self._verified:
            digest = sha256_file(path)
            if digest != entry.get("sha256"):
                raise EdgecatError(
                    f"{path} does not match the bundle manifest (sha256 differs): the file was "
                    "changed, truncated or replaced; re-export it or restore the original"
                )
            self._verified.add(key)
        return path

    def add_artifact(self, key: str, file: str | Path, *, save: bool = True, **info: Any) -> dict:
        """Record ``file`` (inside the bundle) under ``key`` with its hash, size and provenance."""
        path = Path(file)
        # Accept both "model.onnx" (relative to the bundle) and bundle.path / "model.onnx", which is
        # relative to the working directory when the bundle was opened by a relative path.
        if not path.is_absolute() and path.parts[: len(self.path.parts)] != self.path.parts:
            path = self.path / path
        try:
            rel = check_file_name(path.relative_to(self.path).as_posix())
        except ValueError as exc:
            raise EdgecatError(f"an artifact must be a file inside the bundle {self.path}: {path}") from exc
        entry = {
            "file": rel,
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "created": now_iso(),
            **info,
        }
        self.artifacts[key] = entry
        self._verified.add(key)
        if save:
            self.save()
        return entry

    def remove_artifact(self, key: str, delete_file: bool = False) -> None:
        entry = self.artifacts.pop(key, None)
        if entry and delete_file:
            self._file(key, entry).unlink(missing_ok=True)
        self.save()

    def stale(self) -> dict[str, str]:
        """Artifacts made from another version of their source than the bundle has now (FP16/INT8
        made from an older model.onnx): key -> one line with the command that re-makes it."""
        out = {}
        for key, entry in self.artifacts.items():
            made_by = entry.get("made_by") if isinstance(entry.get("made_by"), dict) else {}
            src, src_sha = made_by.get("from"), made_by.get("from_sha256")
            now = self.artifacts.get(src, {}).get("sha256") if isinstance(src, str) else None
            if src_sha and now and src_sha != now:
                src_file = self.artifacts[src]["file"]
                out[key] = (f"{entry['file']} was made from an older {src_file} (re-exported since): "
                            f"re-make it: {remake_hint(self.path, key)}")
        return out

    def verify(self) -> dict[str, str]:
        """Check every artifact: key -> 'ok' | 'missing' | 'mismatch' | 'stale' (made from an older
        version of its source; see :meth:`stale`). The reasons: :attr:`problems`."""
        out: dict[str, str] = {}
        self.problems = {}
        stale = self.stale()
        for key in self.artifacts:
            try:
                self._verified.discard(key)
                self.artifact_path(key)
                out[key] = "ok"
            except EdgecatError as exc:
                out[key] = "missing" if not self.has(key) else "mismatch"
                self.problems[key] = str(exc)
            if out[key] == "ok" and key in stale:
                out[key] = "stale"
                self.problems[key] = stale[key]
        return out

    def require_writable(self) -> None:
        """Refuse a bundle folder this process cannot write, before any slow work (one line)."""
        require_writable(self.path, what="bundle ")

    def warn_once(self, message: str) -> None:
        """Log a warning once per bundle object: several export steps reach the same fallback."""
        if message not in self._warned:
            self._warned.add(message)
            log.warning("%s", message)

    def save(self) -> None:
        """Write the manifest, keeping what other processes wrote since this one read it.

        Under the lock file beside the manifest, the manifest on disk is re-read and merged three
        ways (:func:`merge_manifests`); the merged manifest is written atomically and becomes this
        object's manifest (in place: references to it stay valid), so this process also sees the
        artifacts another export added."""
        mpath = self.path / MANIFEST
        with locked(self.path / MANIFEST_LOCK):
            merged = self.manifest
            disk = self._read_disk(mpath) if self._base is not None else None
            if disk is not None:
                merged = merge_manifests(self._base or {}, self.manifest, disk)
            merged["updated"] = now_iso()
            clean = redact_obj(merged)  # no URI password is ever stored
            write_json(mpath, clean)
        self._replace_manifest(merged)
        self._base = copy.deepcopy(clean)

    def refresh(self) -> None:
        """Take in what other processes wrote to the manifest since this one read it (a child
        process recorded something), keeping this process's unsaved changes."""
        mpath = self.path / MANIFEST
        disk = self._read_disk(mpath)
        if disk is None:
            return
        self._replace_manifest(merge_manifests(self._base or {}, self.manifest, disk))
        self._base = copy.deepcopy(disk)

    def _read_disk(self, mpath: Path) -> dict[str, Any] | None:
        """The manifest on disk, if it is one this process may merge with (else it is overwritten)."""
        try:
            disk = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s was unreadable (%s); writing this process's manifest over it", mpath, exc)
            return None
        problem = None if isinstance(disk, dict) and disk.get("format") == FORMAT else "not an edgecat manifest"
        problem = problem or first_problem(disk)
        if problem:
            log.warning("%s on disk is invalid (%s); writing this process's manifest over it", mpath, problem)
            return None
        return disk

    def _replace_manifest(self, merged: dict[str, Any]) -> None:
        """Make ``merged`` this object's manifest without replacing the dict objects callers hold."""
        if merged is self.manifest:
            return
        old_artifacts = dict(self.manifest.get("artifacts", {}))
        for key in list(self.manifest):
            if key not in merged:
                del self.manifest[key]
        for key, value in merged.items():
            mine = self.manifest.get(key)
            if isinstance(mine, dict) and isinstance(value, dict) and mine is not value:
                mine.clear()
                mine.update(value)
            else:
                self.manifest[key] = value
        for key, entry in self.artifacts.items():  # another process re-made it: hash it again on use
            if old_artifacts.get(key) != entry:
                self._verified.discard(key)

    # ----------------------------------------------------------------- helpers
    def labels_from_probs(self, probs: Any) -> list[str]:
        """Class names for a batch of class probabilities (N, C), honouring the binary threshold."""
        return [self.classes[i] for i in class_indices(probs, self.threshold)]

    def class_probs(self, raw: Any) -> Any:
        """Model output -> (N, C) class probabilities (a sigmoid output becomes [1-p, p])."""
        import numpy as np

        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim == 1:
            raw = raw[:, None]
        if self.binary and raw.shape[1] == 1:
            return np.concatenate([1.0 - raw, raw], axis=1)
        return raw
