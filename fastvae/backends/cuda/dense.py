"""Launchers of kernels/dense.cu (bias and activation, forward and backward; column sums)
and the products, through cuBLAS."""
from __future__ import annotations

import numpy as np

from ..codes import ACT_IDENTITY
from ..cuda_device import (BLOCK_1D, DTYPE_SUFFIX, gemm_args, grid_1d, kernel_name,
                           tile_plan)
from ..tf32 import tf32_enabled
from .launch import device, finish, half_arg, partials, scalar


def contiguous(name, out, a, b):
    """cuBLAS reads the products' arrays by leading dimension: they must be C-contiguous."""
    for arr, what in ((out, "out"), (a, "a"), (b, "b")):
        if not arr.flags.c_contiguous:
            raise ValueError(f"{name}: {what} must be C-contiguous (shape {arr.shape}, "
                             f"strides {arr.strides})")


def gemm_plan(out, a, b, trans_a, trans_b):
    """cuBLAS's column-major arguments of out = op(a) @ op(b) (:func:`gemm_args`), or None
    when there is nothing to multiply (out empty; K = 0 fills out with zeros)."""
    args = gemm_args(out.shape, a.shape, b.shape, trans_a, trans_b)
    m, n, k = args[2:5]
    if m == 0 or n == 0:
        return None
    if k == 0:
        out.fill(0)
        return None
    return args


def matmul(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) = op(a) @ op(b) through cuBLAS (contract: reference.matmul).

    All three arrays must be C-contiguous and of one float dtype; transposes are flags.
    """
    contiguous("matmul", out, a, b)
    if not (a.dtype == b.dtype == out.dtype) or np.dtype(out.dtype) not in DTYPE_SUFFIX:
        raise TypeError(f"matmul: dtypes {a.dtype}, {b.dtype} -> {out.dtype}; all must be "
                        "one of float32, float64")
    args = gemm_plan(out, a, b, trans_a, trans_b)
    if args is None:
        return
    transa, transb, m, n, k, lda, ldb, ldc = args
    device().gemm(np.dtype(out.dtype), transa, transb, m, n, k, b, lda, a, ldb, out, ldc,
                  tf32_enabled() and out.dtype == np.float32)


def bias_act_fwd(y, b, act, alpha, half=None):
    """y (R, N) <- act(y + b), in place; b (N,); ``half`` (R, N) uint16: also y's bf16
    bits, written by the same threads."""
    dev = device()
    R, N = y.shape
    dev.launch(kernel_name("bias_act_fwd", y.dtype), (grid_1d(R * N, dev.sm_count),),
               (BLOCK_1D,), (y, b, np.int64(R), np.int32(N), np.int32(act),
                             scalar(y.dtype, alpha), *half_arg("bias_act_fwd", half, y)))


def act_bias_bwd(da, db, dy, y, act, alpha, half=None):
    """da (R, N) = dy * act'(.) read off y (R, N); db (N,) = column sums of da; ``half``
    (R, N) uint16: also da's bf16 bits.  ``da`` may be ``dy``."""
    dev = device()
    R, N = y.shape
    grid, block, per, n_chunks = tile_plan(R, N, dev.sm_count)
    part = db if n_chunks == 1 else partials(db.dtype, n_chunks * N)[0]
    dev.launch(kernel_name("act_bias_bwd", y.dtype), grid, block,
               (da, part, dy, y, np.int32(R), np.int32(N), np.int32(per), np.int32(act),
                scalar(y.dtype, alpha), *half_arg("act_bias_bwd", half, da)))
    if n_chunks > 1:
        finish(dev, db, part, n_chunks, N, 1.0)


def colsum(dev, out, a, part):
    """out (N,) = column sums of a (R, N) in a fixed order: act_bias_bwd's kernel with the
    identity (da = dy, in place), its row-chunk partials in ``part`` (n_chunks * N)."""
    R, N = a.shape
    grid, block, per, n_chunks = tile_plan(R, N, dev.sm_count)
    dst = out if n_chunks == 1 else part
    dev.launch(kernel_name("act_bias_bwd", a.dtype), grid, block,
               (a, dst, a, a, np.int32(R), np.int32(N), np.int32(per), np.int32(ACT_IDENTITY),
                scalar(a.dtype, 0.0), *half_arg("colsum", None, a)))
    if n_chunks > 1:
        finish(dev, out, part, n_chunks, N, 1.0)
