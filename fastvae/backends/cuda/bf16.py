"""Launchers of kernels/bf16.cu (float32 operands rounded to bfloat16) and the bf16 products
through cuBLAS's GemmEx."""
from __future__ import annotations

import numpy as np

from ..cuda_device import BLOCK_1D, grid_1d
from .dense import contiguous, gemm_plan
from .dense import matmul as dense_matmul
from .launch import device


def to_bf16(dst, src):
    """dst (uint16, shape of src) <- src (float32) rounded to bfloat16, nearest-even
    (contract: reference_bf16.to_bf16)."""
    dev = device()
    n = src.size
    if n:
        dev.launch("to_bf16_f32", (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
                   (dst, src, np.int64(n)))


def matmul_f32_beside_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) float32 = op(a) @ op(b), a bf16 model's float32 products: cuBLAS's sgemm,
    as in full precision (contract: reference_bf16.matmul_f32_beside_bf16)."""
    dense_matmul(out, a, b, trans_a, trans_b)


def matmul_bf16(out, a, b, trans_a=False, trans_b=False):
    """out (M, N) float32 = op(a) @ op(b) for bf16 bits a, b (uint16), float32 compute,
    through cuBLAS's GemmEx (contract: reference_bf16.matmul_bf16)."""
    contiguous("matmul_bf16", out, a, b)
    if a.dtype != np.uint16 or b.dtype != np.uint16 or out.dtype != np.float32:
        raise TypeError(f"matmul_bf16: dtypes {a.dtype}, {b.dtype} -> {out.dtype}; the "
                        "operands must be bf16 bits (uint16) and out float32")
    args = gemm_plan(out, a, b, trans_a, trans_b)
    if args is None:
        return
    transa, transb, m, n, k, lda, ldb, ldc = args
    device().gemm_bf16(transa, transb, m, n, k, b, lda, a, ldb, out, ldc)


def bf16_support():
    """None when this GPU runs bf16 products (compute capability 8.0 or more), else why not."""
    cc = device().compute_capability
    if not cc.isdigit() or int(cc) < 80:
        return (f"precision='bf16' on the cuda backend needs a GPU of compute capability 8.0 "
                f"or more (Ampere and later), and this one is {cc[:-1]}.{cc[-1:]}; use "
                "precision='full'")
    return None
