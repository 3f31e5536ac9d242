"""Samples with the table's numeric distributions: after training, a monotone map per
numeric column, applied to the decoder's draws when sampling, makes each column's sampled
distribution the training rows'.

Why: as with the class shares (:mod:`fastvae.tabular.calibrate`), a VAE's sampled
marginal is the decoder's distribution averaged over the codes it draws from, and the
training objective does not make that average the table's.  Measured on Lahman's mlb_teams
(2,784 rows, 25 numeric columns, seed 0): the largest gap between the sampled and the
training distribution functions (Kolmogorov-Smirnov) was 0.02 to 0.09 per column, above
the 0.03 that sampling 2,784 rows explains on 12 of them; on ``year`` it was 0.044 at 1994.
Rules that read such a column carry the error on: ``division_id`` is missing in exactly
the years before 1969, so sampled rows missed it 2.3 points more often than the table.

How: :data:`CODES` codes from the model's latent density (with the conditions of as many
training rows, drawn) are decoded with the calibration's shift and one draw per cell, as
``sample`` makes them.  For each numeric column (the decoder's Gaussian in the column's
mapped space, a time column's too; not a count column), the map takes the draws' q-th
quantile to the training cells' q-th quantile, q on :func:`knots` (at most
:data:`MAX_KNOTS`, at least :data:`ROWS_PER_KNOT` training cells apart), linear between
them; beyond the outer knots a draw moves by the outer knot's shift, so the tails keep the
decoder's shape (and the protected range still bounds them).  Draws where the column's
observed head said "missing" are left out of the draws' quantiles.  A monotone map keeps
every row's rank in each column, so the rank correlations between columns are the
decoder's, before the orders (:mod:`~fastvae.tabular.orders`) swap a broken row's two cells:
a pair of columns whose draws break their order on many rows then comes back with the
smaller draws in A and the larger in B, and the two distributions move apart by about the
decoder's noise (on planted start <= end spans whose draws broke the order on 38% of rows,
a Kolmogorov-Smirnov gap of 0.05 each; on Kershaw's and mlb_teams' orders, broken on 2%
of rows at most, no change above 0.003).  ``sample(mean=True)`` maps the decoder's means
through the same maps.  Saved with the model as ``margins``; only ``sample`` reads it
(training, resuming, scores, reconstruction and imputation are the ELBO's).
"""
from __future__ import annotations

import numpy as np

from ..backends.codes import BLK_GAUSSIAN

#: codes decoded to measure the draws' distributions, in calls of CHUNK
CODES, CHUNK = 20000, 4096
#: the map's knots: at most MAX_KNOTS, with at least ROWS_PER_KNOT training cells between
#: two (fewer cells than 2 * ROWS_PER_KNOT: no map)
MAX_KNOTS, ROWS_PER_KNOT = 129, 8


def knots(n):
    """The quantile levels (K,) of a map fit on ``n`` training cells: K evenly spaced
    levels strictly inside (0, 1) (none below 2 * ROWS_PER_KNOT cells)."""
    k = min(MAX_KNOTS, n // ROWS_PER_KNOT)
    if k < 2:
        return np.zeros(0)
    return (np.arange(k) + 0.5) / k


def fit(tv, X, C, shift, seed):
    """{model column j: (xs (K,), ys (K,))}: the map of each numeric column of TabularVAE
    ``tv`` (see the module docstring), from the training rows X (N, D) in the model's
    space (conditions C (N, C) or None), under the calibration ``shift`` (P,) or None;
    ``seed``: an int.  Empty when the table has no numeric column with enough cells."""
    schema, model = tv.schema_, tv.model_
    cl = model.columns
    X = np.asarray(X, dtype=np.float64)
    nd = len(schema.data)
    cols = {}
    for j in range(nd):
        if cl.cols[j, 0] != BLK_GAUSSIAN:
            continue
        v = X[:, j]
        v = v[~np.isnan(v)]
        q = knots(v.size)
        if q.size:
            cols[j] = (q, np.quantile(v, q))
    if not cols:
        return {}
    head = {}  # (a modelled column's observed head, when it has one)
    for k, group in enumerate(schema.heads):
        for c in group:
            if c.modeled:
                head[next(j for j, d in enumerate(schema.data) if d is c)] = nd + k
    rng = np.random.default_rng(np.random.SeedSequence((int(seed), 0x3A261)))
    draws = []
    for start in range(0, CODES, CHUNK):
        n = min(CHUNK, CODES - start)
        z = tv.draw_codes(n, rng).astype(model.dtype)
        cond = None if C is None else C[rng.integers(0, len(C), n)]
        draws.append(np.asarray(model.kernels.to_numpy(model.decode_values(
            z, mean=False, seed=rng, conditions=cond, shift=shift)), dtype=np.float64))
    V = np.concatenate(draws)
    out = {}
    for j, (q, ys) in cols.items():
        v = V[:, j]
        keep = np.isfinite(v)
        if j in head:
            keep &= V[:, head[j]] > 0.5
        if keep.sum() < 2 * q.size:
            continue
        xs = np.quantile(v[keep], q)
        if not np.all(np.diff(xs) > 0):  # (ties among draws: no map, not a broken one)
            continue
        out[j] = (xs, ys)
    return out


def apply(values, maps):
    """``values`` (N, D) float64, the decoder's draws, with each mapped column j of
    ``maps`` ({j: (xs, ys)}) moved through its map, in place; returns values."""
    for j, (xs, ys) in maps.items():
        v = values[:, j]
        out = np.interp(v, xs, ys)
        lo, hi = v < xs[0], v > xs[-1]
        out[lo] = v[lo] + (ys[0] - xs[0])
        out[hi] = v[hi] + (ys[-1] - xs[-1])
        values[:, j] = out
    return values


def config(maps):
    """``maps`` as JSON: [[j, [xs], [ys]], ...] (None for None)."""
    if maps is None:
        return None
    return [[int(j), [float(x) for x in xs], [float(y) for y in ys]]
            for j, (xs, ys) in sorted(maps.items())]


def from_config(cfg):
    """The maps of :func:`config`'s output (None for None)."""
    if cfg is None:
        return None
    return {int(j): (np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
            for j, xs, ys in cfg}


__all__ = ["fit", "apply", "knots", "config", "from_config", "CODES", "MAX_KNOTS",
           "ROWS_PER_KNOT"]
