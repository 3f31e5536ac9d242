"""Numba kernels of the column-block models (contracts: backends/reference_blocks.py;
CUDA: kernels/blocks.cu).

One pass per decoder row over its columns, branching on each column's block kind (a
predictable branch: columns of a block are consecutive).  Cell math runs in float64 whatever
the arrays' dtype, with two exceptions in the arrays' precision, so that their loops
vectorise: the categorical softmax (a table's wide categorical columns made it most of the
step: 2.9 ms of flights' 8.3 at batch 512), and the terms every negative binomial and ZINB
cell has (:mod:`fastvae.backends.cpu.counts`: a ZINB call on 64 rows of 2,000 genes in the
scVI benchmark's training took 2.17 ms with them in float64, 1.31 ms now).  Sums over rows
run in row order, so the results do not depend on anything but the inputs.
"""
from __future__ import annotations

import math

import numpy as np

from ..codes import (BLK_BERNOULLI, BLK_CATEGORICAL, BLK_GAUSSIAN, BLK_NEGBIN,
                     BLK_POISSON, BLK_ZINB, ENC_LOG1P, ENC_MASK, GRAD_FLUSH)
from ..nbmath import exp_nonpos, jit, log1p_unit
from .counts import LOG1P_TABLE, SMALL, count_run, lgamma1, nb_tables

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
#: count columns read in consecutive data columns that take encoder_input's run pass
_LOG1P_RUN = 16


@jit
def _logistic(a, T):
    """(softplus(a), softplus(-a), sigmoid(a), sigmoid(-a)) from one exp and one log1p, taken
    in the arrays' precision T (float32: nbmath's polynomial exp and log1p, a few ulp; the
    rest of the cell math stays float64).  The count cells' twin, all in T so that their
    loops vectorise, is counts._softplus_parts."""
    e = float(exp_nonpos(T(-abs(a))))
    l1 = float(log1p_unit(T(e)))
    inv = 1.0 / (1.0 + e)
    if a >= 0.0:
        return a + l1, l1, inv, e * inv
    return l1, l1 - a, e * inv, inv


@jit
def _flushed(g, T):
    """g, or 0 when |g| < GRAD_FLUSH (fastvae.backends.codes): the decoder-output gradients
    the next products read are never denormal."""
    return g if abs(g) >= GRAD_FLUSH else T(0.0)


@jit
def _runs(cols):
    """(n, 7) int64 rows [kind, first column, stop, first output, first aux entry, aux step,
    k]: maximal runs of consecutive columns of one kind, width, exposure flag and aux stride
    whose outputs are consecutive (a ZINB column's two outputs, then the next column's) and
    whose aux entries are one entry (step 0) or consecutive (step 1); k is the exposure flag
    in col 5 and the stride is read from cols.  A categorical column is a run of its own.
    The inner loops then run over a run's columns with no table lookups (3.5x faster per
    cell than one branch per cell, measured on the NB block)."""
    D = cols.shape[0]
    runs = np.empty((max(D, 1), 7), dtype=np.int64)
    n = 0
    j = 0
    while j < D:
        kind = cols[j, 0]
        stop = j + 1
        step = -1
        if kind != BLK_CATEGORICAL:
            while stop < D:
                c, p = cols[stop], cols[stop - 1]
                if (c[0] != kind or c[5] != cols[j, 5] or c[4] != cols[j, 4]
                        or c[1] != p[1] + p[2] or c[2] != cols[j, 2]):
                    break
                st = c[3] - p[3]
                if (st != 0 and st != 1) or (step >= 0 and st != step):
                    break
                step = st
                stop += 1
        runs[n, 0] = kind
        runs[n, 1] = j
        runs[n, 2] = stop
        runs[n, 3] = cols[j, 1]
        runs[n, 4] = cols[j, 3]
        runs[n, 5] = max(step, 0)
        runs[n, 6] = cols[j, 5]
        n += 1
        j = stop
    return runs[:n]


@jit
def blocks_tables(aux, cols, meta):
    """(eaux, runs, lg, dg, th): what every row of a pass reads, made once per call (the
    pool's row chunks share them): exp of every aux entry (a few thousand values, not one
    exp per cell) in float64 and (th) in the arrays' precision, the column runs
    (:func:`_runs`) and the negative binomial's small-count tables over the aux entries of
    its dispersions (:func:`~fastvae.backends.cpu.counts.nb_tables`).  These and the run
    table are the only allocations of the block kernels."""
    eaux = np.empty(aux.shape[0])
    th = np.empty(aux.shape[0], aux.dtype)
    for k in range(aux.shape[0]):
        eaux[k] = math.exp(float(aux[k]))
        th[k] = eaux[k]
    ng = meta[2]
    t0, t1 = aux.shape[0], 0
    for j in range(cols.shape[0]):
        if cols[j, 0] == BLK_NEGBIN or cols[j, 0] == BLK_ZINB:
            a_lo = cols[j, 3]
            a_hi = a_lo + cols[j, 4] * max(ng - 1, 0) + 1
            t0, t1 = min(t0, a_lo), max(t1, a_hi)
    lg, dg = nb_tables(eaux, t0, t1)
    return eaux, _runs(cols), lg, dg, th


