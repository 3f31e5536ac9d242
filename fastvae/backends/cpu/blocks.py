"""Numba kernels of the column-block models (contracts: backends/reference_blocks.py;
CUDA: kernels/blocks.cu).

One pass per decoder row over its columns, branching on each column's block kind (a
predictable branch: columns of a block are consecutive).  Cell math runs in float64 whatever
the arrays' dtype: the negative binomial's lgamma and digamma differences
(:mod:`fastvae.core.special`, compiled from the same source) are float64 functions, and a
table's few hundred columns make this pass a small part of the step.  Sums over rows run in
row order, so the results do not depend on anything but the inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ...core import special
from ...core.codes import (BLK_BERNOULLI, BLK_CATEGORICAL, BLK_GAUSSIAN, BLK_NEGBIN,
                           BLK_POISSON, ENC_LOG1P, ENC_MASK)
from ..nbmath import jit, jit_module_functions

_special = jit_module_functions(special, special.FUNCTIONS)
_lgamma = _special["lgamma"]
_lgamma_diff = _special["lgamma_diff"]
_digamma_diff = _special["digamma_diff"]
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@jit
def _softplus(a):
    return max(a, 0.0) + math.log1p(math.exp(-abs(a)))


@jit
def _sigmoid(a):
    e = math.exp(-abs(a))
    r = 1.0 / (1.0 + e)
    return r if a >= 0.0 else e * r


@jit
def _blocks_pass(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, scale, row_scale,
                 add_bias, grad, weighted):
    """The shared body of blocks_fwd (grad False), blocks_fwd_bwd and blocks_bwd
    (weighted: row r's gradient times row_scale[r], no loss, bias already added)."""
    R, P = out.shape
    B = x.shape[0]
    D = cols.shape[0]
    T = out.dtype.type
    if add_bias:
        for r in range(R):
            for k in range(P):
                out[r, k] += b[k]
    if grad:
        for k in range(P):
            db[k] = T(0.0)
        for k in range(daux.shape[0]):
            daux[k] = T(0.0)
    expo, g0, ng = meta[0], meta[1], meta[2]
    for r in range(R):
        xi = r % B
        w = scale * (float(row_scale[r]) if weighted else 1.0)
        o = math.log(float(x[xi, expo])) if expo >= 0 else 0.0
        grp = 0
        if ng > 0:
            best = x[xi, g0]
            for k in range(1, ng):
                if x[xi, g0 + k] > best:
                    best = x[xi, g0 + k]
                    grp = k
        acc = 0.0
        for j in range(D):
            kind, off, width, ab, stride = cols[j, 0], cols[j, 1], cols[j, 2], cols[j, 3], cols[j, 4]
            oj = o if cols[j, 5] else 0.0
            xv = float(x[xi, j])
            if math.isnan(xv):  # a missing cell: no loss and no gradient
                if grad:
                    for k in range(width):
                        dout[r, off + k] = T(0.0)
                continue
            a = float(out[r, off])
            dx = 0.0
            idx = 0
            has_aux = False
            if kind == BLK_GAUSSIAN:
                s = float(aux[ab])
                iv = math.exp(-2.0 * s)
                d = a - xv
                q = d * d * iv
                t = 0.5 * q + s + _HALF_LOG_2PI
                da = d * iv
                dx = 1.0 - q
                has_aux = True
                idx = ab
            elif kind == BLK_BERNOULLI:
                t = _softplus(a) - xv * a
                da = _sigmoid(a) - xv
            elif kind == BLK_CATEGORICAL:
                m = float(out[r, off])
                for k in range(1, width):
                    m = max(m, float(out[r, off + k]))
                se = 0.0
                for k in range(width):
                    se += math.exp(float(out[r, off + k]) - m)
                code = int(xv)
                t = m + math.log(se) - float(out[r, off + code])
                if grad:
                    for k in range(width):
                        p = math.exp(float(out[r, off + k]) - m) / se
                        g = w * (p - (1.0 if k == code else 0.0))
                        dout[r, off + k] = T(g)
                        db[off + k] += T(g)
                acc += t
                continue
            elif kind == BLK_POISSON:
                eta = a + oj
                mu = math.exp(eta)
                t = mu - xv * eta + _lgamma(xv + 1.0)
                da = mu - xv
            else:  # BLK_NEGBIN
                idx = ab + grp * stride
                rr = float(aux[idx])
                th = math.exp(rr)
                d = a + oj - rr
                sp = _softplus(d)
                sm = _softplus(-d)
                s = _sigmoid(d)
                sn = _sigmoid(-d)
                t = -_lgamma_diff(xv, th) + _lgamma(xv + 1.0) + th * sp + xv * sm
                da = th * s - xv * sn
                if grad:
                    dx = -(th * _digamma_diff(xv, th) - th * sp + th * s - xv * sn)
                has_aux = True
            acc += t
            if grad:
                g = T(w * da)
                dout[r, off] = g
                db[off] += g
                if has_aux:
                    daux[idx] += T(w * dx)
        if not weighted:
            loss_rows[r] = T(acc)


@jit
def blocks_fwd(loss_rows, out, b, x, aux, cols, meta):
    """The loss per decoder row of a block likelihood (contract: reference_blocks)."""
    _blocks_pass(out, loss_rows, b, aux, out, b, x, aux, cols, meta, 1.0, loss_rows,
                 True, False, False)


@jit
def blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale):
    """The loss per row and its gradient in one pass (contract: reference_blocks)."""
    _blocks_pass(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, float(grad_scale),
                 loss_rows, True, True, False)


