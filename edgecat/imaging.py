"""The one image path every edge command shares: decode, RGB order, resize, batch.

predict, evaluate, bench and stream all call these functions, so a benchmark measures exactly what
deployment does. Resizing is bilinear with half-pixel centres, matching ``tf.image.resize`` used in
training, so deployment sees the same pixels the model was trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edgecat.errors import EdgecatError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _cv2():
    import cv2

    return cv2


def decode_image(path: str | Path, target: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3).

    ``target`` (h, w) is the size the caller will resize to; decoders may use it to do less work.
    Falls back to Pillow for formats OpenCV cannot read (GIF, CMYK oddities).
    """
    cv2 = _cv2()
    path = Path(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.exists() else None
    if data is None:
        raise EdgecatError(f"image not found: {path}")
    if data.size == 0:
        raise EdgecatError(f"empty image file: {path}")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        return _decode_with_pillow(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise EdgecatError(f"cannot decode image {path}: {exc}") from exc


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (h, w); a no-op when the image already has that size."""
    h, w = size
    if img.shape[0] == h and img.shape[1] == w:
        return img
    cv2 = _cv2()
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(frame, _cv2().COLOR_BGR2RGB)


def load_for_model(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """File -> uint8 RGB at the model's input size."""
    return resize(decode_image(path, size), size)


def to_batch(images: Sequence[np.ndarray], dtype: str = "float32") -> np.ndarray:
    """Stack same-size uint8 RGB images into an NHWC batch with raw 0-255 values."""
    batch = np.stack(images, axis=0)
    return batch.astype(dtype, copy=False)


def list_images(paths: Iterable[str | Path], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.glob("*")
            out.extend(sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file():
            out.append(p)
        else:
            raise EdgecatError(f"no such file or folder: {p}")
    return out
