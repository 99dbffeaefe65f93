"""tf.data input pipelines for training (needs the training extra).

Parallel decode, bilinear resize to the model's size (raw 0-255, as deployment feeds the model),
cache when it fits in memory, shuffle, batch, then augmentation (flip, +-10 deg rotation, +-10%
zoom) as Keras preprocessing layers on the training split only, and prefetch. Augmentation lives
here, never inside the exported model.
"""

from __future__ import annotations

import logging
from typing import Any

from edgecat.data import Split
from edgecat.errors import EdgecatError, first_line, require_tensorflow

log = logging.getLogger(__name__)

#: cache decoded images in memory when the split takes less than this many bytes
CACHE_LIMIT_BYTES = 3 * 1024**3


def augmentation(seed: int) -> Any:
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(10.0 / 360.0, seed=seed + 1),
            keras.layers.RandomZoom(0.1, seed=seed + 2),
        ],
        name="augmentation",
    )


def _decode(path: Any, size: tuple[int, int]) -> Any:
    import tensorflow as tf

    img = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    img = tf.image.resize(img, size, method="bilinear")
    img.set_shape((size[0], size[1], 3))
    return img


def image_dataset(
    split: Split,
    size: tuple[int, int],
    batch_size: int,
    *,
    training: bool,
    augment: bool = False,
    seed: int = 42,
    num_classes: int = 2,
) -> Any:
    """A batched ``tf.data.Dataset`` of (raw RGB float32 0-255 images, labels)."""
    require_tensorflow()
    import tensorflow as tf

    if len(split) == 0:
        raise EdgecatError("no images to build a dataset from")
    autotune = tf.data.AUTOTUNE
    dtype = tf.float32 if num_classes == 2 else tf.int32
    ds = tf.data.Dataset.from_tensor_slices((split.files, tf.constant(split.labels, dtype=dtype)))
    ds = ds.map(lambda p, y: (_decode(p, size), y), num_parallel_calls=autotune, deterministic=True)
    # A file that still fails to decode is dropped, never fatal mid-epoch.
    ds = ds.ignore_errors(log_warning=True)
    if len(split) * size[0] * size[1] * 3 * 4 < CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(split), 4096), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment:  # also unshuffled: the feature cache keeps augmented views in file order
        aug = augmentation(seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def tfds_splits(name: str, val_split: float = 0.2) -> tuple[Any, Any, list[str]]:
    """``tfds:cats_vs_dogs`` -> (train, validation, class names) with the usual 80/20 split."""
    require_tensorflow()
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise EdgecatError("tensorflow-datasets is not installed: pip install 'edgecat[train]'") from exc
    pct = int(round((1 - val_split) * 100))
    _check_tfds_reachable(tfds, name)
    try:
        (train, val), info = tfds.load(
            name, split=[f"train[:{pct}%]", f"train[{pct}%:]"], as_supervised=True, with_info=True
        )
    except Exception as exc:  # offline failures come as many exception types
        raise EdgecatError(
            f"cannot load TensorFlow Datasets '{name}' ({type(exc).__name__}: "
            f"{first_line(exc)[:100] or 'no details'}); "
            "offline, pass a local folder with --data DIR"
        ) from exc
    classes = list(info.features["label"].names)
    return train, val, classes


def _check_tfds_reachable(tfds: Any, name: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after minutes of download retries, when a dataset must be fetched offline."""
    import socket
    import sys
    from urllib.parse import urlparse

    try:
        builder = tfds.builder(name)
    except Exception as exc:  # unknown names and registry errors alike
        raise EdgecatError(f"unknown TensorFlow Datasets name '{name}': {first_line(exc)[:100]}") from exc
    if builder.is_prepared():
        return
    url = getattr(sys.modules.get(type(builder).__module__), "_URL", None) or "https://storage.googleapis.com"
    host = urlparse(url).hostname or "storage.googleapis.com"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as exc:
        raise EdgecatError(f"tfds:{name} is not downloaded and {host} cannot be reached ({exc}); "
                           "offline, pass a local folder with --data DIR") from exc


def tfds_pipeline(ds: Any, size: tuple[int, int], batch_size: int, *, training: bool,
                  augment: bool, seed: int) -> Any:
    import tensorflow as tf

    ds = ds.map(lambda x, y: (tf.image.resize(tf.cast(x, tf.float32), size), tf.cast(y, tf.float32)),
                num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(4096, seed=seed)
    ds = ds.batch(batch_size)
    if augment:  # also unshuffled: the feature cache keeps augmented views in file order
        aug = augmentation(seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
