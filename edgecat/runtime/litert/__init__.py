"""LiteRT backend: ``loader`` makes the XNNPACK interpreter, ``runner`` runs the .tflite files."""
