"""The model bundle: one directory and one manifest that travel together.

Everything a deployed model needs (weights, exported graphs, class names, input contract, threshold)
lives in one folder described by ``edgecat.json``, so preprocessing can never drift between training
and deployment. Every artifact is listed with its sha256; a file that does not match is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecat import __version__
from edgecat.errors import EdgecatError
from edgecat.fsutil import sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST = "edgecat.json"
FORMAT = "edgecat-bundle"
FORMAT_VERSION = 1


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
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EdgecatError(f"corrupt bundle manifest {mpath}: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise EdgecatError(f"{mpath} is not an edgecat manifest")
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise EdgecatError(
                f"{mpath} has bundle format {version}; this edgecat reads up to {FORMAT_VERSION} "
                "(upgrade edgecat)"
            )
        for key in ("input", "classes", "artifacts"):
            if key not in manifest:
                raise EdgecatError(f"{mpath} lacks '{key}'")
        return cls(path=path, manifest=manifest)

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
        bundle.save()
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
    def has(self, key: str) -> bool:
        return key in self.artifacts

    def artifact_path(self, key: str, verify: bool = True) -> Path:
        """Path of an artifact, after checking it exists and matches the manifest's sha256."""
        entry = self.artifacts.get(key)
        if entry is None:
            have = ", ".join(sorted(self.artifacts)) or "none"
            raise EdgecatError(f"bundle {self.path} has no '{key}' artifact (it has: {have})")
        path = self.path / entry["file"]
        if not path.exists():
            raise EdgecatError(
                f"bundle {self.path} lists {entry['file']} but the file is missing"
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
        rel = path.relative_to(self.path).as_posix()
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
            (self.path / entry["file"]).unlink(missing_ok=True)
        self.save()

    def verify(self) -> dict[str, str]:
        """Check every artifact: returns key -> 'ok' | problem, for `edgecat info`."""
        out: dict[str, str] = {}
        for key in self.artifacts:
            try:
                self._verified.discard(key)
                self.artifact_path(key)
                out[key] = "ok"
            except EdgecatError as exc:
                out[key] = str(exc)
        return out

    def save(self) -> None:
        self.manifest["updated"] = now_iso()
        write_json(self.path / MANIFEST, self.manifest)

    # ----------------------------------------------------------------- helpers
    def labels_from_probs(self, probs: Any) -> list[str]:
        """Class names for a batch of class probabilities (N, C), honouring the binary threshold."""
        import numpy as np

        probs = np.asarray(probs)
        if self.binary:
            idx = (probs[:, 1] >= self.threshold).astype(int)
        else:
            idx = probs.argmax(axis=1)
        return [self.classes[i] for i in idx]

    def class_probs(self, raw: Any) -> Any:
        """Model output -> (N, C) class probabilities (a sigmoid output becomes [1-p, p])."""
        import numpy as np

        raw = np.asarray(raw, dtype=np.float32)
        if raw.ndim == 1:
            raw = raw[:, None]
        if self.binary and raw.shape[1] == 1:
            return np.concatenate([1.0 - raw, raw], axis=1)
        return raw

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "path": str(self.path),
            "name": self.name,
            "status": m.get("status"),
            "backbone": self.backbone,
            "input": m["input"],
            "classes": self.classes,
            "threshold": self.threshold,
            "metrics": m.get("metrics", {}),
            "artifacts": self.artifacts,
            "versions": m.get("versions", {}),
        }
