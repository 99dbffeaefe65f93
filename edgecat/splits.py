"""The bundle's record of which files it was trained and validated on (``splits.json``).

Export (parity checks, calibration), evaluate and bench reuse the validation split when the files
are still on the machine, so "the bundle's validation data" means the same images everywhere.

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
from dataclasses import dataclass, field
from pathlib import Path

from edgecat.bundle import Bundle
from edgecat.data import Dataset, checked, discover
from edgecat.errors import EdgecatError
from edgecat.fsutil import write_json

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.json"
SPLITS_FORMAT = 2
PARTS = ("train", "validation")


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
