"""Host buffers aligned to 64 bytes: part of the kernel contract (every backend, the
engine's workspaces and the batch buffers allocate through it)."""
from __future__ import annotations

import numpy as np


#: host buffers start on this boundary (NumPy's allocator guarantees 16 bytes)
ALIGN_BYTES = 64


def aligned_empty(xp, shape, dtype):
    """xp.empty(shape, dtype), starting on a 64-byte boundary when xp is NumPy (CuPy's
    allocations already are).  Not for speed: OpenBLAS takes a different path through
    a transposed operand depending on where it starts (measured: (16, 32)^T @ (32, 2)
    changed in its last bits with the operand's offset modulo 64), so buffers wherever the
    allocator put them made two identical runs in one process differ in the last bits."""
    if xp is not np:
        return xp.empty(shape, dtype=dtype)
    dtype = np.dtype(dtype)
    shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(n + ALIGN_BYTES, dtype=np.uint8)
    off = (-raw.ctypes.data) % ALIGN_BYTES
    return raw[off:off + n].view(dtype).reshape(shape)


def aligned_zeros(xp, shape, dtype):
    a = aligned_empty(xp, shape, dtype)
    a[...] = 0
    return a
