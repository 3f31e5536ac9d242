"""Plain NumPy kernels of the column-block models: the likelihood of a list of blocks, the
encoder's input (dense columns and the categorical gather) and the decoder's input (z and
the conditions).  The definitions and the test oracle, like :mod:`.reference` (whose
conventions hold here: outputs first, gradients written, not accumulated); its
:data:`~fastvae.backends.reference.KERNELS` lists these too, and every backend has a twin.

The tables ``cols`` (D, 6), ``meta`` (3,), ``src``/``mode``, ``cat_cols``/``cat_rows``,
``cond_cols`` are those of :class:`fastvae.core.columns.Columns`.  x (B, W) is a batch of
data rows ``[x | conditions | exposure]``; decoder row r reconstructs x[r % B]; a NaN cell is
missing: it adds nothing to the loss and no gradient.

Per cell, with a the column's decoder output(s) (bias added), o the log-exposure (0 without
one) and the column's aux value s (a Gaussian log-scale, or a negative binomial's log inverse
dispersion r; theta = exp(r)), -log p and its gradients (d = eta - r, sig the logistic):

=============  ===============================================  ======================  ======================
block          -log p                                           d/da                    d/d aux
=============  ===============================================  ======================  ======================
Gaussian       (a-x)^2 e^{-2s}/2 + s + log(2 pi)/2              (a-x) e^{-2s}           1 - (a-x)^2 e^{-2s}
Bernoulli      softplus(a) - x a                                sig(a) - x
Categorical    logsumexp(a) - a_x                               softmax(a) - onehot(x)
Poisson        mu - x eta + lgamma(x+1), eta = a + o            mu - x
NB2            -lgd(x, th) + lgamma(x+1) + th sp(d) + x sp(-d)  th sig(d) - x sig(-d)   -(th dgd(x, th) - th sp(d)
                                                                                        + th sig(d) - x sig(-d))
=============  ===============================================  ======================  ======================

with sp = softplus, lgd(x, th) = lgamma(x + th) - lgamma(th) and dgd = digamma(x + th) -
digamma(th) (:mod:`fastvae.backends.special`): th sp(d) is -th log(th / (th + mu)) and x sp(-d)
is -x log(mu / (th + mu)), each without overflow for any mu.

ZINB (two outputs per column: the NB's a and the zero-inflation logit g, pi = sig(g)).  A
count x > 0 is an NB count that was not inflated: -log p = sp(g) + the NB2 term (-log(1 - pi)
= sp(g)), d/da and d/d aux the NB2's, d/dg = sig(g).  A zero is either: with L0 = -th sp(d) =
log NB(0) and u = g - L0,

    -log p(0) = sp(g) - logaddexp(g, L0) = sp(g) - L0 - sp(u)
    d/dg = sig(g) - sig(u)        d/da = w th sig(d)        d/d aux = w th (sp(d) - sig(d))

where w = sig(-u) = NB(0)(1 - pi) / p(0) is the NB's share of the zero (the NB2 zero's
gradients times w).  No log pi or log(1 - pi) is formed by subtraction: as pi -> 0 (g -> -inf)
this is the NB2's zero (sp(g) -> 0, w -> 1), and as pi -> 1 it goes to 0 with w -> 0.
"""
from __future__ import annotations

import math

import numpy as np

from . import special
from .codes import (BLK_BERNOULLI, BLK_CATEGORICAL, BLK_GAUSSIAN, BLK_NEGBIN,
                    BLK_POISSON, BLK_ZINB, ENC_LOG1P, ENC_MASK, GRAD_FLUSH)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_lgamma_diff = np.vectorize(special.lgamma_diff, otypes=[np.float64])
_digamma_diff = np.vectorize(special.digamma_diff, otypes=[np.float64])
_lgamma = np.vectorize(special.lgamma, otypes=[np.float64])


def _softplus(a):
    return np.maximum(a, 0) + np.log1p(np.exp(-np.abs(a)))


def _sigmoid(a):
    e = np.exp(-np.abs(a))
    r = 1 / (1 + e)
    return np.where(a >= 0, r, e * r)


def _groups(x, meta):
    """(B,) the condition group of each row: the index of its largest condition (one-hot
    conditions: the hot one); zeros when no dispersion depends on the condition."""
    n = int(meta[2])
    if n == 0:
        return np.zeros(x.shape[0], dtype=np.int64)
    return np.argmax(x[:, meta[1]:meta[1] + n], axis=1)


