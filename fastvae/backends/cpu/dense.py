"""Numba kernels: the activation with its bias, forward and backward (kernels/dense.cu)."""
from __future__ import annotations

import math

import numpy as np

from ..codes import (ACT_ELU, ACT_IDENTITY, ACT_LEAKY_RELU, ACT_RELU, ACT_SIGMOID,
                     ACT_SOFTPLUS, ACT_TANH)
from ..nbmath import exp_nonpos, jit, log1p_unit, vexpm1
from .bf16 import round_bits


@jit
def bias_act_fwd(y, b, act, alpha):
    """y (B, N) <- act(y + b), in place; b (N,)."""
    R, N = y.shape
    zero = y.dtype.type(0.0)
    one = y.dtype.type(1.0)
    two = y.dtype.type(2.0)
    al = y.dtype.type(alpha)
    # One loop per activation so that each inner loop is branch-free and vectorises.
    if act == ACT_IDENTITY:
        for i in range(R):
            for j in range(N):
                y[i, j] += b[j]
    elif act == ACT_RELU:
        for i in range(R):
            for j in range(N):
                y[i, j] = max(y[i, j] + b[j], zero)
    elif act == ACT_LEAKY_RELU:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                y[i, j] = v if v > zero else al * v
    elif act == ACT_TANH:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                # tanh|v| = -m / (2 + m), m = expm1(-2|v|): no cancellation for small v,
                # where (1 - e) / (1 + e) would keep only the absolute precision
                m = vexpm1(-two * abs(v))
                t = -m / (two + m)
                y[i, j] = t if v >= zero else -t
    elif act == ACT_SIGMOID:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                e = exp_nonpos(-abs(v))
                r = one / (one + e)
                y[i, j] = r if v >= zero else e * r
    elif act == ACT_ELU:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                y[i, j] = v if v > zero else al * math.expm1(min(v, zero))
    elif act == ACT_SOFTPLUS:
        for i in range(R):
            for j in range(N):
                v = y[i, j] + b[j]
                y[i, j] = max(v, zero) + log1p_unit(exp_nonpos(-abs(v)))


@jit
def _act_grad(dy, yv, act, al, zero, one):
    """dy * act'(a), with act'(a) read off the output yv = act(a)."""
    if act == ACT_RELU:
        return dy if yv > zero else zero
    if act == ACT_LEAKY_RELU:
        return dy if yv > zero else al * dy
    if act == ACT_TANH:
        # (1 - y)(1 + y), not 1 - y^2: 1 - y is exact for y near 1, so the product keeps
        # its relative precision where the derivative is small (in every backend)
        return dy * ((one - yv) * (one + yv))
    if act == ACT_SIGMOID:
        return dy * yv * (one - yv)
    if act == ACT_ELU:
        return dy if yv > zero else dy * (yv + al)
    if act == ACT_SOFTPLUS:
        # sigmoid(a) = -expm1(-softplus(a)), as in every backend (1 - exp(-y) would lose
        # the relative precision of small y to cancellation)
        return -dy * vexpm1(-yv)
    return dy


@jit
def act_bias_bwd(da, db, dy, y, act, alpha):
    """da (B, N) = dy * act'(.) from the saved output y (B, N); db (N,) = sum_rows da.

    ``da`` may be the same array as ``dy``.
    """
    for j in range(db.shape[0]):
        db[j] = db.dtype.type(0.0)
    _act_bias_rows(da, db, dy, y, act, alpha)


#: rows per block of a kernel that also writes its output's bf16 bits: a block's output
#: (16 rows of up to a few thousand floats) is still in the nearest caches when it is read
#: back to be rounded, where a pass of its own reads it from memory
FUSE_ROWS = 16


@jit
def bias_act_fwd_bf16(y, b, act, alpha, half):
    """:func:`bias_act_fwd`, and half (B, N) uint16 <- the result's bf16 bits, a block of
    rows at a time (the same bits as the two kernels one after the other)."""
    R = y.shape[0]
    for r0 in range(0, R, FUSE_ROWS):
        r1 = min(R, r0 + FUSE_ROWS)
        bias_act_fwd(y[r0:r1], b, act, alpha)
        for i in range(r0, r1):
            round_bits(half[i], y[i].view(np.uint32))


@jit
def act_bias_bwd_bf16(da, db, dy, y, act, alpha, half):
    """:func:`act_bias_bwd`, and half (B, N) uint16 <- da's bf16 bits, a block of rows at a
    time (db sums the rows in the same order: the same bits)."""
    R = y.shape[0]
    for j in range(db.shape[0]):
        db[j] = db.dtype.type(0.0)
    for r0 in range(0, R, FUSE_ROWS):
        r1 = min(R, r0 + FUSE_ROWS)
        _act_bias_rows(da[r0:r1], db, dy[r0:r1], y[r0:r1], act, alpha)
        for i in range(r0, r1):
            round_bits(half[i], da[i].view(np.uint32))


@jit
def _act_bias_rows(da, db, dy, y, act, alpha):
    """da = dy * act'(.), and db (N,) += the rows of da, in row order."""
    R, N = y.shape
    al = y.dtype.type(alpha)
    zero = y.dtype.type(0.0)
    one = y.dtype.type(1.0)
    # The activation is chosen outside the loops: a branch on ``act`` inside the inner
    # loop kept it scalar (LLVM did not unswitch it), 10x slower for relu.
    if act == ACT_RELU:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_RELU, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_LEAKY_RELU:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_LEAKY_RELU, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_TANH:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_TANH, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_SIGMOID:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_SIGMOID, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_ELU:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_ELU, al, zero, one)
                da[i, j] = g
                db[j] += g
    elif act == ACT_SOFTPLUS:
        for i in range(R):
            for j in range(N):
                g = _act_grad(dy[i, j], y[i, j], ACT_SOFTPLUS, al, zero, one)
                da[i, j] = g
                db[j] += g
    else:
        for i in range(R):
            for j in range(N):
                g = dy[i, j]
                da[i, j] = g
                db[j] += g
