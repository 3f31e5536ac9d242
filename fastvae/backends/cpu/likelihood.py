"""Numba kernels: the likelihood's loss with its gradient, the learned log-scale, the loss sums
(kernels/likelihood.cu)."""
from __future__ import annotations

import math

import numpy as np

from ..codes import LIK_BERNOULLI, LIK_GAUSSIAN
from ..nbmath import exp_nonpos, jit, log1p_unit
from .bf16 import round_bits


@jit
def _bernoulli_terms(a, xv, zero, one):
    """(softplus(a) - x a, sigmoid(a)): the two share e = exp(-|a|), one exp per pixel."""
    e = exp_nonpos(-abs(a))
    inv = one / (one + e)
    return max(a, zero) + log1p_unit(e) - xv * a, inv if a >= zero else e * inv


@jit
def likelihood_fwd(loss_rows, out, b, x, logscale, kind):
    """Reconstruction loss per row only, for evaluation (contract: reference.likelihood_fwd)."""
    R, D = out.shape
    B = x.shape[0]
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    half = out.dtype.type(0.5)
    if kind == LIK_BERNOULLI:
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                a = out[r, j] + b[j]
                out[r, j] = a
                acc += _bernoulli_terms(a, x[xi, j], zero, one)[0]
            loss_rows[r] = acc
    elif kind == LIK_GAUSSIAN:
        shared = logscale.shape[0] == 1
        c = out.dtype.type(0.5 * math.log(2.0 * math.pi))
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                ls = logscale[0] if shared else logscale[j]
                a = out[r, j] + b[j]
                out[r, j] = a
                d = a - x[xi, j]
                acc += half * d * d * math.exp(-2.0 * ls) + ls + c
            loss_rows[r] = acc


@jit
def likelihood_fwd_bwd(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                       learn_scale, grad_scale):
    """Reconstruction loss per row and its gradient in one pass (contract: reference):
    :func:`likelihood_fwd_bwd_bf16` with no rows of bits to write (an empty view of dout:
    nothing is allocated, and the array is of the type the kernel writes)."""
    likelihood_fwd_bwd_bf16(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                            learn_scale, grad_scale, dout.view(np.uint16)[:0])


@jit
def likelihood_fwd_bwd_bf16(dout, loss_rows, db, dlogscale, out, b, x, logscale, kind,
                            learn_scale, grad_scale, half):
    """:func:`likelihood_fwd_bwd`, and half (R, D) uint16 <- dout's bf16 bits, row by row
    (unless half has no rows)."""
    R, D = out.shape
    fuse = half.shape[0] != 0
    B = x.shape[0]
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    one_half = out.dtype.type(0.5)
    gs = out.dtype.type(grad_scale)
    for j in range(D):
        db[j] = zero
    if kind == LIK_BERNOULLI:
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                a = out[r, j] + b[j]
                out[r, j] = a
                xv = x[xi, j]
                loss, p = _bernoulli_terms(a, xv, zero, one)
                acc += loss
                g = gs * (p - xv)
                dout[r, j] = g
                db[j] += g
            loss_rows[r] = acc
            if fuse:  # (the row just written, still in the nearest cache)
                round_bits(half[r], dout[r].view(np.uint32))
    elif kind == LIK_GAUSSIAN:
        shared = logscale.shape[0] == 1
        c = out.dtype.type(0.5 * math.log(2.0 * math.pi))
        if learn_scale:
            for j in range(dlogscale.shape[0]):
                dlogscale[j] = zero
        gl = zero
        for r in range(R):
            xi = r % B
            acc = zero
            for j in range(D):
                ls = logscale[0] if shared else logscale[j]
                iv = math.exp(-2.0 * ls)
                a = out[r, j] + b[j]
                out[r, j] = a
                d = a - x[xi, j]
                q = d * d * iv
                acc += one_half * q + ls + c
                g = gs * d * iv
                dout[r, j] = g
                db[j] += g
                if learn_scale:
                    if shared:
                        gl += one - q
                    else:
                        dlogscale[j] += gs * (one - q)
            loss_rows[r] = acc
            if fuse:
                round_bits(half[r], dout[r].view(np.uint32))
        if learn_scale and shared:
            dlogscale[0] = gs * gl


@jit
def logscale_fwd(ls, raw, floor):
    """ls (S,) = floor + softplus(raw - floor), a softly floored log-scale (contract: reference)."""
    f = ls.dtype.type(floor)
    for i in range(ls.shape[0]):
        t = raw[i] - f
        ls[i] = f + max(t, ls.dtype.type(0.0)) + math.log1p(math.exp(-abs(t)))


@jit
def logscale_bwd(draw, dls, raw, floor):
    """draw (S,) = dls * sigmoid(raw - floor) (contract: reference.logscale_bwd)."""
    f = raw.dtype.type(floor)
    one = raw.dtype.type(1.0)
    for i in range(raw.shape[0]):
        t = raw[i] - f
        e = math.exp(-abs(t))
        draw[i] = dls[i] * (one / (one + e) if t >= 0 else e / (one + e))


@jit
def loss_stats(stats, acc, loss_rows, kl, kl_dim, free_bits, kl_coef, weight, obj_rows):
    """The step's loss statistics in float64 (contract: reference.loss_stats)."""
    sr = 0.0
    for i in range(loss_rows.shape[0]):
        sr += np.float64(loss_rows[i])
    sk = 0.0
    for i in range(kl.shape[0]):
        sk += np.float64(kl[i])
    recon = sr / loss_rows.shape[0]
    klm = sk / kl.shape[0]
    obj = klm
    if free_bits > 0:
        obj = 0.0
        for k in range(kl_dim.shape[0]):
            obj += max(np.float64(kl_dim[k]), free_bits)
    if obj_rows.shape[0] > 0:
        so = 0.0
        for i in range(obj_rows.shape[0]):
            so += np.float64(obj_rows[i])
        stats[0] = so / obj_rows.shape[0]
    else:
        stats[0] = recon + kl_coef * obj
    stats[1] = recon
    stats[2] = klm
    if weight != 0:
        for t in range(3):
            acc[t] += weight * stats[t]


# ------------------------------------------------------------ importance weighting
@jit
def likelihood_bwd(dout, db, dlogscale, out, x, logscale, kind, learn_scale, row_scale,
                   scale):
    """Row-weighted loss gradient of biased logits/means (contract: reference.likelihood_bwd)."""
    R, D = out.shape
    B = x.shape[0]
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    for j in range(D):
        db[j] = zero
    if kind == LIK_BERNOULLI:
        for r in range(R):
            xi = r % B
            w = out.dtype.type(scale * row_scale[r])
            for j in range(D):
                g = w * (_bernoulli_terms(out[r, j], x[xi, j], zero, one)[1] - x[xi, j])
                dout[r, j] = g
                db[j] += g
    elif kind == LIK_GAUSSIAN:
        shared = logscale.shape[0] == 1
        if learn_scale:
            for j in range(dlogscale.shape[0]):
                dlogscale[j] = zero
        for r in range(R):
            xi = r % B
            w = out.dtype.type(scale * row_scale[r])
            for j in range(D):
                iv = math.exp(-2.0 * (logscale[0] if shared else logscale[j]))
                d = out[r, j] - x[xi, j]
                g = w * d * iv
                dout[r, j] = g
                db[j] += g
                if learn_scale:
                    dlogscale[0 if shared else j] += w * (one - d * d * iv)
