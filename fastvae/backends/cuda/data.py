"""Launchers of kernels/data.cu: the data check of a step and the batch gather."""
from __future__ import annotations

import numpy as np

from ..cuda_device import BLOCK_1D, DTYPE_SUFFIX, grid_1d, kernel_name
from .launch import device, scalar

_DATA_SUFFIX = {np.dtype(np.uint8): "u8", np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def check_data(x, lo, hi):
    """Return (number of non-finite entries, number of finite entries outside [lo, hi]).
    Waits for the GPU (the answer is a host number)."""
    counts = device().xp.zeros(2, dtype=np.uint64)
    check_data_into(counts, x, lo, hi)
    bad, out = (int(v) for v in device().to_numpy(counts))
    return bad, out


def check_data_into(counts, x, lo, hi):
    """counts (2,) uint64 <- [non-finite entries, finite entries outside [lo, hi]] of x, on
    the device: the check of a training step, read with its loss, not before."""
    dev = device()
    counts.fill(0)
    n = x.size
    dev.launch(kernel_name("check_data", x.dtype), (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (counts, x, np.int64(n), scalar(x.dtype, max(lo, -np.finfo(x.dtype).max)),
                scalar(x.dtype, min(hi, np.finfo(x.dtype).max))))


def gather_rows(out, X, idx, scale):
    """out (B, D) = scale * X[idx] converted to out's dtype (contract: reference.gather_rows);
    X (N, D) uint8, float32 or float64; idx (B,) int64, all on the device."""
    dev = device()
    B, D = out.shape
    try:
        name = f"gather_rows_{DTYPE_SUFFIX[np.dtype(out.dtype)]}_{_DATA_SUFFIX[np.dtype(X.dtype)]}"
    except KeyError:
        raise TypeError(f"gather_rows: {X.dtype} data into {out.dtype} batches is not "
                        "supported (uint8, float32 or float64 data)") from None
    dev.launch(name, (grid_1d(B * D, dev.sm_count),), (BLOCK_1D,),
               (out, X, idx, np.int32(B), np.int32(D), scalar(out.dtype, scale)))
