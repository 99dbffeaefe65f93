"""Exporters that add artifacts to a bundle: ONNX FP32/FP16, INT8 (QDQ), TensorRT, Triton."""
