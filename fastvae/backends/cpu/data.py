"""Numba kernels: the data path: gathering, scattering and binarizing rows, and the data check
(kernels/data.cu)."""
from __future__ import annotations

import math

from ..nbmath import jit


@jit
def scatter_rows(out, dest, X, idx, scale):
    """out[dest[k]] = scale * X[idx[k]] (contract: reference.scatter_rows); reads X in the
    order of idx, allocating nothing."""
    D = out.shape[1]
    sc = out.dtype.type(scale)
    for k in range(idx.shape[0]):
        i, r = idx[k], dest[k]
        for j in range(D):
            out[r, j] = out.dtype.type(X[i, j]) * sc


@jit
def binarize_rows(x, u):
    """x (B, D) <- (u < x) as 0/1, in place (contract: reference.binarize_rows)."""
    one = x.dtype.type(1.0)
    zero = x.dtype.type(0.0)
    B, D = x.shape
    for i in range(B):
        for j in range(D):
            x[i, j] = one if u[i, j] < x[i, j] else zero


@jit
def gather_rows(out, X, idx, scale):
    """out (B, D) = scale * X[idx] in out's dtype; X (N, D) uint8 or float (may be a
    memory-mapped file), idx (B,) int64 (contract: reference.gather_rows).  Allocates
    nothing, unlike NumPy's fancy indexing followed by a cast."""
    B, D = out.shape
    sc = out.dtype.type(scale)
    for r in range(B):
        i = idx[r]
        for j in range(D):
            out[r, j] = out.dtype.type(X[i, j]) * sc


@jit
def check_data(x, lo, hi):
    """Return (number of non-finite entries, number of finite entries outside [lo, hi])."""
    B, D = x.shape
    # Fast pass, vectorised: v * 0 is NaN exactly for NaN and +-inf, so ``poison`` stays 0
    # for clean data, and comparisons count the rest.  Only dirty data pays for the exact
    # (branchy) count below.  (A min/max reduction did not vectorise: 5x slower.)
    poison = x.dtype.type(0.0)
    l = x.dtype.type(lo)
    h = x.dtype.type(hi)
    n_rough = 0
    for i in range(B):
        for j in range(D):
            v = x[i, j]
            poison += v * 0
            n_rough += (v < l) | (v > h)
    if poison == 0 and n_rough == 0:
        return 0, 0
    n_bad = 0
    n_out = 0
    for i in range(B):
        for j in range(D):
            v = x[i, j]
            if not math.isfinite(v):
                n_bad += 1
            elif v < lo or v > hi:
                n_out += 1
    return n_bad, n_out
