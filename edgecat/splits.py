"""The bundle's record of which files it was trained and validated on.

Export (parity checks, calibration), evaluate and bench reuse the validation split when the files
are still on the machine, so "the bundle's validation data" means the same images everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecat.bundle import Bundle
from edgecat.data import Dataset, checked, discover
from edgecat.errors import EdgecatError
from edgecat.fsutil import write_json

SPLITS_FILE = "splits.json"


def write_splits(bundle: Bundle, dataset: Dataset) -> None:
    write_json(
        bundle.path / SPLITS_FILE,
        {
            "classes": dataset.classes,
            "source": dataset.source,
            "train": [[f, y] for f, y in zip(dataset.train.files, dataset.train.labels)],
            "validation": [[f, y] for f, y in zip(dataset.val.files, dataset.val.labels)],
        },
    )


def split_files(bundle: Bundle, part: str, existing_only: bool = True) -> list[tuple[str, int]]:
    """(file, label) pairs of the bundle's ``part`` split ("train" or "validation") that exist here
    (empty if none, or if splits.json is unreadable: the callers then fall back to other images)."""
    path = bundle.path / SPLITS_FILE
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())[part]
    except (OSError, ValueError, KeyError):
        return []
    out = [(str(f), int(y)) for f, y in rows]
    if existing_only:
        out = [(f, y) for f, y in out if Path(f).exists()]
    return out


def validation_files(bundle: Bundle, existing_only: bool = True) -> list[tuple[str, int]]:
    """(file, label) pairs of the bundle's validation split that exist here (empty if none)."""
    return split_files(bundle, "validation", existing_only)


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