def block_cells(out, x, aux, cols, meta):
    """Every cell's -log p and gradients, for out (R, P) with its bias added.

    Returns (terms (R, D), dout (R, P) = d term / d out, daux_cell (R, D) = d term / d aux
    of the cell's aux entry, aux_index (R, D) that entry, -1 for none); a missing cell has
    term 0, no gradient and aux index -1.  Shared by the three likelihood kernels and by
    the per-column scores (:func:`fastvae.training.evaluate.score_samples`)."""
    R, P = out.shape
    B, D = x.shape[0], cols.shape[0]
    rows = np.arange(R) % B
    xr = x[rows].astype(np.float64)
    o = np.log(xr[:, meta[0]]) if meta[0] >= 0 else np.zeros(R)
    g = _groups(x, meta)[rows]
    a64 = out.astype(np.float64)
    terms = np.zeros((R, D))
    dout = np.zeros((R, P))
    dcell = np.zeros((R, D))
    aidx = np.full((R, D), -1, dtype=np.int64)
    for j in range(D):
        kind, off, w, ab, stride, exposed = (int(v) for v in cols[j])
        xv = xr[:, j]
        obs = ~np.isnan(xv)
        x0 = np.where(obs, xv, 0.0)
        a = a64[:, off]
        if kind == BLK_GAUSSIAN:
            s = float(aux[ab])
            iv = math.exp(-2 * s)
            r = a - x0
            t = 0.5 * r * r * iv + s + _HALF_LOG_2PI
            da, dx = r * iv, 1 - r * r * iv
        elif kind == BLK_BERNOULLI:
            t = _softplus(a) - x0 * a
            da, dx = _sigmoid(a) - x0, None
        elif kind == BLK_CATEGORICAL:
            A = a64[:, off:off + w]
            m = A.max(axis=1, keepdims=True)
            e = np.exp(A - m)
            se = e.sum(axis=1, keepdims=True)
            code = x0.astype(np.int64)
            t = (m[:, 0] + np.log(se[:, 0])) - A[np.arange(R), code]
            G = e / se
            G[np.arange(R), code] -= 1
            dout[:, off:off + w] = np.where(obs[:, None], G, 0)
            terms[:, j] = np.where(obs, t, 0)
            continue
        elif kind == BLK_POISSON:
            eta = a + o * exposed
            mu = np.exp(eta)
            t = mu - x0 * eta + _lgamma(x0 + 1)
            da, dx = mu - x0, None
        elif kind in (BLK_NEGBIN, BLK_ZINB):
            idx = ab + g * stride
            r_ = aux[idx].astype(np.float64)
            th = np.exp(r_)
            d = a + o * exposed - r_
            sp, sm = _softplus(d), _softplus(-d)
            s, sn = _sigmoid(d), _sigmoid(-d)
            t = -_lgamma_diff(x0, th) + _lgamma(x0 + 1) + th * sp + x0 * sm
            da = th * s - x0 * sn
            dx = -(th * _digamma_diff(x0, th) - th * sp + th * s - x0 * sn)
            aidx[:, j] = np.where(obs, idx, -1)
            if kind == BLK_ZINB:  # the inflation logit, and a zero's two ways (see above)
                gz = a64[:, off + 1]
                u = gz + th * sp
                w0 = _sigmoid(-u)
                zero = x0 == 0
                t = _softplus(gz) + np.where(zero, th * sp - _softplus(u), t)
                da = np.where(zero, w0 * da, da)  # (the NB's zero, its share w0)
                dx = np.where(zero, w0 * dx, dx)
                dout[:, off + 1] = np.where(obs, _sigmoid(gz) - np.where(zero, _sigmoid(u), 0), 0)
        else:
            raise ValueError(f"unknown block code {kind} in column {j}")
        terms[:, j] = np.where(obs, t, 0)
        dout[:, off] = np.where(obs, da, 0)
        if dx is not None:
            dcell[:, j] = np.where(obs, dx, 0)
            if kind == BLK_GAUSSIAN:
                aidx[:, j] = np.where(obs, ab, -1)
    return terms, dout, dcell, aidx


