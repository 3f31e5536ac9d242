"""Numba cell kernels of the count blocks, negative binomial and ZINB (the block kernel of
:mod:`fastvae.backends.cpu.blocks` calls :func:`count_run` for each run of their columns;
contracts: backends/reference_blocks.py).

A run's cells take two passes.  The terms every cell has, a zero count's (softplus and
sigmoid of the logit, and of the inflation logit for ZINB), run in the arrays' precision
with selects and no branch, so that LLVM vectorises them; their float32 sums are added in
float64 every _CHUNK cells.  Then the lgamma and digamma sums of the positive counts, in
float64: small counts read per-call tables, larger ones exact sums or the series of
:mod:`fastvae.backends.special` (compiled from the same source).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .. import special
from ..codes import GRAD_FLUSH
from ..nbmath import FASTMATH, exp_nonpos, jit, jit_module_functions, log1p_unit

_special = jit_module_functions(special, special.FUNCTIONS)
_lgamma = _special["lgamma"]
_lgamma_diff = _special["lgamma_diff"]
_digamma_diff = _special["digamma_diff"]
#: counts below this are integers whose log1p, lgamma(x + 1) and negative binomial sums are
#: read from tables or summed exactly (most counts of a count matrix are small: 63% zeros,
#: 97% below 16 in benchmarks/nb_counts.py)
SMALL = 64
LOG1P_TABLE = np.log1p(np.arange(SMALL, dtype=np.float64))
_LGAMMA1_TABLE = np.array([math.lgamma(k + 1.0) for k in range(SMALL)])
#: above this theta the exact product of (theta + k), k < SMALL, could overflow float64
#: ((3e4 + 64)^64 is 1e287): the series take over
_THETA_EXACT = 3e4
#: counts below this read lgamma(x + th) - lgamma(th) and digamma(x + th) - digamma(th)
#: from per-call tables of each dispersion's cumulative sums of log(th + k) and 1/(th + k):
#: the nonzero counts of a count matrix are mostly this small, and the tables cost
#: _NB_TABLE logs per dispersion per call instead of one log per nonzero cell (computing
#: them per cell instead, from float32 products and one vectorised log, measured 1.4x
#: slower per call on the scVI benchmark's counts)
_NB_TABLE = 8
#: cells a cell pass sums in float32 before adding to the float64 loss: a vectorised float32
#: sum of this many stays within about 1e-6 of itself
_CHUNK = 256


@jit
def lgamma1(x):
    """lgamma(x + 1) of a count x >= 0."""
    if x < SMALL and x == math.floor(x):
        return _LGAMMA1_TABLE[int(x)]
    return _lgamma(x + 1.0)


@jit
def _nb_diffs(x, th, grad):
    """(lgamma(x + th) - lgamma(th), digamma(x + th) - digamma(th)) of a count x > 0: for a
    small integer x the exact sums over k < x of log(th + k) (one log of their product) and
    1 / (th + k); otherwise backends/special.py's series (the digamma only when ``grad``)."""
    if x < SMALL and x == math.floor(x) and th < _THETA_EXACT:
        prod = 1.0
        dg = 0.0
        n = int(x)
        for k in range(n):
            t = th + k
            prod *= t
            dg += 1.0 / t
        return math.log(prod), dg
    return _lgamma_diff(x, th), _digamma_diff(x, th) if grad else 0.0


@jit
def nb_tables(eaux, first, stop):
    """(lg, dg) (_NB_TABLE, n_aux) float64: for aux entries first..stop-1 (the log
    dispersions), lg[x, a] = sum_{k<x} log(th + k) = lgamma(x + th) - lgamma(th) and
    dg[x, a] = sum_{k<x} 1 / (th + k) = digamma(x + th) - digamma(th), th = eaux[a].
    Empty (no columns) when first >= stop: nothing reads them."""
    n = eaux.shape[0] if stop > first else 0
    lg = np.zeros((_NB_TABLE, n))
    dg = np.zeros((_NB_TABLE, n))
    for x in range(1, _NB_TABLE):
        for a in range(first, stop):
            t = eaux[a] + (x - 1)
            lg[x, a] = lg[x - 1, a] + math.log(t)
            dg[x, a] = dg[x - 1, a] + 1.0 / t
    return lg, dg


