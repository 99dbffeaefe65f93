"""The trained classifier as a legacy Keras HDF5 file, ``model.h5``, for Keras users without edgecat.

The notebooks edgecat replaces end with ``model.save("cats_dogs_finetuned.h5")`` and the next person
opens it with ``keras.models.load_model``. edgecat's models hold only standard Keras layers (the
preprocessing included), so the file loads in a plain Keras session and takes the same raw RGB
0-255 input as every other artifact. The file is reloaded and compared with model.keras before it
is recorded; a file that does not give the same probabilities is never left in the bundle.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgecat import artifacts
from edgecat.bundle import Bundle, tool_versions
from edgecat.errors import require_tensorflow
from edgecat.fsutil import atomic_path
from edgecat.validate import validate

log = logging.getLogger(__name__)

KIND = artifacts.find("h5", "fp32")
H5_KEY = KIND.key
H5_FILE = KIND.file
#: same weights, same runtime: anything beyond float rounding means the file lost something
H5_TOLERANCE = 1e-6


class _NoLegacyWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "considered legacy" not in record.getMessage()


def save_h5(model: Any, dest: Path) -> None:
    """``model.save`` to legacy HDF5, without the optimizer (a deployed model needs none) and
    without Keras' "this format is legacy" warning (logged through absl): legacy is the point."""
    absl = logging.getLogger("absl")
    quiet = _NoLegacyWarning()
    absl.addFilter(quiet)
    try:
        model.save(str(dest), include_optimizer=False)
    finally:
        absl.removeFilter(quiet)


def export_h5(bundle: Bundle, parity_dirs: list[str] | None = None) -> dict[str, Any]:
    """Add ``model.h5`` (from the bundle's model.keras) after checking its probabilities."""
    require_tensorflow()
    from edgecat.splits import parity_images
    from edgecat.runtime.keras.loader import load_h5, load_keras_model

    model = load_keras_model(bundle.artifact_path("keras"))
    dest = bundle.path / H5_FILE
    batch, what = parity_images(bundle, extra_dirs=parity_dirs)
    t0 = time.perf_counter()
    with atomic_path(dest) as tmp:
        save_h5(model, tmp)
        seconds = time.perf_counter() - t0
        report = validate(np.asarray(model(batch, training=False)), np.asarray(load_h5(tmp)(batch, training=False)),
                          what, H5_TOLERANCE, bundle=bundle, reference_name="keras", space="raw")
        report.raise_if_failed(f"{H5_FILE} reloaded", artifacts.file_of(str(KIND.made_from)), f"no {H5_FILE} written")
    return bundle.add_artifact(
        H5_KEY,
        dest,
        format="h5",
        precision="fp32",
        input="image",
        output="probabilities",
        made_by={"tool": "keras Model.save (legacy HDF5)", "from": "keras", "seconds": round(seconds, 2),
                 "from_sha256": bundle.artifacts["keras"].get("sha256"),
                 "versions": tool_versions("tensorflow", "keras", "h5py")},
        parity=report.parity(),
        load_with="keras.models.load_model(path)",
    )
