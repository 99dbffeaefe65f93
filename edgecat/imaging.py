"""The one image path every edge command shares: decode, RGB order, resize, batch.

predict, evaluate, bench and stream all call these functions, so a benchmark measures exactly what
deployment does. Resizing is bilinear with half-pixel centres, matching ``tf.image.resize`` used in
training, so deployment sees the same pixels the model was trained on.

Decoder choice, measured on this project's 2-core CPU over 200 validation photos (~435x374 JPEG,
benchmarks/README.md): OpenCV ``imdecode`` 0.94 ms, OpenCV at 1/2 DCT scale 0.70 ms, Pillow with
``draft()`` 2.1 ms, Pillow full 2.9 ms. So: OpenCV, decoding straight to RGB
(``IMREAD_COLOR_RGB`` where the OpenCV has it); Pillow is the fallback for what OpenCV cannot read.

The libjpeg DCT-domain reduced decode (1/2, 1/4, 1/8 for JPEGs at least 2x the model input, never
below it) is opt-in (``reduced=True`` or ``EDGECAT_REDUCED_DECODE=1``): it saves ~0.25 ms per photo
but it is an area-style downscale where training used a full decode + plain bilinear resize, and on
the 128 px cats-vs-dogs MobileNetV2 it changed 6% of the labels (accuracy 0.702 -> 0.710), which is
the drift between training and deployment this module exists to prevent.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgecat.errors import EdgecatError, first_line

log = logging.getLogger(__name__)

#: default for ``reduced`` in :func:`decode_image` (see the module docstring)
REDUCED_DECODE = os.environ.get("EDGECAT_REDUCED_DECODE", "") == "1"

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def _cv2():
    import cv2

    return cv2


@lru_cache(maxsize=1)
def _flags() -> dict[int, int]:
    """imdecode flags per DCT reduction factor, RGB output where OpenCV >= 4.11 offers it."""
    cv2 = _cv2()
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)
    reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
               8: cv2.IMREAD_REDUCED_COLOR_8}
    if rgb is None:
        return reduced
    # IMREAD_REDUCED_COLOR_k = IMREAD_COLOR | k-bit; swap the BGR bit for the RGB one
    return {k: (v & ~cv2.IMREAD_COLOR) | rgb for k, v in reduced.items()}


def _decodes_rgb() -> bool:
    return getattr(_cv2(), "IMREAD_COLOR_RGB", None) is not None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(h, w) from a JPEG's SOF header, or None when ``data`` is not a (readable) JPEG.

    A few microseconds, where ``PIL.Image.open(...).size`` costs ~0.5 ms: it decides whether the
    reduced-scale decode can be used without going below the model's input size.
    """
    buf = data.tobytes() if isinstance(data, np.ndarray) else data
    if len(buf) < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    i, n = 2, len(buf)
    while i + 9 < n:
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = (buf[i + 2] << 8) | buf[i + 3]
        if marker in _SOF:
            h = (buf[i + 5] << 8) | buf[i + 6]
            w = (buf[i + 7] << 8) | buf[i + 8]
            return (h, w) if h and w else None
        if marker == 0xDA:  # start of scan before any SOF
            return None
        i += 2 + length
    return None


def reduction_for(image_hw: tuple[int, int] | None, target: tuple[int, int] | None) -> int:
    """Largest DCT reduction (1, 2, 4, 8) that keeps the decoded image at least ``target`` in size."""
    if image_hw is None or target is None:
        return 1
    h, w = image_hw
    th, tw = target
    for k in (8, 4, 2):
        if h // k >= th and w // k >= tw:
            return k
    return 1


def decode_bytes(data: np.ndarray, target: tuple[int, int] | None = None, what: str = "image",
                 reduced: bool | None = None) -> np.ndarray:
    """Encoded bytes (uint8 array) -> uint8 RGB (H, W, 3); see :func:`decode_image`."""
    cv2 = _cv2()
    if data.size == 0:
        raise EdgecatError(f"empty image file: {what}")
    reduced = REDUCED_DECODE if reduced is None else reduced
    k = reduction_for(jpeg_size(data[:65536]), target) if reduced and target is not None else 1
    img = cv2.imdecode(data, _flags()[k])
    if img is None:
        return _decode_with_pillow(what, data)
    if not _jpeg_ends_cleanly(data):
        # libjpeg fills a truncated scan with grey and OpenCV returns it as if whole; Pillow
        # raises instead, so a suspicious file is confirmed there (rare: only files whose last
        # bytes are not the end-of-image marker, e.g. trailing camera data)
        _decode_with_pillow(what, data)
    if img.ndim == 2:  # defensive: some codecs ignore the colour flag
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    return img if _decodes_rgb() else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


def _jpeg_ends_cleanly(data: np.ndarray) -> bool:
    """False for a JPEG whose last bytes (padding aside) are not the end-of-image marker."""
    if data.size < 4 or data[:2].tobytes() != _JPEG_SOI:
        return True  # not a JPEG: OpenCV/Pillow report other formats' truncation themselves
    return data[-64:].tobytes().rstrip(b"\x00\r\n\t ").endswith(_JPEG_EOI)