#: a cell function or cell loop, inlined by Numba into its caller: LLVM's own inliner left
#: the larger ones as one call per cell (15-40 ns a cell)
jit_inline = njit(inline="always", fastmath=FASTMATH, error_model="numpy", nogil=True)


@jit
def _softplus_parts(a, T):
    """(softplus(a), softplus(-a), sigmoid(a), sigmoid(-a)) in the arrays' precision T, with
    selects and no branch, so that a loop of them vectorises (float32: nbmath's polynomial
    exp and log1p; float64: libm)."""
    e = exp_nonpos(-abs(a))
    l1 = log1p_unit(e)
    inv = T(1.0) / (T(1.0) + e)
    pos = a >= T(0.0)
    return ((a if pos else T(0.0)) + l1, (T(0.0) if pos else -a) + l1,
            inv if pos else e * inv, e * inv if pos else inv)


@jit_inline
def _nb_cell(a, xv, t, wf, T):
    """(loss, output gradient, dispersion gradient) of a negative binomial cell's terms
    that every count has (a zero count's): logit a, count xv (NaN: missing, all three 0),
    dispersion t, gradient weight wf, in the arrays' precision T."""
    zero = T(0.0)
    obs = xv == xv
    x0 = xv if obs else zero
    sp, sm, s, sn = _softplus_parts(a, T)
    g = wf * (t * s - x0 * sn)
    return ((t * sp + x0 * sm) if obs else zero,
            g if obs and abs(g) >= T(GRAD_FLUSH) else zero,
            wf * (t * sp - t * s + x0 * sn) if obs else zero)


@jit_inline
def _zinb_cell(a, gz, xv, t, wf, T):
    """(loss, gradients of a and of the inflation logit gz, dispersion gradient) of a ZINB
    cell's terms but the positive counts' lgamma sums (:func:`_nb_cell`'s arguments).  Both
    ways of the cell, a zero's and a positive count's, are computed and one selected
    (whether a count is zero is a coin toss per cell)."""
    zero, one = T(0.0), T(1.0)
    obs = xv == xv
    x0 = xv if obs else zero
    isz = x0 == zero
    sp, sm, s, sn = _softplus_parts(a, T)
    spg, _, sg, _ = _softplus_parts(gz, T)
    tsp = t * sp
    u = gz + tsp
    e = exp_nonpos(-abs(u))
    l1 = log1p_unit(e)
    inv = one / (one + e)
    upos = u >= zero
    su = inv if upos else e * inv
    w0 = e * inv if upos else inv  # (a zero: the NB's share)
    # a zero's loss tsp - softplus(u), without the cancellation of tsp above u = 0
    lz = (-gz - l1) if upos else (tsp - l1)
    wff = wf * (w0 if isz else one)
    g = wff * (t * s - x0 * sn)
    gg = wf * (sg - su if isz else sg)
    return (((lz if isz else tsp + x0 * sm) + spg) if obs else zero,
            g if obs and abs(g) >= T(GRAD_FLUSH) else zero,
            gg if obs and abs(gg) >= T(GRAD_FLUSH) else zero,
            wff * (tsp - t * s + x0 * sn) if obs else zero)


@jit_inline
def _nb_cells(dout, db, daux, out, x, aux, th, oj, w, grad, T):
    """:func:`_nb_cell` over at most _CHUNK cells; returns their loss in T.  Only T-typed
    arrays are read (a float64 array read here, the dispersions' exp, kept LLVM from
    vectorising the float32 loop), and ``grad`` picks one of two loops (inside, the
    branch kept it scalar too)."""
    part, wf = T(0.0), T(w)
    if grad:
        for k in range(x.shape[0]):
            loss, g, d = _nb_cell(out[k] + oj - aux[k], x[k], th[k], wf, T)
            part += loss
            dout[k] = g
            db[k] += g
            daux[k] += d
    else:
        for k in range(x.shape[0]):
            part += _nb_cell(out[k] + oj - aux[k], x[k], th[k], wf, T)[0]
    return part


