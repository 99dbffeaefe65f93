"""The repository speaks of the product: no tracker numbers and no paths of the machine a file was
written on, in code, tests, docs, deployment files or recorded results.

The patterns are written so that they do not match their own source, so this file needs no exception.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: what does not belong, with why (printed with every hit)
FORBIDDEN = [
    (re.compile(r"\bissues?[ \t]*#?[0-9]+", re.IGNORECASE), "a tracker number"),
    (re.compile(r"(?<![\w.~-])/(?:work|root)/"), "a path of the development machine"),
    # a user's home; the containers' own user, edgecat, is allowed (its WORKDIR in deploy/cpu/Dockerfile)
    (re.compile(r"(?<![\w.~-])/home/(?!edgecat\b)[A-Za-z_][\w.-]*"), "a path of the development machine"),
]


def tracked_files() -> list[Path]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def hits(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in FORBIDDEN:
            m = pattern.search(line)
            if m:
                found.append(f"{number}: {m.group(0)!r} ({why})")
    return found


def test_patterns_find_what_they_are_for() -> None:
    # split so that this file's own text holds none of them
    samples = ["see Issue " + "12", "fixed in issue " + "#7", "(issues " + "3)", "cp /work" + "/runs/x .",
               "/root" + "/.cache", "/home" + "/me/data"]
    assert all(hits(s) for s in samples), [s for s in samples if not hits(s)]
    # the containers' own home, as the deployment files write it, is not a machine path
    dockerfile = (ROOT / "deploy" / "cpu" / "Dockerfile").read_text(encoding="utf-8").splitlines()
    workdir = [line for line in dockerfile if line.startswith("WORKDIR")][-1]  # where the container runs
    assert workdir.split()[-1].startswith("/home" + "/"), workdir  # else this sample tests nothing
    assert not hits(workdir + "\nthe issue with FP16 inputs\nruns/" + "work/x and /tmp/scratch")


def test_no_tracker_numbers_or_machine_paths() -> None:
    bad = []
    for path in tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # pictures and other binaries; a file deleted but not yet staged
        bad += [f"{path.relative_to(ROOT)}:{hit}" for hit in hits(text)]
    assert not bad, "\n".join(bad)
