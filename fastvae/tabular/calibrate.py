"""Samples with the table's class shares: after training, a shift of each categorical
column's output biases, applied when sampling, makes its class probabilities, averaged over
codes drawn from the latent density, equal the training rows' class shares.

Why: a VAE's sampled marginal is the decoder's class probabilities averaged over the codes
it draws from, and the training objective does not make that average the table's shares.
Measured on stevedata's gss_wages (benchmarks/bench_tables.py, seed 0): "High School" was
48.4% of the samples against 51.5% of the rows, "Married" 55.0% against 51.6%; with the
biases shifted, mostlyai-qa's accuracy went 0.942 -> 0.950 (univariate 0.979 -> 0.990,
trivariate 0.901 -> 0.907), and wa_churn's 0.961 -> 0.970, CPS1985's 0.880 -> 0.885.

A column that a value rule sets (:mod:`fastvae.tabular.rules`: where column A holds a key
value, B holds its value) is overwritten after sampling on the rows whose A is a key; its
shares are then the rule's there and the decoder's elsewhere.  The decoder draws A and B
independently given the code, so its shares of B among the rows no rule sets are
E[p_B(k | z) w(z)] / E[w(z)], w(z) the chance that the code's A is no key (a product over
B's rules): B's biases are fit to the training shares among the rows no rule sets (the
rules' categorical A and B; at least :data:`MIN_FREE` such training rows).  Measured on
openintro loans_full_schema, where "failures = 0 -> bankrupt = 0" forced 0 onto the rows
on which the decoder drew bankrupt = 1 without failures: bankrupt > 0 in 12.2% of the
training rows, and in 1.8% of the samples before this.

How: :data:`ROUNDS` rounds of iterative proportional fitting: :data:`CODES` codes from the
model's latent density (with the conditions of as many training rows, drawn), decoded; each
class's bias gains log(share / mean probability).  Adding a constant to a class's logit
multiplies its probability by the same factor in every row, so what the decoder says about
how columns go together is kept.  A class that no training row holds is left alone.  The
shift is the table model's ``calibration_`` (P,), saved with it, and only ``sample`` reads
it: the parameters, and so training, resuming and the scores, are the ELBO's.

**Gaps.** An observed head (a Bernoulli output: the chance that a group of columns is
present) is shifted the same way, by the log-odds of the training rows' present share
over the decoder's mean; a head that other heads' gaps are passed on to
(:mod:`~fastvae.tabular.gaps`), by its share among the rows where those heads are present
(the decoder's mean weighted by their chance of being present).  Rules then write cells
of some heads' columns (a presence rule fills a group where a value says it is present;
year = 1911 -> batters_hit_by_pitch missing), and the head drew without knowing: with a
presence rule on a group present on every row of one status and 30% of another's, the
samples had it present on 0.73 of rows against the table's 0.58.  Such a head is fit on
what ``sample`` writes: up to :data:`GAP_ROUNDS` secant steps on its log-odds, each judged
on the same rows drawn by the sampler itself with one seed (codes, draws, gaps passed on,
rules), until every such head's present share is within :data:`GAP_TOL` of the training
rows' (where rules alone make more gaps than the table has, the head cannot undo them).
"""
from __future__ import annotations

import numpy as np

from ..backends.codes import BLK_BERNOULLI, BLK_CATEGORICAL
from . import cells
from .column import pandas_module

#: rounds of proportional fitting, codes decoded per round, codes per decoder call
ROUNDS, CODES, CHUNK = 3, 20000, 4096
#: a rule-set column is fit on the training rows no rule sets when there are this many
MIN_FREE = 50
#: the gap fit through the sampler: its secant steps, the rows it samples (at most; four
#: per training row, at least 2,048), and how near the training share it stops
GAP_ROUNDS, GAP_ROWS, GAP_TOL = 4, 8192, 0.003


