"""ONNX Runtime backends (CPU, CUDA, TensorRT execution providers): ``loader`` makes sessions, ``runner`` runs them."""
