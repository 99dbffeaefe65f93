"""Native TensorRT backend: ``loader`` checks and deserialises engines, ``runner`` runs them on a CUDA stream."""