def _flushed(g, dtype):
    """g (float64) rounded to ``dtype``, its entries below GRAD_FLUSH in magnitude zero
    (fastvae.backends.codes: no denormal decoder-output gradient reaches a product)."""
    g = g.astype(dtype)
    g[np.abs(g) < GRAD_FLUSH] = 0
    return g


def _aux_sums(daux, dcell, aidx):
    """daux (A,) = the per-cell aux gradients summed into their entries."""
    keep = aidx >= 0
    daux[...] = np.bincount(aidx[keep], weights=dcell[keep], minlength=daux.shape[0])


def blocks_fwd(loss_rows, out, b, x, aux, cols, meta):
    """The loss per decoder row of a block likelihood (evaluation: no gradient).

    out (R, P) in: the decoder output before bias; out: with its bias b (P,) added.
    x (B, W) data rows; aux (A,) the aux vector; cols (D, 6), meta (3,) the tables.
    loss_rows (R,) out: -log p(x | z) per row, the sum over observed cells.
    """
    out += b
    loss_rows[...] = block_cells(out, x, aux, cols, meta)[0].sum(axis=1)


def blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale):
    """The loss per row and its gradient in one pass (blocks_fwd's arguments, and):

    dout (R, P) out: grad_scale * d loss_row / d out; db (P,) out: its column sums.
    daux (A,)   out: grad_scale * d sum(loss_rows) / d aux.
    """
    out += b
    terms, d, dcell, aidx = block_cells(out, x, aux, cols, meta)
    loss_rows[...] = terms.sum(axis=1)
    dout[...] = _flushed(grad_scale * d, dout.dtype)
    db[...] = dout.sum(axis=0)
    _aux_sums(daux, grad_scale * dcell, aidx)


def blocks_bwd(dout, db, daux, out, x, aux, cols, meta, row_scale, scale):
    """The gradient alone, each row weighted (importance-weighted objectives): out (R, P)
    with its bias already added (by :func:`blocks_fwd`); row_scale (R,); dout, db, daux
    as in :func:`blocks_fwd_bwd` with the factor scale * row_scale[r] on row r."""
    _, d, dcell, aidx = block_cells(out, x, aux, cols, meta)
    w = (scale * row_scale.astype(np.float64))[:, None]
    dout[...] = _flushed(w * d, dout.dtype)
    db[...] = dout.sum(axis=0)
    _aux_sums(daux, w * dcell, aidx)


def encoder_input(xin, x, src, mode):
    """xin (B, Dn) = the encoder's dense input columns of data rows x (B, W): column k is
    x[:, src[k]] read by mode[k]: the value, log1p of it (counts), or 1 where it is observed
    and 0 where NaN (the mask); a NaN value reads as 0."""
    v = x[:, src].astype(np.float64)
    nan = np.isnan(v)
    v0 = np.where(nan, 0.0, v)
    with np.errstate(invalid="ignore", divide="ignore"):  # (log1p of non-count columns: unused)
        r = np.where(mode == ENC_LOG1P, np.log1p(v0), v0)
    xin[...] = np.where(mode == ENC_MASK, (~nan).astype(np.float64), r)


def embed_fwd(h, Wc, x, cat_cols, cat_rows):
    """h (B, N) += the one-hot product of the categorical columns: for each categorical
    column c, row cat_rows[c] + code of Wc (n_onehot, N), code = x[:, cat_cols[c]] (a NaN
    code, missing, adds nothing)."""
    for c, row in zip(cat_cols, cat_rows):
        code = x[:, c]
        ok = ~np.isnan(code)
        h[ok] += Wc[row + code[ok].astype(np.int64)]


def embed_bwd(dWc, dh, x, cat_cols, cat_rows):
    """dWc (n_onehot, N) = the gradient of embed_fwd's rows: dh (B, N) scattered into the
    row each code read (a row read by no code gets 0)."""
    dWc[...] = 0
    for c, row in zip(cat_cols, cat_rows):
        code = x[:, c]
        ok = ~np.isnan(code)
        np.add.at(dWc, row + code[ok].astype(np.int64), dh[ok])


def decoder_input(zin, z, x, cond_cols):
    """zin (R, Z + C) = [z | the conditions of x[r % B]] for z (R, Z), x (B, W) and the C
    condition columns cond_cols."""
    Z = z.shape[1]
    B = x.shape[0]
    zin[:, :Z] = z
    zin[:, Z:] = x[np.arange(z.shape[0]) % B][:, cond_cols]
