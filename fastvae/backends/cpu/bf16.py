"""Numba and oneDNN: bfloat16 products (contract: reference_bf16.py, kernels/bf16.cu)."""
from __future__ import annotations

import numpy as np

from ..nbmath import jit
from . import onednn


@jit
def round_bits(dst, u):
    """dst (n,) uint16 <- u (n,) float32 bits rounded to bf16 (nearest-even, NaN quiet)."""
    half, one, mag, inf, quiet = (np.uint32(0x7FFF), np.uint32(1), np.uint32(0x7FFFFFFF),
                                  np.uint32(0x7F800000), np.uint32(0x0040))
    s16 = np.uint32(16)
    for i in range(u.size):
        v = u[i]
        r = (v + half + ((v >> s16) & one)) >> s16
        if (v & mag) > inf:  # NaN: rounding the payload could carry into the exponent
            r = (v >> s16) | quiet
        dst[i] = np.uint16(r)


def to_bf16(dst, src):
    """dst (uint16, shape of src) <- src (float32, C-contiguous) rounded to bfloat16."""
    round_bits(dst.reshape(-1), src.reshape(-1).view(np.uint32))


def _onednn_product(name, operand, out, a, b, trans_a, trans_b):
    """out (M, N) float32 = op(a) @ op(b) on oneDNN, a and b of dtype ``operand``, after the
    shapes and dtypes are checked (the errors name kernel ``name``); an empty sum writes
    zeros."""
    if a.dtype != operand or b.dtype != operand or out.dtype != np.float32:
        raise TypeError(f"{name}: dtypes {a.dtype}, {b.dtype} -> {out.dtype}; the operands "
                        f"must be {np.dtype(operand).name} and out float32")
    A = a.T if trans_a else a
    Bm = b.T if trans_b else b
    M, K = A.shape
    if Bm.shape[0] != K or out.shape != (M, Bm.shape[1]):
        raise ValueError(f"{name} shapes do not agree: {A.shape} @ {Bm.shape} -> "
                         f"{out.shape}")
    if M == 0 or out.shape[1] == 0:
        return
    if K == 0:
        out.fill(0)
        return
    onednn.library().matmul(out, A, Bm)


def matmul_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) float32 = op(a) @ op(b), a and b bf16 bits (uint16), float32 sums
    (oneDNN; :func:`bf16_support` says whether it can run)."""
    _onednn_product("matmul_bf16", np.uint16, out, a, b, trans_a, trans_b)


def matmul_f32_beside_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) = op(a) @ op(b) in float32, for the products of a bf16 model that stay
    in float32 (:mod:`fastvae.core.precision`): on oneDNN, like its bf16 products.  OpenMP's
    threads (oneDNN's) spin for a while after each product, and OpenBLAS's threads
    alternating with them on the same cores made the canonical step at batch 32 take 15.7
    ms instead of 1.6."""
    _onednn_product("matmul_f32_beside_bf16", np.float32, out, a, b, trans_a, trans_b)


def bf16_support():
    """None when this backend can run bf16 products here, else what is missing."""
    return onednn.support()