@jit_inline
def _zinb_cells(dout, db, daux, out, x, aux, th, oj, w, grad, T):
    """:func:`_nb_cells` of a ZINB run (:func:`_zinb_cell`): out, dout and db hold the
    run's 2n outputs [a, inflation logit] per column."""
    part, wf = T(0.0), T(w)
    if grad:
        for k in range(x.shape[0]):
            loss, g, gg, d = _zinb_cell(out[2 * k] + oj - aux[k], out[2 * k + 1], x[k],
                                        th[k], wf, T)
            part += loss
            dout[2 * k] = g
            dout[2 * k + 1] = gg
            db[2 * k] += g
            db[2 * k + 1] += gg
            daux[k] += d
    else:
        for k in range(x.shape[0]):
            part += _zinb_cell(out[2 * k] + oj - aux[k], out[2 * k + 1], x[k], th[k], wf,
                               T)[0]
    return part


@jit
def count_run(dout, db, daux, out, x, aux, th, eaux, lg, dg, oj, w, grad, zinb, T):
    """One row's cells of a negative binomial (``zinb``: ZINB) run, every argument a 1-D
    slice over the run's columns (their outputs, dispersions, data; th: the dispersions in
    the arrays' precision, eaux in float64); returns their loss.  The cell terms run in
    chunks of _CHUNK cells (a float32 sum of that many stays within 1e-6 of itself; the
    chunks add in float64), then the lgamma and digamma terms of the positive counts
    (:func:`_count_terms`).  (Unit stride slices: with the run's offsets as indices the
    same loop ran 2.4x slower.)"""
    n = x.shape[0]
    acc = 0.0
    for k0 in range(0, n, _CHUNK):
        k1 = min(n, k0 + _CHUNK)
        if zinb:
            acc += float(_zinb_cells(dout[2 * k0:2 * k1], db[2 * k0:2 * k1], daux[k0:k1],
                                     out[2 * k0:2 * k1], x[k0:k1], aux[k0:k1], th[k0:k1],
                                     T(oj), w, grad, T))
        else:
            acc += float(_nb_cells(dout[k0:k1], db[k0:k1], daux[k0:k1], out[k0:k1],
                                   x[k0:k1], aux[k0:k1], th[k0:k1], T(oj), w, grad, T))
    return acc + _count_terms(daux, x, eaux, lg, dg, w, grad, T)


@jit
def _count_terms(daux, x, eaux, lg, dg, w, grad, T):
    """The lgamma and digamma terms of a negative binomial (or ZINB) run's positive counts;
    returns their loss, and with ``grad`` subtracts their dispersion gradients from daux.
    Counts below _NB_TABLE read the tables, with no branch (a zero, or a missing cell,
    reads row 0 of the tables: 0): whether a count is zero is a coin toss per cell, and
    branching on it cost more than the sums."""
    n = x.shape[0]
    acc = 0.0
    if grad:  # (the branch outside the loops: inside, it kept LLVM from vectorising)
        for k in range(n):
            xv = float(x[k])
            iv = int(xv if xv < _NB_TABLE else 0.0)  # (NaN: 0)
            acc += _LGAMMA1_TABLE[iv] - lg[iv, k]
            daux[k] -= T(w * eaux[k] * dg[iv, k])
    else:
        for k in range(n):
            xv = float(x[k])
            iv = int(xv if xv < _NB_TABLE else 0.0)
            acc += _LGAMMA1_TABLE[iv] - lg[iv, k]
    for k in range(n):  # the larger counts: exact sums or the series
        xv = float(x[k])
        if xv >= _NB_TABLE:
            lgd, dgd = _nb_diffs(xv, eaux[k], grad)
            acc += lgamma1(xv) - lgd
            if grad:
                daux[k] -= T(w * eaux[k] * dgd)
    return acc