@jit
def _blocks_pass(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, scale, row_scale,
                 add_bias, grad, weighted, tables):
    """The shared body of blocks_fwd (grad False), blocks_fwd_bwd and blocks_bwd
    (weighted: row r's gradient times row_scale[r], no loss, bias already added);
    ``tables``: :func:`blocks_tables` of aux, cols and meta."""
    R, P = out.shape
    B = x.shape[0]
    T = out.dtype.type
    eaux, runs, lg, dg, th = tables
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
        prod = 1.0
        for q in range(runs.shape[0]):
            kind, j0, j1, off0, ab0, astep = (runs[q, 0], runs[q, 1], runs[q, 2], runs[q, 3],
                                              runs[q, 4], runs[q, 5])
            oj = o if runs[q, 6] else 0.0
            if kind == BLK_CATEGORICAL:
                width = cols[j0, 2]
                xv = float(x[xi, j0])
                if math.isnan(xv):  # a missing cell: no loss and no gradient
                    if grad:
                        for k in range(width):
                            dout[r, off0 + k] = T(0.0)
                    continue
                # softmax in the arrays' precision T, on row slices: the float64 round trip
                # and a division per output kept these loops scalar (12 ns per output on a
                # 1002-class column; 1.8 ns now)
                lo = out[r, off0:off0 + width]
                m = lo[0]
                for k in range(1, width):
                    m = max(m, lo[k])
                se = T(0.0)
                code = int(xv)
                if grad:  # (each exp once: kept in dout)
                    d = dout[r, off0:off0 + width]
                    for k in range(width):
                        e = exp_nonpos(lo[k] - m)
                        d[k] = e
                        se += e
                    inv = T(w) / se
                    ec = d[code]
                    for k in range(width):
                        d[k] = _flushed(d[k] * inv, T)
                    if ec > T(0.5) * se:  # p near 1: w (p - 1) as -w (the others' sum) / se,
                        so = T(0.0)  # without the cancellation of p - 1
                        for k in range(code):
                            so += d[k]
                        for k in range(code + 1, width):
                            so += d[k]
                        d[code] = _flushed(-so, T)
                    else:
                        d[code] = _flushed(ec * inv - T(w), T)
                    dbs = db[off0:off0 + width]
                    for k in range(width):  # (its own loop: fused, it ran 1.5x slower)
                        dbs[k] += d[k]
                else:
                    for k in range(width):
                        se += exp_nonpos(lo[k] - m)
                # the logs of a row's sums are taken together: one log per row, not per
                # column (se is in [1, width]; the product is logged before it could overflow)
                prod *= float(se)
                if prod > 1e280:
                    acc += math.log(prod)
                    prod = 1.0
                acc += float(m) - float(lo[code])
                continue
            if kind == BLK_NEGBIN or kind == BLK_ZINB:  # (ZINB: two outputs per column;
                n = j1 - j0                          # dispersions: one per column, of the
                a0 = ab0 + grp * cols[j0, 4]         # row's group)
                no = 2 * n if kind == BLK_ZINB else n
                acc += count_run(dout[r, off0:off0 + no], db[off0:off0 + no],
                                 daux[a0:a0 + n], out[r, off0:off0 + no], x[xi, j0:j1],
                                 aux[a0:a0 + n], th[a0:a0 + n], eaux[a0:a0 + n],
                                 lg[:, a0:a0 + n], dg[:, a0:a0 + n], oj, w, grad,
                                 kind == BLK_ZINB, T)
                continue
            for j in range(j0, j1):  # Gaussian, Bernoulli, Poisson: one output per column
                off = off0 + (j - j0)
                idx = ab0 + astep * (j - j0)
                xv = float(x[xi, j])
                if math.isnan(xv):
                    if grad:
                        dout[r, off] = T(0.0)
                    continue
                a = float(out[r, off])
                dx = 0.0
                if kind == BLK_GAUSSIAN:
                    iv = 1.0 / (eaux[idx] * eaux[idx])
                    d = a - xv
                    qq = d * d * iv
                    t = 0.5 * qq + float(aux[idx]) + _HALF_LOG_2PI
                    da = d * iv
                    dx = 1.0 - qq
                elif kind == BLK_BERNOULLI:
                    sp, _, s, _ = _logistic(a, T)
                    t = sp - xv * a
                    da = s - xv
                else:  # BLK_POISSON
                    eta = a + oj
                    mu = math.exp(eta)
                    t = mu - xv * eta + lgamma1(xv)
                    da = mu - xv
                acc += t
                if grad:
                    g = _flushed(T(w * da), T)
                    dout[r, off] = g
                    db[off] += g
                    if kind == BLK_GAUSSIAN:
                        daux[idx] += T(w * dx)
        acc += math.log(prod)
        if not weighted:
            loss_rows[r] = T(acc)