def _ruled(tv, X):
    """{j: (target shares (K,), [(offset, width, key mask (width,) bool), ...])} for each
    categorical model column j that value rules set from categorical columns: the shares
    among the training rows X (N, D) (codes) that no rule sets, and each rule's
    determinant as its output block and its key classes."""
    pd = pandas_module()
    cl = tv.model_.columns
    data = tv.schema_.data
    pos = {c.name: j for j, c in enumerate(data)}
    out = {}
    for rule in tv.rules_ or []:
        a, b, pairs = rule
        if isinstance(a, (list, dict)) or a not in pos or b not in pos:
            continue  # (a key or interval rule, or a column the model does not hold)
        ja, jb = pos[a], pos[b]
        if cl.cols[ja, 0] != BLK_CATEGORICAL or cl.cols[jb, 0] != BLK_CATEGORICAL:
            continue
        codes = data[ja].codes(pd.Series([p[0] for p in pairs], dtype=object), "missing")
        codes = codes[~np.isnan(codes)].astype(np.int64)
        if codes.size == 0:
            continue
        key = np.zeros(int(cl.cols[ja, 2]), dtype=bool)
        key[codes] = True
        out.setdefault(jb, []).append((ja, int(cl.cols[ja, 1]), int(cl.cols[ja, 2]), key))
    ruled = {}
    for jb, rules in out.items():
        free = np.ones(len(X), dtype=bool)
        for ja, _, _, key in rules:
            v = X[:, ja]
            ok = ~np.isnan(v)
            free &= ~ok | ~key[np.where(ok, v, 0).astype(np.int64)]
        v = X[free, jb]
        v = v[~np.isnan(v)].astype(np.int64)
        if v.size >= MIN_FREE:
            ruled[jb] = (np.bincount(v, minlength=int(cl.cols[jb, 2])) / v.size,
                         [(o, w, key) for _, o, w, key in rules])
    return ruled


def calibrate(tv, X, C, seed):
    """The shift (P,) float64 of TabularVAE ``tv``'s output biases under which sampled class
    shares and present shares match the training rows X (N, D) (conditions C (N, C) or
    None), or None when the table has neither a categorical column nor gaps; ``seed``: an
    int, so that a fit is the same run every time."""
    model = tv.model_
    cl = model.columns
    cats = [j for j in range(cl.D) if cl.cols[j, 0] == BLK_CATEGORICAL]
    X = np.asarray(X, dtype=np.float64)
    heads = _head_shares(tv, X)
    if not cats and not heads:
        return None
    shares = {}
    for j in cats:
        v = X[:, j]
        v = v[~np.isnan(v)].astype(np.int64)
        if v.size:
            shares[j] = np.bincount(v, minlength=int(cl.cols[j, 2])) / v.size
    ruled = _ruled(tv, X)
    for j, (share, _) in ruled.items():
        shares[j] = share
    rng = np.random.default_rng(np.random.SeedSequence((int(seed), 0xCA11B)))
    total_shift = np.zeros(cl.P)
    for _ in range(ROUNDS):
        total = np.zeros(cl.P)
        free = {j: [np.zeros(int(cl.cols[j, 2])), 0.0] for j in ruled}
        implied = {o: [0.0, 0.0] for o, (_, up) in heads.items() if up}
        for start in range(0, CODES, CHUNK):
            n = min(CHUNK, CODES - start)
            z = tv.draw_codes(n, rng).astype(model.dtype)
            cond = None if C is None else C[rng.integers(0, len(C), n)]
            p = np.asarray(model.kernels.to_numpy(model.decode(
                z, conditions=cond, shift=total_shift)), dtype=np.float64)
            total += p.sum(0)
            for o, (_, up) in heads.items():  # (where the heads above it are present)
                if up:
                    w = np.prod(p[:, up], axis=1)
                    implied[o][0] += (w * p[:, o]).sum()
                    implied[o][1] += w.sum()
            for j, (_, rules) in ruled.items():  # (the chance no rule sets the row's B)
                w = np.ones(n)
                for o, width, key in rules:
                    w *= 1.0 - p[:, o:o + width][:, key].sum(1)
                o, width = int(cl.cols[j, 1]), int(cl.cols[j, 2])
                free[j][0] += (w[:, None] * p[:, o:o + width]).sum(0)
                free[j][1] += w.sum()
        mean = total / CODES
        for j, (acc, wsum) in free.items():
            o, width = int(cl.cols[j, 1]), int(cl.cols[j, 2])
            if wsum > 0:
                mean[o:o + width] = acc / wsum
        shift = np.zeros(cl.P)
        for j, share in shares.items():
            o, w = int(cl.cols[j, 1]), int(cl.cols[j, 2])
            seen = share > 0
            shift[o:o + w][seen] = np.log(share[seen] / np.maximum(mean[o:o + w][seen], 1e-30))
        for o, (acc, wsum) in implied.items():
            if wsum > 0:
                mean[o] = acc / wsum
        for o, (share, _) in heads.items():  # (one logit: moved by its log-odds)
            shift[o] = _logit(share) - _logit(mean[o])
        total_shift += shift
    return _fit_ruled_gaps(tv, total_shift, X, seed)


