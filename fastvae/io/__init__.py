"""Files in and out: checkpoints, datasets, ONNX export."""
from .checkpoint import CheckpointError  # noqa: F401  (fastvae.io.CheckpointError)
