"""Triton Inference Server backend: ``loader`` names served models and the server, ``runner`` is the client."""
