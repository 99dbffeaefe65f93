"""The bundle's record of which files it was trained and validated on (``splits.json``).

Export (parity checks, calibration), evaluate, bench and ``--backend auto`` reuse the validation
split when the files are still on the machine, so "the bundle's validation data" means the same
images everywhere. The image sets they are judged or timed on are picked here too (parity images,
labelled sets, bench's image set), with one label rule: a file's class is its class folder (or Kaggle
name) as :func:`edgecat.data.discover` reads it, matched exactly against the model's classes.

Files are recorded by absolute path, so a command run from any working folder finds them, together
with the data folder (``root``) and that folder relative to the bundle (``root_from_bundle``), so a
bundle moved or copied together with its data (``runs/x`` and ``data/`` side by side) still finds
them. Older records held the paths as given to ``--data`` (relative to the folder training ran in):
they are read relative to the working folder, else to the folder above the bundle that holds them.
When the files are not on this machine, :func:`missing_hint` says where they were looked for.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecat import imaging
from edgecat.bundle import Bundle
from edgecat.data import Dataset, checked, discover
from edgecat.errors import EdgecatError
from edgecat.fsutil import write_json

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
SPLITS_FORMAT = 2
PARTS = ("train", "validation")
#: how an image-set description names random-pixel images (what export looks for to warn)
SYNTHETIC = "synthetic images"
#: most labelled images a precision table or auto's agreement check scores
DEFAULT_LIMIT = 1000


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def write_splits(bundle: Bundle, dataset: Dataset) -> None:
    """Record ``dataset``'s files: absolute paths (relative ones are taken against the working folder
    now, the one they were found from), the data folder, and that folder relative to the bundle."""
    root = _absolute(dataset.source)
    try:
        from_bundle: str | None = Path(os.path.relpath(root, _absolute(bundle.path))).as_posix()
    except ValueError:  # another drive (Windows): no relative path exists
        from_bundle = None
    write_json(
        bundle.path / SPLITS_FILE,
        {
            "format": SPLITS_FORMAT,
            "classes": dataset.classes,
            "source": dataset.source,
            "root": root,
            "root_from_bundle": from_bundle,
            "train": [[_absolute(f), y] for f, y in zip(dataset.train.files, dataset.train.labels)],
            "validation": [[_absolute(f), y] for f, y in zip(dataset.val.files, dataset.val.labels)],
        },
    )


@dataclass
class SplitRecord:
    """splits.json as read, and where its files were looked for."""

    rows: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    root: str | None = None
    #: folders the files were looked for in (for the message when they are not here)
    looked_in: list[str] = field(default_factory=list)
    #: an older record's data folder as given to --data (relative to the folder training ran in)
    legacy_source: str | None = None


def _read(bundle: Bundle) -> SplitRecord | None:
    path = bundle.path / SPLITS_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        rows = {part: [(str(f), int(y)) for f, y in raw.get(part, [])] for part in PARTS}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("%s is unreadable (%s): the bundle's own images are not used", path, exc)
        return None
    root = raw.get("root") if isinstance(raw.get("root"), str) else None
    rec = SplitRecord(rows=rows, root=root)
    rec.looked_in = [str(p) for p in _roots(bundle, raw)]
    if root is None and isinstance(raw.get("source"), str) and not os.path.isabs(raw["source"]):
        rec.legacy_source = raw["source"]
    return rec


def _roots(bundle: Bundle, raw: dict) -> list[Path]:
    """Where the data folder may be now: as recorded, and beside the bundle as it was then."""
    out = []
    if isinstance(raw.get("root"), str):
        out.append(Path(raw["root"]))
    rel = raw.get("root_from_bundle")
    if isinstance(rel, str):
        out.append(Path(os.path.normpath(Path(_absolute(bundle.path)) / rel)))
    if not out and isinstance(raw.get("source"), str):  # an older record: --data as given
        out.append(Path(_absolute(raw["source"])))
    return list(dict.fromkeys(out))


def _relocate(bundle: Bundle, files: list[str], raw_root: str | None, roots: list[Path]) -> list[str]:
    """``files`` as paths that exist here when a consistent place for them is found, else as given.

    Absolute paths under the recorded root are moved to each candidate root in turn; relative ones
    (older records) are tried against the working folder, then each folder above the bundle (the
    folder training ran in usually holds both ``runs/`` and the data)."""
    if not files:
        return files
    sample = files[:: max(1, len(files) // 8)][:8]

    def best(candidates: list[Path], mapper) -> list[str] | None:  # type: ignore[no-untyped-def]
        for base in candidates:
            if any(Path(mapper(base, f)).exists() for f in sample):
                return [mapper(base, f) for f in files]
        return None

    if any(Path(f).exists() for f in sample):
        return [_absolute(f) for f in files]
    if all(os.path.isabs(f) for f in files):
        if raw_root is None:
            return files
        root = Path(raw_root)

        def moved(base: Path, f: str) -> str:
            try:
                return str(base / Path(f).relative_to(root))
            except ValueError:  # a converted copy in the image cache, not under the data folder
                return f

        return best([r for r in roots if r != root], moved) or files
    bases = [Path.cwd(), *Path(_absolute(bundle.path)).parents]
    return best(bases, lambda base, f: str(base / f) if not os.path.isabs(f) else f) or files


def split_files(bundle: Bundle, part: str, existing_only: bool = True) -> list[tuple[str, int]]:
    """(file, label) pairs of the bundle's ``part`` split ("train" or "validation"), as absolute
    paths that exist here (empty if none, or if splits.json is unreadable: the callers then fall back
    to other images, or say what to pass with :func:`missing_hint`)."""
    rec = _read(bundle)
    if rec is None:
        return []
    rows = rec.rows.get(part, [])
    files = _relocate(bundle, [f for f, _ in rows], rec.root, [Path(r) for r in rec.looked_in])
    out = [(f, y) for f, (_, y) in zip(files, rows)]
    if existing_only:
        out = [(f, y) for f, y in out if Path(f).exists()]
    return out


def validation_files(bundle: Bundle, existing_only: bool = True) -> list[tuple[str, int]]:
    """(file, label) pairs of the bundle's validation split that exist here (empty if none)."""
    return split_files(bundle, "validation", existing_only)


