"""Opening a bundle's Keras model (TensorFlow only when it is asked for)."""

from __future__ import annotations

from edgecat.errors import EdgecatError, first_line, require_tensorflow


def load_keras_model(path):
    """Load a bundle's model.keras with a one-line error for a damaged file."""
    require_tensorflow()
    import keras

    from edgecat import models  # noqa: F401  (registers edgecat's custom objects, if any)

    try:
        return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise EdgecatError(f"cannot load Keras model {path}: {first_line(exc)[:200]}") from exc


__all__ = ["load_keras_model"]
