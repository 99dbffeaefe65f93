"""edgecat: fine-tune an image classifier and take it to the edge.

The Python API (documented in README.md, "Python API")::

    import edgecat
    model = edgecat.load("runs/cats")
    model.predict(["cat.jpg", "photos/"])

The package root stays light on purpose: importing it must not pull in TensorFlow, ONNX Runtime or
OpenCV, so the edge side starts fast and works where only some runtimes are installed. The API
names below are imported on first use (PEP 562 ``__getattr__``).

Four API functions share their name with a submodule (``train``, ``evaluate``, ``export``,
``checks``): ``edgecat.train`` is always the function; the module is reached by
``from edgecat.train import ...`` (importing a submodule does not replace the function here).
"""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"

from edgecat.errors import EdgecatError, MissingDependencyError

#: public name -> module that defines it, imported when the name is first used
_LAZY = {
    "load": "edgecat.api", "Model": "edgecat.api", "train": "edgecat.api", "export": "edgecat.api",
    "predict": "edgecat.api", "evaluate": "edgecat.api", "benchmark": "edgecat.api", "checks": "edgecat.api",
    "set_device": "edgecat.api", "Bundle": "edgecat.bundle", "TrainConfig": "edgecat.config",
    "Prediction": "edgecat.predict", "BenchReport": "edgecat.bench",
}

__all__ = ["__version__", "EdgecatError", "MissingDependencyError", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgecat' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """Keeps an API function's name from being taken over by the submodule of the same name
    (Python sets ``edgecat.train = <module edgecat.train>`` when that submodule is imported)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
