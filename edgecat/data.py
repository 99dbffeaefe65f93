"""Finding labelled images and checking every one of them before training starts.

Three layouts are understood (see :func:`discover`), plus ``tfds:NAME``. Every file is opened and
fully decoded once, in parallel, before training: corrupt, truncated, empty and non-image files are
skipped and listed; grayscale, RGBA, CMYK, palette images and non-JPEG/PNG formats (or files whose
extension lies about their content) are converted to RGB PNGs in the cache, so the training
pipeline only ever sees files it can decode. Results are cached by path + size + mtime.

Nothing here imports TensorFlow: evaluate and bench use it on the edge side too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError, first_line
from edgecat.fsutil import cache_dir, write_json
from edgecat.imaging import IMAGE_EXTENSIONS
from edgecat.machine import usable_cpus

log = logging.getLogger(__name__)

TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("validation", "val", "valid")
CHECK_VERSION = 1
# Formats the training decoder reads natively, with the extensions that may carry them.
NATIVE = {"JPEG": {".jpg", ".jpeg"}, "PNG": {".png"}}


@dataclass
class Split:
    files: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.files)

    def counts(self, classes: list[str]) -> dict[str, int]:
        c = Counter(self.labels)
        return {name: c.get(i, 0) for i, name in enumerate(classes)}


@dataclass
class ImageCheck:
    """Outcome of checking one file: ``ok``, ``converted`` (read from ``use``) or ``skipped``."""

    file: str
    status: str
    reason: str = ""
    use: str = ""
    size: tuple[int, int] | None = None


@dataclass
class Dataset:
    classes: list[str]
    train: Split
    val: Split
    source: str
    layout: str
    checks: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "layout": self.layout,
            "classes": self.classes,
            "train": self.train.counts(self.classes),
            "validation": self.val.counts(self.classes),
            "checks": self.checks,
        }


# --------------------------------------------------------------------------------------- discovery
def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
        and (p.suffix.lower() in IMAGE_EXTENSIONS or p.suffix == "")
    )


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _first_existing(root: Path, names: tuple[str, ...]) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def _kaggle_files(folder: Path) -> dict[str, list[Path]] | None:
    """``cat.123.jpg`` / ``dog.45.jpg`` in one folder -> {prefix: files}, or None if not that layout."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        return None
    groups: dict[str, list[Path]] = {}
    for f in files:
        parts = f.name.split(".")
        if len(parts) < 3:
            return None
        groups.setdefault(parts[0].lower(), []).append(f)
    return groups


def _from_class_dirs(folder: Path) -> dict[str, list[Path]]:
    groups = {d.name: _images_in(d) for d in _class_dirs(folder)}
    return groups


def _check_classes(groups: dict[str, list[Path]], where: Path, min_classes: int = 2) -> None:
    if not groups:
        raise EdgecatError(f"no class folders or labelled images in {where}")
    empty = [c for c, files in groups.items() if not files]
    if empty:
        raise EdgecatError(f"class folder(s) with no images in {where}: {', '.join(empty)}")
    if len(groups) < min_classes:  # evaluation scores a one-class set (accuracy); training cannot learn one
        raise EdgecatError(
            f"only one class ({next(iter(groups))}) in {where}: a classifier needs at least two"
        )


def _stratified_split(
    groups: dict[str, list[Path]], classes: list[str], val_split: float, seed: int
) -> tuple[Split, Split]:
    if not 0.0 < val_split < 1.0:
        raise EdgecatError(f"--val-split must be between 0 and 1 (got {val_split})")
    rng = random.Random(seed)
    train, val = Split(), Split()
    for idx, cls in enumerate(classes):
        files = [str(p) for p in groups[cls]]
        rng.shuffle(files)
        n_val = max(1, round(len(files) * val_split)) if len(files) > 1 else 0
        val.files += files[:n_val]
        val.labels += [idx] * n_val
        train.files += files[n_val:]
        train.labels += [idx] * (len(files) - n_val)
    return train, val


def _to_split(groups: dict[str, list[Path]], classes: list[str]) -> Split:
    s = Split()
    for idx, cls in enumerate(classes):
        files = groups.get(cls, [])
        s.files += [str(p) for p in files]
        s.labels += [idx] * len(files)
    return s


