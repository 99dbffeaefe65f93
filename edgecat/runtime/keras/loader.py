"""Opening a bundle's Keras model (TensorFlow only when it is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgecat.errors import EdgecatError, first_line, require_tensorflow


def load_keras_model(path):
    """Load a bundle's model.keras with a one-line error for a damaged file."""
    require_tensorflow()
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        raise EdgecatError(f"cannot load Keras model {path}: {first_line(exc)[:200]}") from exc



def load_h5(path: Path) -> Any:
    """Load as a plain Keras user does: no custom objects, safe mode."""
    import keras

    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras and h5py raise many types for a bad file
        raise EdgecatError(f"cannot load {path} back with keras.models.load_model: "
                           f"{first_line(exc)[:200]}") from exc


__all__ = ["load_h5", "load_keras_model"]