def decode_image(path: str | Path, target: tuple[int, int] | None = None,
                 reduced: bool | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3).

    ``target`` (h, w) is the size the caller will resize to; with ``reduced`` (default
    :data:`REDUCED_DECODE`) a JPEG at least twice that size is decoded at 1/2, 1/4 or 1/8 scale by
    libjpeg (less work, still >= target). Falls back to Pillow for formats OpenCV cannot read.
    """
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except FileNotFoundError:
        raise EdgecatError(f"image not found: {path}") from None
    except (IsADirectoryError, PermissionError, OSError) as exc:
        raise EdgecatError(f"cannot read image {path}: {exc.strerror or exc}") from None
    return decode_bytes(data, target, str(path), reduced)


def _decode_with_pillow(path: Path | str, data: np.ndarray | None = None) -> np.ndarray:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        src = io.BytesIO(data.tobytes()) if data is not None else path
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                im.load()
                rgb = np.asarray(im.convert("RGB"))
        _report_warnings(caught, path, Image.DecompressionBombWarning)
        return rgb
    except UnidentifiedImageError as exc:  # its message names the BytesIO, not the file
        raise EdgecatError(f"cannot decode image {path}: not an image format OpenCV or Pillow can read") from exc
    except Image.DecompressionBombError as exc:  # more than twice Pillow's limit: Pillow refuses it
        raise EdgecatError(f"cannot decode image {path}: larger than Pillow's decompression-bomb limit allows "
                           f"({first_line(exc).split(',')[0]}; PIL.Image.MAX_IMAGE_PIXELS sets the limit)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise EdgecatError(f"cannot decode image {path}: {exc}") from exc


def _report_warnings(caught: list[warnings.WarningMessage], path: Path | str, bomb: type[Warning]) -> None:
    """Pillow's decompression-bomb warning as one log line naming the file (it is decoded: the
    warning is below Pillow's refusal limit); any other warning goes on as it came."""
    for w in caught:
        if issubclass(w.category, bomb):
            log.warning("large image %s: %s; decoded anyway", path, first_line(w.message).split(",")[0])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (h, w) with half-pixel centres (= ``tf.image.resize`` bilinear without
    antialias); a no-op when the image already has that size."""
    h, w = size
    if img.shape[0] == h and img.shape[1] == w:
        return img
    cv2 = _cv2()
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    return _cv2().cvtColor(frame, _cv2().COLOR_BGR2RGB)


def load_for_model(path: str | Path, size: tuple[int, int], reduced: bool | None = None) -> np.ndarray:
    """File -> uint8 RGB at the model's input size."""
    return resize(decode_image(path, size, reduced), size)


def rgb_images(arrays: Sequence[Any]) -> list[np.ndarray]:
    """Arrays a caller hands in as images: each an HxWx3 uint8 RGB image, or an NxHxWx3 uint8 batch
    of them. Anything else (grayscale HxW, RGBA, floats, empty) is one EdgecatError saying what is
    expected: a silent cast would turn 0-1 floats into a black image."""
    out: list[np.ndarray] = []
    for i, x in enumerate(arrays):
        arr = np.asarray(x)
        if arr.dtype == np.uint8 and arr.size and arr.shape[-1:] == (3,) and arr.ndim in (3, 4):
            out.extend(arr if arr.ndim == 4 else [arr])
            continue
        what = f"array {i}" if len(arrays) > 1 else "array"
        raise EdgecatError(f"{what}: expected an HxWx3 uint8 RGB image or an NxHxWx3 uint8 batch, "
                           f"got shape {tuple(arr.shape)} {arr.dtype}{_array_hint(arr)}")
    return out


def _array_hint(arr: np.ndarray) -> str:
    if arr.size == 0:
        return " (empty)"
    if arr.ndim == 2:
        return " (grayscale: np.stack([a] * 3, axis=-1))"
    if arr.ndim in (3, 4) and arr.shape[-1] == 4:
        return " (RGBA: a[..., :3])"
    if arr.ndim in (3, 4) and arr.shape[-1] == 3:
        return " (0-1 floats: (a * 255).round().astype(np.uint8))" if arr.dtype.kind == "f" \
            else " (0-255 values: a.astype(np.uint8))"
    return ""


def to_batch(images: Sequence[np.ndarray], dtype: str = "float32") -> np.ndarray:
    """Stack same-size uint8 RGB images into an NHWC batch with raw 0-255 values."""
    batch = np.stack(images, axis=0)
    return batch.astype(dtype, copy=False)


@dataclass
class LoadedBatch:
    """Images read for a model: the uint8 NHWC batch, the files it holds (in order) and their positions
    in the input, and why the others were skipped (position -> one-line reason, ``skipped``: their files)."""

    images: np.ndarray
    files: list[str]
    kept: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def load_batch(files: Iterable[str | Path], size: tuple[int, int], limit: int | None = None) -> LoadedBatch:
    """Decode and resize ``files`` (up to ``limit`` readable ones) into one uint8 batch; unreadable files
    are skipped and reported, never fatal, so every caller treats a damaged photo the same way."""
    images: list[np.ndarray] = []
    out = LoadedBatch(np.zeros((0, size[0], size[1], 3), np.uint8), [])
    for i, f in enumerate(files):
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append(load_for_model(f, size))
            out.files.append(str(f))
            out.kept.append(i)
        except EdgecatError as exc:
            out.errors[i] = str(exc)
            out.skipped.append(str(f))
    if images:
        out.images = to_batch(images, dtype="uint8")
    return out


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