@jit
def blocks_fwd_with(loss_rows, out, b, x, aux, cols, meta, tables):
    """:func:`blocks_fwd` with its :func:`blocks_tables` given (a row chunk's call)."""
    _blocks_pass(out, loss_rows, b, aux, out, b, x, aux, cols, meta, 1.0, loss_rows,
                 True, False, False, tables)


@jit
def blocks_fwd(loss_rows, out, b, x, aux, cols, meta):
    """The loss per decoder row of a block likelihood (contract: reference_blocks)."""
    blocks_fwd_with(loss_rows, out, b, x, aux, cols, meta, blocks_tables(aux, cols, meta))


@jit
def blocks_fwd_bwd_with(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale,
                        tables):
    """:func:`blocks_fwd_bwd` with its :func:`blocks_tables` given (a row chunk's call)."""
    _blocks_pass(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, float(grad_scale),
                 loss_rows, True, True, False, tables)


@jit
def blocks_fwd_bwd(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale):
    """The loss per row and its gradient in one pass (contract: reference_blocks)."""
    blocks_fwd_bwd_with(dout, loss_rows, db, daux, out, b, x, aux, cols, meta, grad_scale,
                        blocks_tables(aux, cols, meta))


@jit
def blocks_bwd(dout, db, daux, out, x, aux, cols, meta, row_scale, scale):
    """The gradient alone, row r weighted by scale * row_scale[r] (contract: reference_blocks)."""
    _blocks_pass(dout, row_scale, db, daux, out, db, x, aux, cols, meta, float(scale),
                 row_scale, False, True, True, blocks_tables(aux, cols, meta))


@jit
def _log1p_count(v, T):
    """log(1 + v) of a count column's value, in precision T: a small integer reads the
    table, NaN (missing) reads 0."""
    if v >= 0.0 and v < SMALL:  # (False for NaN)
        iv = int(v)
        if iv == v:
            return T(LOG1P_TABLE[iv])
    return T(0.0) if v != v else T(math.log1p(v))


@jit
def _log1p_rows(xin, x, k0, k1, s0):
    """xin[:, k0:k1] = log1p(x[:, s0:s0 + k1 - k0]) of a run of count columns that read
    consecutive data columns (a NaN reads 0): :func:`_input_cells` without the column
    index and the mode per cell."""
    T = xin.dtype.type
    n = k1 - k0
    for i in range(xin.shape[0]):
        xi = x[i, s0:s0 + n]
        oi = xin[i, k0:k1]
        for j in range(n):
            oi[j] = _log1p_count(float(xi[j]), T)


@jit
def _input_cells(xin, x, k0, k1, src, mode):
    """xin[:, k0:k1] cell by cell, by each column's mode."""
    T = xin.dtype.type
    for i in range(xin.shape[0]):
        # 1-D row views and the small-count table inline: 2x faster than 2-D indexing
        # and a helper per cell (128 x 2,000 counts: 0.99 -> 0.50 ms)
        xi = x[i]
        oi = xin[i]
        for k in range(k0, k1):
            v = float(xi[src[k]])
            md = mode[k]
            if md == ENC_LOG1P:
                oi[k] = _log1p_count(v, T)
            elif md == ENC_MASK:
                oi[k] = T(0.0) if v != v else T(1.0)
            else:
                oi[k] = T(0.0) if v != v else T(v)


@jit
def encoder_input(xin, x, src, mode):
    """xin (B, Dn): the encoder's dense input columns (contract: reference_blocks).  Runs of
    at least _LOG1P_RUN count columns reading consecutive data columns (a count matrix's
    genes) take :func:`_log1p_rows`; other columns go cell by cell."""
    Dn = xin.shape[1]
    k = 0
    while k < Dn:
        stop = k + 1
        if mode[k] == ENC_LOG1P:
            while stop < Dn and mode[stop] == ENC_LOG1P and src[stop] == src[stop - 1] + 1:
                stop += 1
        if stop - k >= _LOG1P_RUN:
            _log1p_rows(xin, x, k, stop, src[k])
        else:
            _input_cells(xin, x, k, stop, src, mode)
        k = stop


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
