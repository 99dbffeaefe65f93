"""OpenVINO backend: ``loader`` imports OpenVINO and sets compile options, ``runner`` runs the ONNX files."""
