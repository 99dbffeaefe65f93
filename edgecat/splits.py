"""The bundle's record of which files it was trained and validated on.

Export (parity checks, calibration), evaluate and bench reuse the validation split when the files
are still on the machine, so "the bundle's validation data" means the same images everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgecat.bundle import Bundle
from edgecat.data import Dataset
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


def validation_files(bundle: Bundle, existing_only: bool = True) -> list[tuple[str, int]]:
    """(file, label) pairs of the bundle's validation split that exist here (empty if none)."""
    path = bundle.path / SPLITS_FILE
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())["validation"]
    except (OSError, ValueError, KeyError):
        return []
    out = [(str(f), int(y)) for f, y in rows]
    if existing_only:
        out = [(f, y) for f, y in out if Path(f).exists()]
    return out
