"""Small, learnable two-class image sets and videos for the demo and the tests (no downloads).

"cat" images hold warm-coloured discs, "dog" images cool-coloured squares, on noisy backgrounds: easy
enough that a tiny network learns them in a few epochs, varied enough that it has to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog")


def make_image(label: int, size: int = 64, rng: np.random.Generator | None = None) -> np.ndarray:
    """One uint8 RGB image of class ``label`` (0 = cat, 1 = dog)."""
    import cv2

    rng = rng or np.random.default_rng()
    img = rng.integers(40, 110, size=(size, size, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    r = int(rng.integers(size // 6, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    if label == 0:
        color = (int(rng.integers(200, 256)), int(rng.integers(80, 160)), int(rng.integers(0, 60)))
        cv2.circle(img, (cx, cy), r, color, -1)
    else:
        color = (int(rng.integers(0, 60)), int(rng.integers(80, 160)), int(rng.integers(200, 256)))
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, -1)
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def make_dataset(
    root: str | Path, per_class: int = 40, size: int = 64, layout: str = "split",
    val_fraction: float = 0.25, seed: int = 0,
) -> Path:
    """Write a two-class set. layout: ``split`` (train/ + validation/), ``flat`` (class folders)
    or ``kaggle`` (cat.1.jpg files in one folder)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_val = int(round(per_class * val_fraction))
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            img = make_image(label, size, rng)
            if layout == "split":
                sub = "validation" if i < n_val else "train"
                path = root / sub / name / f"{name}_{i:04d}.jpg"
            elif layout == "flat":
                path = root / name / f"{name}_{i:04d}.jpg"
            elif layout == "kaggle":
                path = root / f"{name}.{i}.jpg"
            else:
                raise ValueError(f"unknown layout {layout}")
            write_image(path, img)
    return root


def make_video(path: str | Path, labels: list[int], size: tuple[int, int] = (640, 480),
               fps: float = 30.0, seed: int = 0) -> Path:
    """An MP4 whose frame i shows an image of class ``labels[i]`` scaled to ``size`` (w, h)."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write video {path}")
    try:
        for label in labels:
            img = cv2.resize(make_image(label, 96, rng), size, interpolation=cv2.INTER_LINEAR)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
