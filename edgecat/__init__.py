"""edgecat: fine-tune an image classifier and take it to the edge.

The package root stays light on purpose: importing it must not pull in TensorFlow, ONNX Runtime or
OpenCV, so the edge side starts fast and works where only some runtimes are installed.
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgecat.errors import EdgecatError

__all__ = ["__version__", "EdgecatError"]