def _groups(folder: Path) -> tuple[dict[str, list[Path]], str]:
    kaggle = _kaggle_files(folder)
    if kaggle is not None and not _class_dirs(folder):
        return kaggle, "kaggle"
    return _from_class_dirs(folder), "class-folders"


def discover(
    data: str | os.PathLike[str], val_split: float = 0.2, seed: int = 42, evaluation: bool = False
) -> Dataset:
    """Find labelled images under ``data``.

    Layouts: ``DIR/train/<class>/`` + ``DIR/validation/<class>/``; ``DIR/<class>/`` (split here,
    seeded and stratified); Kaggle's ``DIR/cat.1.jpg`` naming (also under ``DIR/train``). With
    ``evaluation=True`` every image of a single-level layout goes into ``val``.
    """
    root = Path(data)
    if not root.exists():
        raise EdgecatError(f"data folder not found: {root}")
    if not root.is_dir():
        raise EdgecatError(f"--data must be a folder (got a file: {root})")
    train_dir = _first_existing(root, TRAIN_NAMES)
    val_dir = _first_existing(root, VAL_NAMES)
    if train_dir is not None or val_dir is not None:
        if evaluation and val_dir is not None:
            groups, layout = _groups(val_dir)
            _check_classes(groups, val_dir, min_classes=1)
            classes = sorted(groups)
            return Dataset(classes, Split(), _to_split(groups, classes), str(root), layout + "/validation")
        if train_dir is None:
            raise EdgecatError(f"{root} has a validation folder but no train folder")
        tgroups, layout = _groups(train_dir)
        _check_classes(tgroups, train_dir)
        classes = sorted(tgroups)
        if val_dir is not None:
            vgroups, _ = _groups(val_dir)
            unknown = sorted(set(vgroups) - set(classes))
            if unknown:
                raise EdgecatError(f"{val_dir} has classes not in {train_dir}: {', '.join(unknown)}")
            return Dataset(classes, _to_split(tgroups, classes), _to_split(vgroups, classes),
                           str(root), layout + "/train+validation")
        train, val = _stratified_split(tgroups, classes, val_split, seed)
        return Dataset(classes, train, val, str(root), layout + f"/split {val_split:g}")
    groups, layout = _groups(root)
    if not groups or all(not v for v in groups.values()):
        raise EdgecatError(f"no images found in {root} (expected class folders or cat.1.jpg-style files)")
    _check_classes(groups, root, min_classes=1 if evaluation else 2)
    classes = sorted(groups)
    if evaluation:
        return Dataset(classes, Split(), _to_split(groups, classes), str(root), layout)
    train, val = _stratified_split(groups, classes, val_split, seed)
    return Dataset(classes, train, val, str(root), layout + f"/split {val_split:g}")


# --------------------------------------------------------------------------------------- checking
class _CheckCache:
    """JSON cache of check results keyed by absolute path + size + mtime."""

    def __init__(self) -> None:
        self.path = cache_dir() / f"imagecheck-v{CHECK_VERSION}.json"
        self.lock = threading.Lock()
        self.dirty = False
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.entries = {}

    @staticmethod
    def key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def get(self, key: str) -> ImageCheck | None:
        e = self.entries.get(key)
        if e is None:
            return None
        chk = ImageCheck(**e)
        if chk.status == "converted" and not Path(chk.use).exists():
            return None
        return chk

    def put(self, key: str, chk: ImageCheck) -> None:
        with self.lock:
            self.entries[key] = asdict(chk)
            self.dirty = True

    def save(self) -> None:
        if self.dirty:
            try:
                write_json(self.path, self.entries)
            except OSError as exc:  # a read-only cache only costs time
                log.debug("cannot write image check cache: %s", exc)