def _logit(p):
    p = np.clip(p, 1e-9, 1.0 - 1e-9)
    return np.log(p) - np.log1p(-p)


def _head_shares(tv, X):
    """{output offset: (the training rows' present share, [the output offsets of the
    heads whose gaps are passed on to it])} for each observed head of ``tv`` whose share
    in X (N, D) is strictly between 0 and 1; a head that others' gaps are passed on to
    (:mod:`~fastvae.tabular.gaps`) has its share among the rows where they are present."""
    from .gaps import implied_by
    schema, cl = tv.schema_, tv.model_.columns
    nd = len(schema.data)
    names = [[c.name for c in g] for g in schema.heads]
    above = implied_by(tv.gaps_, names)
    out = {}
    for k in range(len(schema.heads)):
        j = nd + k
        if cl.cols[j, 0] != BLK_BERNOULLI:
            continue
        v = X[:, j]
        rows = ~np.isnan(v)
        for a in above.get(k, ()):
            rows &= X[:, nd + a] == 1.0
        share = float(v[rows].mean()) if rows.any() else 0.0
        if 0.0 < share < 1.0:
            out[int(cl.cols[j, 1])] = (share, [int(cl.cols[nd + a, 1]) for a in above.get(k, ())])
    return out


def _fit_ruled_gaps(tv, shift, X, seed):
    """``shift`` (P,) with the log-odds of each head some rule writes cells of moved so
    that the present share of ``sample``'s rows is the training rows' X (N, D) (see the
    module docstring): secant steps, each judged on the same rows (one seed)."""
    from .sampling import assemble, sample_chunks
    schema, cl = tv.schema_, tv.model_.columns
    written = cells.written(tv.rules_)
    todo = {}
    for k, group in enumerate(schema.heads):
        names = [c.name for c in group]
        v = X[:, len(schema.data) + k]
        v = v[~np.isnan(v)]
        if written.intersection(names) and v.size and 0.0 < v.mean() < 1.0:
            todo[int(cl.cols[len(schema.data) + k, 1])] = (float(v.mean()), names)
    if not todo:
        return shift
    n = int(min(GAP_ROWS, max(2048, 4 * len(X))))
    rows_seed = int(np.random.SeedSequence((int(seed), 0x6A95)).generate_state(1)[0])
    keep = tv.calibration_

    def shares(at):
        tv.calibration_ = at
        try:
            frame = assemble(sample_chunks(tv, n, seed=rows_seed), n)
        finally:
            tv.calibration_ = keep
        return {o: float(np.mean([frame[c].notna().mean() for c in names]))
                for o, (_, names) in todo.items()}

    lo, hi = 0.5 / n, 1.0 - 0.5 / n  # (a share of 0 or 1 of n rows: bounded log-odds)
    want = {o: _logit(t) for o, (t, _) in todo.items()}
    got, last = shares(shift), {}
    for _ in range(GAP_ROUNDS):
        off = [o for o in todo if abs(got[o] - todo[o][0]) > GAP_TOL]
        if not off:
            break
        new = shift.copy()
        for o in off:
            g = _logit(np.clip(got[o], lo, hi))
            slope = 1.0  # (the first step: as if the share followed the head's log-odds)
            if o in last and last[o][1] != g and last[o][0] != shift[o]:
                slope = float(np.clip((g - last[o][1]) / (shift[o] - last[o][0]), 0.05, 1.0))
            new[o] = shift[o] + float(np.clip((want[o] - g) / slope, -4.0, 4.0))
            last[o] = (shift[o], g)
        shift = new
        got = shares(shift)
    return shift


__all__ = ["calibrate", "ROUNDS", "CODES", "MIN_FREE", "GAP_ROUNDS", "GAP_ROWS", "GAP_TOL"]
