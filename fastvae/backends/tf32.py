"""Whether the cuda backend's float32 products may use TF32 tensor cores: a process-wide
setting of its own, so that the backends read it without importing the switch."""
from __future__ import annotations

import os

TF32_ENV_VAR = "FASTVAE_TF32"
_tf32: bool | None = None


def set_tf32(enabled: bool) -> None:
    """Let the cuda backend's float32 matrix products use TF32 tensor cores.

    Off by default: TF32 rounds the inputs of every product to 10 mantissa bits, which is
    usually harmless for training but breaks exact parity with the CPU backends.  The
    ``FASTVAE_TF32=1`` environment variable turns it on when this was never called.
    """
    global _tf32
    _tf32 = bool(enabled)


def tf32_enabled() -> bool:
    """Whether float32 products on the GPU may use TF32 (see :func:`set_tf32`)."""
    if _tf32 is not None:
        return _tf32
    return os.environ.get(TF32_ENV_VAR, "") not in ("", "0")
