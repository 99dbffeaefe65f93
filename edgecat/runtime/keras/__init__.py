"""Keras backends (``keras-predict``, ``keras``): ``loader`` opens model.keras, ``runner`` calls it."""
