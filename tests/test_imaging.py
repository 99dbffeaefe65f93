"""The shared decode/resize path: right size, RGB order, reduced-scale JPEG decode, training parity."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import needs_tf
from edgecat import imaging
from edgecat.errors import EdgecatError


def _jpeg(path, h, w, colour=(220, 30, 40)):
    """A JPEG of size (h, w): a solid RGB colour with a gradient, so resizing has work to do."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = colour
    img[..., 2] = np.linspace(0, 80, w, dtype=np.uint8)[None, :]
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_jpeg_size_reads_header(tmp_path):
    p = _jpeg(tmp_path / "a.jpg", 123, 321)
    data = np.fromfile(str(p), np.uint8)
    assert imaging.jpeg_size(data) == (123, 321)
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((5, 5, 3), np.uint8))
    assert imaging.jpeg_size(np.fromfile(str(png), np.uint8)) is None
    assert imaging.jpeg_size(b"\xff\xd8\xff") is None


@pytest.mark.parametrize("hw,target,k", [((1000, 800), (224, 224), 2), ((1000, 1000), (224, 224), 4),
                                          ((400, 500), (224, 224), 1), ((2000, 2000), (128, 128), 8),
                                          (None, (224, 224), 1)])
def test_reduction_never_goes_below_target(hw, target, k):
    assert imaging.reduction_for(hw, target) == k


def test_reduced_decode_keeps_rgb_and_target(tmp_path):
    p = _jpeg(tmp_path / "big.jpg", 480, 640)
    full = imaging.decode_image(p)
    assert imaging.decode_image(p, (100, 100)).shape == full.shape  # default: as in training
    small = imaging.decode_image(p, (100, 100), reduced=True)  # 1/4 scale: 120 x 160 >= 100 x 100
    assert full.shape == (480, 640, 3)
    assert small.shape == (120, 160, 3)
    assert full.dtype == small.dtype == np.uint8
    # RGB order: the red channel is the bright one
    assert small[..., 0].mean() > 200 > small[..., 1].mean() + 100
    out = imaging.load_for_model(p, (100, 100), reduced=True)
    ref = imaging.resize(full, (100, 100))
    assert out.shape == (100, 100, 3)
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3  # same picture, less work


def test_pillow_fallback_and_errors(tmp_path):
    gif = tmp_path / "a.gif"
    Image.new("RGB", (20, 10), (0, 0, 255)).save(gif)
    img = imaging.decode_image(gif)
    assert img.shape == (10, 20, 3) and img[..., 2].mean() > 200
    with pytest.raises(EdgecatError, match="not found"):
        imaging.decode_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(EdgecatError, match="empty"):
        imaging.decode_image(tmp_path / "empty.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    with pytest.raises(EdgecatError, match="cannot decode"):
        imaging.decode_image(tmp_path / "bad.jpg")
    with pytest.raises(EdgecatError, match="no such file"):
        imaging.list_images([tmp_path / "nowhere"])


def test_truncated_jpeg_is_refused_not_half_grey(tmp_path):
    src = _jpeg(tmp_path / "whole.jpg", 240, 320)
    data = src.read_bytes()
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    # OpenCV 5 refuses it itself; OpenCV 4 (JetPack) returns a half-grey image, so edgecat checks too
    assert not imaging._jpeg_ends_cleanly(np.fromfile(str(half), np.uint8))
    with pytest.raises(EdgecatError, match="truncated"):
        imaging.decode_image(half)
    padded = tmp_path / "padded.jpg"  # trailing bytes after the end marker: still a whole image
    padded.write_bytes(data + b"\x00" * 10 + b"camera trailer")
    np.testing.assert_array_equal(imaging.decode_image(padded), imaging.decode_image(src))


def test_large_image_is_one_log_line_naming_the_file(tmp_path, monkeypatch, caplog, recwarn):
    """Pillow's decompression-bomb guard, with its limit lowered (its own setting) so a small photo
    crosses it: above the limit a warning line naming the file, above twice the limit a refusal."""
    src = _jpeg(tmp_path / "whole.jpg", 60, 80)  # 4800 pixels
    photo = tmp_path / "camera.jpg"  # trailing camera data: decoded by Pillow as well
    photo.write_bytes(src.read_bytes() + b"camera trailer")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    with caplog.at_level("WARNING", logger="edgecat.imaging"):
        img = imaging.decode_image(photo)
    assert img.shape == (60, 80, 3)
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "camera.jpg" in lines[0] and "4800 pixels" in lines[0], lines
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(EdgecatError, match=r"cannot decode image .*camera\.jpg: larger than Pillow"):
        imaging.decode_image(photo)
    assert imaging.load_batch([photo, src], (32, 32)).files == [str(src)]  # skipped, never fatal


def test_arrays_must_be_rgb_uint8():
    ok = np.zeros((10, 12, 3), np.uint8)
    assert [a.shape for a in imaging.rgb_images([ok, np.zeros((2, 5, 6, 3), np.uint8)])] == [
        (10, 12, 3), (5, 6, 3), (5, 6, 3)]
    for bad, hint in [(np.zeros((10, 10), np.uint8), "grayscale"), (np.zeros((10, 10, 4), np.uint8), "RGBA"),
                      (np.zeros((10, 10, 3), np.float32), "0-1 floats"), (np.zeros((0, 0, 3), np.uint8), "empty"),
                      (np.zeros((0, 8, 8, 3), np.uint8), "empty"), (np.zeros((10, 10, 3), np.int64), "astype")]:
        with pytest.raises(EdgecatError, match=rf"expected an HxWx3 uint8 RGB image.*{bad.dtype}.*{hint}"):
            imaging.rgb_images([bad])


def test_batch_and_listing(tmp_path):
    (tmp_path / "sub").mkdir()
    for i in range(3):
        _jpeg(tmp_path / "sub" / f"{i}.jpg", 40, 50)
    files = imaging.list_images([tmp_path])
    assert [f.name for f in files] == ["0.jpg", "1.jpg", "2.jpg"]
    batch = imaging.to_batch([imaging.load_for_model(f, (32, 32)) for f in files], dtype="uint8")
    assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.uint8


@needs_tf
@pytest.mark.parametrize("src,dst", [((64, 80), (48, 48)), ((37, 29), (48, 48))])
def test_resize_matches_tf_image_resize(src, dst):
    import tensorflow as tf

    img = np.random.default_rng(1).integers(0, 256, (*src, 3), dtype=np.uint8)
    ours = imaging.resize(img, dst).astype(np.float32)
    theirs = tf.image.resize(img.astype(np.float32), dst, method="bilinear", antialias=False).numpy()
    # OpenCV rounds to uint8 and uses fixed-point weights: within about one grey level
    assert np.abs(ours - theirs).max() <= 1.5