def missing_hint(bundle: Bundle, part: str, flag: str) -> str:
    """Why the bundle's ``part`` images are not here and what to pass instead: one line naming the
    folders they were looked for in (``flag``: ``--data``, ``--calib`` or ``--eval``)."""
    what = "training" if part == "train" else "validation"
    rec = _read(bundle)
    if rec is None:
        where = f"{bundle.path} has no {SPLITS_FILE} (it records them when edgecat trains the model)"
    elif not rec.rows.get(part):
        where = f"{bundle.path / SPLITS_FILE} lists no {what} images"
    elif rec.legacy_source is not None:
        where = (f"they are not on this machine (looked for {rec.legacy_source}/ in the working folder and in "
                 f"each folder above the bundle)")
    else:
        looked = " and ".join(rec.looked_in) or "the working folder"
        where = f"they are not on this machine (looked for the data folder at {looked})"
    return f"bundle {bundle.path}: its {what} images are not here: {where}; pass {flag} DIR"


def labelled_files(bundle: Bundle, data: str | Path | None = None, check: bool = False,
                   flag: str = "") -> tuple[list[str], list[int], str]:
    """(files, labels as the model's class indices, description) of a labelled folder ``data`` (class
    folders; a split layout's validation part; ``check``: undecodable files dropped first), else of the
    bundle's validation split (empty when its files are not on this machine). A class the model does
    not know is an error naming ``flag`` (the option that gave the folder)."""
    if data is None:
        pairs = validation_files(bundle)
        return [f for f, _ in pairs], [y for _, y in pairs], "bundle validation split"
    ds = discover(data, evaluation=True)
    ds = checked(ds) if check else ds
    unknown = sorted(set(ds.classes) - set(bundle.classes))
    if unknown:
        raise EdgecatError(f"{flag}{data} has classes the model does not know: {', '.join(unknown)} "
                           f"(model classes: {', '.join(bundle.classes)})")
    return list(ds.val.files), [bundle.classes.index(ds.classes[i]) for i in ds.val.labels], str(data)


def labelled_set(bundle: Bundle, data: str | Path | None = None, limit: int = DEFAULT_LIMIT,
                 exclude: set[str] | None = None) -> tuple[list[str], list[int] | None, str, int]:
    """(files, labels or None, description, how many ``exclude`` left out): :func:`labelled_files` of
    ``data`` (``--eval``) or the bundle's validation split, less ``exclude`` (images INT8 was
    calibrated on), at most ``limit`` of them (a fixed sample); no files (labels None) when neither
    is here."""
    files, labels, what = labelled_files(bundle, data, flag="--eval ")
    if not files and data is None:
        return [], None, f"{SYNTHETIC} (no labelled data: pass --eval DIR)", 0
    if not files:
        raise EdgecatError(f"no labelled images found in {what}")
    dropped = 0
    if exclude:
        keep = [i for i, f in enumerate(files) if os.path.abspath(f) not in exclude]
        dropped = len(files) - len(keep)
        if not keep:
            raise EdgecatError(f"every image in {what} was used for INT8 calibration: scoring INT8 on its "
                               "calibration images flatters it; pass --eval DIR with other labelled photos")
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    if len(files) > limit:
        idx = np.random.default_rng(0).choice(len(files), size=limit, replace=False)
        idx.sort()
        files = [files[i] for i in idx]
        labels = [labels[i] for i in idx]
    return files, labels, what, dropped


