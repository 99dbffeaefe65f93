"""Where ``--weights imagenet`` comes from, decided before any work starts.

Keras downloads its ImageNet files on first use and keeps them in ``$KERAS_HOME/models`` (default
``~/.keras/models``). On an offline machine that download fails after the bundle folder exists, so
edgecat looks first: ``$EDGECAT_WEIGHTS_DIR``, then Keras' own cache; only when neither holds the
official file does it check that the download host answers, and otherwise says which file to put
where, in one line.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from edgecat.errors import EdgecatError

log = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "EDGECAT_WEIGHTS_DIR"
_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications/"

#: keras.applications constructor -> (official no-top file name, the folder Keras downloads it from).
#: The names are the ones keras/src/applications/*.py pass to ``get_file`` (Keras 3).
OFFICIAL_NO_TOP: dict[str, tuple[str, str]] = {
    "MobileNetV2": ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5",
                    _KERAS_APPS + "mobilenet_v2/"),
    "ResNet50": ("resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", _KERAS_APPS + "resnet/"),
    "VGG16": ("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", _KERAS_APPS + "vgg16/"),
    "InceptionV3": ("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", _KERAS_APPS + "inception_v3/"),
    **{f"EfficientNetB{i}": (f"efficientnetb{i}_notop.h5", "https://storage.googleapis.com/keras-applications/")
       for i in range(8)},
    "MobileNetV3Small": ("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", _KERAS_APPS + "mobilenet_v3/"),
    "MobileNetV3Large": ("weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5", _KERAS_APPS + "mobilenet_v3/"),
}

#: MobileNetV2 ships one file per input size; Keras falls back to 224's for other sizes.
_MOBILENET_V2_ROWS = (96, 128, 160, 192, 224)


def official_file(constructor: str, size: int) -> tuple[str, str]:
    """(file name, download URL) of the official ImageNet no-top weights for a backbone."""
    if constructor not in OFFICIAL_NO_TOP:
        raise EdgecatError(f"no official ImageNet weights are known for {constructor}; pass --weights PATH")
    name, folder = OFFICIAL_NO_TOP[constructor]
    rows = size if size in _MOBILENET_V2_ROWS else 224
    name = name.format(rows=rows)
    return name, folder + name


def search_dirs() -> list[Path]:
    """``$EDGECAT_WEIGHTS_DIR`` first, then Keras' cache (``$KERAS_HOME`` or ~/.keras, and the
    /tmp/.keras Keras falls back to when the home folder is read-only)."""
    dirs = []
    if os.environ.get(WEIGHTS_DIR_ENV):
        dirs.append(Path(os.environ[WEIGHTS_DIR_ENV]).expanduser())
    keras_home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    for d in (keras_cache_dir(), keras_home / "models", Path("/tmp/.keras/models")):
        if d not in dirs:
            dirs.append(d)
    return dirs


def keras_cache_dir() -> Path:
    """The folder Keras' ``get_file`` reads ImageNet files from (``<keras home>/models``)."""
    try:
        from keras.src.backend import config  # the value Keras fixed when it was imported

        home = Path(config.keras_home())
    except Exception:  # noqa: BLE001 - Keras internals moved, or Keras absent: its own rule
        home = Path(os.environ["KERAS_HOME"]) if os.environ.get("KERAS_HOME") else Path.home() / ".keras"
    if not os.access(home if home.exists() else home.parent, os.W_OK):
        home = Path("/tmp/.keras")
    return home / "models"


def stage_for_keras(path: Path) -> None:
    """Link an official file into Keras' cache under its own name, so ``weights="imagenet"`` builds
    offline exactly what it builds online (EfficientNet adds its ImageNet normalisation layer only
    for ``weights="imagenet"``; loading the same file by path would silently skip it)."""
    cache = keras_cache_dir()
    dest = cache / path.name
    if dest.exists():
        return
    try:
        cache.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(path.resolve())
    except OSError as exc:
        raise EdgecatError(f"cannot place {path.name} in Keras' weights cache {cache} ({exc}); "
                           f"copy it there by hand") from exc


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def locate_imagenet(constructor: str, size: int) -> Path | None:
    """The local official file (left where it is), or None when Keras can download it; fails in
    one line offline. :func:`stage_for_keras` makes a found file visible to Keras."""
    name, url = official_file(constructor, size)
    for folder in search_dirs():
        path = folder / name
        if path.is_file() and path.stat().st_size > 0:
            log.info("ImageNet weights: %s", path)
            return path
    if _reachable(url):
        return None  # Keras downloads it into its cache on first use
    first = search_dirs()[0]
    raise EdgecatError(
        f"ImageNet weights for {constructor} are not on this machine and {urlparse(url).hostname} cannot be "
        f"reached: download {url} and place it in {first}/ (or set {WEIGHTS_DIR_ENV}=DIR), "
        "or pass --weights PATH (a Keras weights file or a bundle)"
    )