def _check_one(path: Path, key: str) -> ImageCheck:
    from PIL import Image, UnidentifiedImageError

    f = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return ImageCheck(f, "skipped", f"unreadable: {exc.strerror}")
    if size == 0:
        return ImageCheck(f, "skipped", "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            fmt = im.format or "?"
            mode = im.mode
            im.load()  # full decode: catches truncated and corrupt data
            dims = im.size
            reasons = []
            if mode != "RGB":
                reasons.append(f"{mode} -> RGB")
            if fmt not in NATIVE:
                reasons.append(f"{fmt} -> PNG")
            elif path.suffix.lower() not in NATIVE[fmt]:
                reasons.append(f"{fmt} content in a {path.suffix or 'no-extension'} file")
            if getattr(im, "n_frames", 1) > 1:
                reasons.append("first frame of an animation")
            if not reasons:
                return ImageCheck(f, "ok", size=dims)
            out = cache_dir() / "converted" / (hashlib.sha1(key.encode()).hexdigest() + ".png")
            out.parent.mkdir(parents=True, exist_ok=True)
            rgb = im.convert("RGB") if mode != "P" else im.convert("RGBA").convert("RGB")
            tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.png")
            rgb.save(tmp, format="PNG")
            os.replace(tmp, out)
            return ImageCheck(f, "converted", "; ".join(reasons), use=str(out), size=dims)
    except UnidentifiedImageError:
        return ImageCheck(f, "skipped", "not an image")
    except (OSError, SyntaxError, ValueError) as exc:
        msg = first_line(exc) or type(exc).__name__
        if "truncated" in msg.lower():
            msg = "truncated image"
        return ImageCheck(f, "skipped", f"corrupt image: {msg}")
    except Image.DecompressionBombError:
        return ImageCheck(f, "skipped", "image too large (decompression bomb guard)")


def check_images(files: list[str], workers: int | None = None) -> dict[str, ImageCheck]:
    """Check ``files`` in parallel (cached); returns file -> ImageCheck."""
    cache = _CheckCache()
    results: dict[str, ImageCheck] = {}
    todo: list[tuple[Path, str]] = []
    for f in files:
        p = Path(f)
        try:
            key = _CheckCache.key(p)
        except OSError as exc:
            results[f] = ImageCheck(f, "skipped", f"unreadable: {exc.strerror}")
            continue
        hit = cache.get(key)
        if hit is not None:
            hit.file = f
            results[f] = hit
        else:
            todo.append((p, key))
    if todo:
        log.info("checking %d images (%d cached)", len(todo), len(files) - len(todo))
        with ThreadPoolExecutor(max_workers=workers or min(8, usable_cpus() * 2)) as pool:
            for (p, key), chk in zip(todo, pool.map(lambda a: _check_one(*a), todo)):
                results[str(p)] = chk
                if not chk.reason.startswith("unreadable"):
                    cache.put(key, chk)
        cache.save()
    else:
        log.info("checked %d images (all cached)", len(files))
    return results


def _apply(split: Split, results: dict[str, ImageCheck]) -> Split:
    out = Split()
    for f, y in zip(split.files, split.labels):
        chk = results[f]
        if chk.status == "skipped":
            continue
        out.files.append(chk.use if chk.status == "converted" else f)
        out.labels.append(y)
    return out


def checked(dataset: Dataset) -> Dataset:
    """Check every image of ``dataset``; returns a dataset of decodable files plus a report."""
    files = dataset.train.files + dataset.val.files
    results = check_images(files)
    skipped = [{"file": c.file, "reason": c.reason} for c in results.values() if c.status == "skipped"]
    converted = [{"file": c.file, "reason": c.reason} for c in results.values() if c.status == "converted"]
    train, val = _apply(dataset.train, results), _apply(dataset.val, results)
    report = {
        "checked": len(files),
        "ok": sum(c.status == "ok" for c in results.values()),
        "converted": sorted(converted, key=lambda d: d["file"]),
        "skipped": sorted(skipped, key=lambda d: d["file"]),
    }
    for item in report["skipped"]:
        log.warning("skipped %s: %s", item["file"], item["reason"])
    for item in report["converted"]:
        log.info("converted %s: %s", item["file"], item["reason"])
    if skipped or converted:
        log.warning("%d images checked: %d skipped, %d converted to RGB", len(files), len(skipped), len(converted))
    out = Dataset(dataset.classes, train, val, dataset.source, dataset.layout, report)
    for name, split in (("train", train), ("validation", val)):
        if len(split) == 0 and len(getattr(dataset, "train" if name == "train" else "val")) > 0:
            raise EdgecatError(f"no readable images left in the {name} split of {dataset.source}")
        empty = [c for c, n in split.counts(dataset.classes).items() if n == 0 and len(split)]
        if empty:
            raise EdgecatError(f"class(es) with no readable images in the {name} split: {', '.join(empty)}")
    return out
