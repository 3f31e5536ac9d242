"""bfloat16 products (``precision="bf16"``), the readable definition: operands rounded to
bfloat16, products accumulated in float32.

bfloat16 is the top half of a float32: 1 sign bit, 8 exponent bits, 7 mantissa bits.  It is
stored here as uint16 (NumPy has no bfloat16).  Rounding is to nearest, ties to even, as
every bf16 instruction and library does; NaN stays NaN (quiet), infinities stay infinite,
and finite values beyond the largest bf16 (about 3.39e38) round to infinity.

The product of two bf16 numbers is exact in float32 (8 + 8 significant bits < 24), so
``widen(a16) @ widen(b16)`` in float32 is the bf16 GEMM up to the order of its float32 sums.
"""
from __future__ import annotations

import numpy as np

from .aligned import aligned_empty


def to_bf16(dst, src):
    """dst (uint16, shape of src) <- src (float32) rounded to bfloat16, nearest-even.

    NaN becomes a quiet NaN of the same sign (rounding its payload could carry into the
    exponent and make it infinite)."""
    u = np.ascontiguousarray(src, dtype=np.float32).view(np.uint32)
    rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    quiet = (u >> np.uint32(16)) | np.uint32(0x0040)
    dst[...] = np.where(nan, quiet, rounded).astype(np.uint16).reshape(dst.shape)


def check_half(name, half, like):
    """A kernel's optional bf16 output ``half`` checked against the float32 output ``like``
    whose bits it receives (every backend's kernel writes it row by row: a wrong one would
    be written out of bounds)."""
    if half is not None and (tuple(half.shape) != tuple(like.shape) or half.dtype != np.uint16
                             or not half.flags.c_contiguous):
        raise ValueError(f"{name}: half must be a C-contiguous uint16 array of shape "
                         f"{tuple(like.shape)} (the output's bf16 bits), got {half.dtype} "
                         f"{tuple(half.shape)}")


def widen(a16):
    """The float32 values of bf16 bits a16 (exact)."""
    return (np.asarray(a16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def _widened(a16):
    """widen(a16) in a 64-byte aligned buffer: BLAS's path through a transposed operand
    depends on where it starts (fastvae.backends.aligned.aligned_empty), and a product whose
    bits changed with the allocator would make identical runs differ."""
    out = aligned_empty(np, a16.shape, np.float32)
    out[...] = widen(a16)
    return out


def matmul_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) float32 = op(a) @ op(b) for bf16 operands a, b (uint16; op = transpose when
    the flag is set), accumulated in float32."""
    A, Bm = _widened(a), _widened(b)
    np.matmul(A.T if trans_a else A, Bm.T if trans_b else Bm, out=out)


def matmul_f32_beside_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) float32 = op(a) @ op(b) for float32 a, b: the products a bf16 model keeps
    in float32 (:data:`fastvae.core.precision.BF16_RULE`).  The plain product; a backend
    runs it where its bf16 products run (the cpu backend: oneDNN, whose threads would
    otherwise fight the BLAS library's)."""
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


def bf16_support():
    """None: this backend computes bf16 products (here by exact emulation, slowly)."""
    return None