def parity_images(bundle: Bundle, n: int = 16, extra_dirs: list[str] | None = None,
                  seed: int = 0, exclude: set[str] | None = None) -> tuple[np.ndarray, str]:
    """Images for parity checks and timing: real ones from ``extra_dirs`` (folders the user passed)
    and the bundle's validation split when they are on this machine, less ``exclude`` (files another
    step must not be judged on: INT8's calibration images); synthetic otherwise, which the description
    says (``"16 synthetic images"``: export warns about it). Returns (batch, description)."""
    size = bundle.input_size
    candidates: list[str] = []
    for d in extra_dirs or []:
        try:
            candidates += [str(p) for p in imaging.list_images([d])]
        except EdgecatError:
            pass
    candidates += [f for f, _ in validation_files(bundle)]
    if exclude:
        skip = {os.path.abspath(f) for f in exclude}
        candidates = [f for f in candidates if os.path.abspath(f) not in skip]
    loaded = imaging.load_batch(candidates, size, limit=n)
    if len(loaded.files) >= min(n, 4):
        return loaded.images.astype(np.float32), f"{len(loaded.files)} real images"
    rng = np.random.default_rng(seed)
    synth = rng.integers(0, 256, size=(n, size[0], size[1], 3)).astype(np.float32)
    return synth, f"{n} {SYNTHETIC}"


@dataclass
class ImageSet:
    """Files to time end to end, with each one's class index where its folder names one."""

    files: list[Path]
    labels: list[int | None]
    synthetic: bool = False

    @property
    def labelled(self) -> bool:
        return any(lab is not None for lab in self.labels)


def folder_labels(bundle: Bundle, root: Path) -> dict[str, int]:
    """Absolute path -> class index of the images in ``root`` that :func:`labelled_files` labels (the
    one label rule); empty, with the reason logged, where ``root`` is not a labelled set of the
    model's classes (its images are then timed without accuracy)."""
    if not root.is_dir():
        return {}
    try:
        files, labels, _ = labelled_files(bundle, root, flag="--images ")
    except EdgecatError as exc:
        log.info("no accuracy from %s: %s", root, exc)
        return {}
    return {_absolute(f): y for f, y in zip(files, labels)}


def image_set(bundle: Bundle, images: str | Path | None, workdir: Path, n_synthetic: int = 32) -> ImageSet:
    """Files to time end to end (bench). Class folders named like the bundle's classes give accuracy.
    Without ``images``: synthetic JPEGs at twice the input size (decode + resize are still real)."""
    if images is None:
        from edgecat.synthetic import make_image, write_image

        rng = np.random.default_rng(0)
        h, _ = bundle.input_size
        files = []
        for i in range(n_synthetic):
            p = workdir / f"synthetic-{i:03d}.jpg"
            write_image(p, make_image(i % 2, size=2 * h, rng=rng))
            files.append(p)
        return ImageSet(files, [None] * len(files), synthetic=True)
    root = Path(images)
    if not root.exists():
        raise EdgecatError(f"image folder not found: {root}")
    files = imaging.list_images([root])
    if not files:
        raise EdgecatError(f"no images in {root} (looked for {', '.join(sorted(imaging.IMAGE_EXTENSIONS))})")
    from edgecat.data import check_images  # cached by path+size+mtime: repeat runs cost nothing

    checks = check_images([str(f) for f in files])
    bad = [f for f in files if checks[str(f)].status == "skipped"]
    if bad:
        log.warning("bench: leaving out %d unreadable image(s) in %s, e.g. %s (%s)", len(bad), root,
                    bad[0].name, checks[str(bad[0])].reason)
        files = [f for f in files if checks[str(f)].status != "skipped"]
        if not files:
            raise EdgecatError(f"no readable images in {root} ({len(bad)} corrupt or not images)")
    known = folder_labels(bundle, root)
    labels = [known.get(_absolute(f)) for f in files]
    # a fixed shuffle, so a short run still sees every class
    order = list(range(len(files)))
    random.Random(0).shuffle(order)
    return ImageSet([files[i] for i in order], [labels[i] for i in order])
