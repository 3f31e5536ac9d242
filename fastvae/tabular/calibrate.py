"""Samples with the table's class shares: after training, a shift of each categorical
column's output biases, applied when sampling, makes its class probabilities, averaged over
codes drawn from the latent density, equal the training rows' class shares.

Why: a VAE's sampled marginal is the decoder's class probabilities averaged over the codes
it draws from, and the training objective does not make that average the table's shares.
Measured on stevedata's gss_wages (benchmarks/bench_tables.py, seed 0): "High School" was
48.4% of the samples against 51.5% of the rows, "Married" 55.0% against 51.6%; with the
biases shifted, mostlyai-qa's accuracy went 0.942 -> 0.950 (univariate 0.979 -> 0.990,
trivariate 0.901 -> 0.907), and wa_churn's 0.961 -> 0.970, CPS1985's 0.880 -> 0.885.

How: :data:`ROUNDS` rounds of iterative proportional fitting: :data:`CODES` codes from the
model's latent density (with the conditions of as many training rows, drawn), decoded; each
class's bias gains log(share / mean probability).  Adding a constant to a class's logit
multiplies its probability by the same factor in every row, so what the decoder says about
how columns go together is kept.  A class that no training row holds is left alone.  The
shift is the table model's ``calibration_`` (P,), saved with it, and only ``sample`` reads
it: the parameters, and so training, resuming and the scores, are the ELBO's.
"""
from __future__ import annotations

import numpy as np

from ..backends.codes import BLK_CATEGORICAL

#: rounds of proportional fitting, codes decoded per round, codes per decoder call
ROUNDS, CODES, CHUNK = 3, 20000, 4096


def calibrate(tv, X, C, seed):
    """The shift (P,) float64 of TabularVAE ``tv``'s output biases under which sampled class
    shares match the training rows X (N, D) (conditions C (N, C) or None), or None when
    the table has no categorical column; ``seed``: an int, so that a fit is the same run
    every time."""
    model = tv.model_
    cl = model.columns
    cats = [j for j in range(cl.D) if cl.cols[j, 0] == BLK_CATEGORICAL]
    if not cats:
        return None
    X = np.asarray(X, dtype=np.float64)
    shares = {}
    for j in cats:
        v = X[:, j]
        v = v[~np.isnan(v)].astype(np.int64)
        if v.size:
            shares[j] = np.bincount(v, minlength=int(cl.cols[j, 2])) / v.size
    rng = np.random.default_rng(np.random.SeedSequence((int(seed), 0xCA11B)))
    total_shift = np.zeros(cl.P)
    for _ in range(ROUNDS):
        total = np.zeros(cl.P)
        for start in range(0, CODES, CHUNK):
            n = min(CHUNK, CODES - start)
            z = tv.draw_codes(n, rng).astype(model.dtype)
            cond = None if C is None else C[rng.integers(0, len(C), n)]
            total += np.asarray(model.kernels.to_numpy(model.decode(
                z, conditions=cond, shift=total_shift)), dtype=np.float64).sum(0)
        mean = total / CODES
        shift = np.zeros(cl.P)
        for j, share in shares.items():
            o, w = int(cl.cols[j, 1]), int(cl.cols[j, 2])
            seen = share > 0
            shift[o:o + w][seen] = np.log(share[seen] / np.maximum(mean[o:o + w][seen], 1e-30))
        total_shift += shift
    return total_shift


__all__ = ["calibrate", "ROUNDS", "CODES"]