@jit
def blocks_bwd(dout, db, daux, out, x, aux, cols, meta, row_scale, scale):
    """The gradient alone, row r weighted by scale * row_scale[r] (contract: reference_blocks)."""
    _blocks_pass(dout, row_scale, db, daux, out, db, x, aux, cols, meta, float(scale),
                 row_scale, False, True, True)


@jit
def encoder_input(xin, x, src, mode):
    """xin (B, Dn): the encoder's dense input columns (contract: reference_blocks)."""
    B, Dn = xin.shape
    T = xin.dtype.type
    for i in range(B):
        for k in range(Dn):
            v = x[i, src[k]]
            nan = math.isnan(v)
            if mode[k] == ENC_MASK:
                xin[i, k] = T(0.0) if nan else T(1.0)
            elif nan:
                xin[i, k] = T(0.0)
            elif mode[k] == ENC_LOG1P:
                xin[i, k] = T(math.log1p(float(v)))
            else:
                xin[i, k] = T(v)


@jit
def embed_fwd(h, Wc, x, cat_cols, cat_rows):
    """h (B, N) += rows of Wc picked by the categorical codes (contract: reference_blocks)."""
    B, N = h.shape
    for i in range(B):
        for c in range(cat_cols.shape[0]):
            v = x[i, cat_cols[c]]
            if math.isnan(v):
                continue
            row = cat_rows[c] + int(v)
            for n in range(N):
                h[i, n] += Wc[row, n]


@jit
def embed_bwd(dWc, dh, x, cat_cols, cat_rows):
    """dWc (n_onehot, N) = dh scattered into the rows the codes read (contract: reference_blocks)."""
    B, N = dh.shape
    T = dWc.dtype.type
    for k in range(dWc.shape[0]):
        for n in range(N):
            dWc[k, n] = T(0.0)
    for i in range(B):
        for c in range(cat_cols.shape[0]):
            v = x[i, cat_cols[c]]
            if math.isnan(v):
                continue
            row = cat_rows[c] + int(v)
            for n in range(N):
                dWc[row, n] += dh[i, n]


@jit
def decoder_input(zin, z, x, cond_cols):
    """zin (R, Z + C) = [z | conditions of x[r % B]] (contract: reference_blocks)."""
    R, Z = z.shape
    B = x.shape[0]
    T = zin.dtype.type
    for r in range(R):
        for k in range(Z):
            zin[r, k] = z[r, k]
        for k in range(cond_cols.shape[0]):
            zin[r, Z + k] = T(x[r % B, cond_cols[k]])
