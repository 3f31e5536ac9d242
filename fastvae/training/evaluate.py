"""Estimators over a dataset: the ELBO, the importance-weighted log-likelihood, and the
collapse diagnostics.  All run the model's loss-only forward (its own workspace, no
gradient), draw their noise from their own seeded generators, never the training noise, and
go through the data in batches, so memory stays bounded whatever the size of X.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backends
from ..io.dataset import Dataset, DataError
from ..core.step import StepContext
from ..core.validate import boolean, nonneg_int, positive_int

#: the most decoder rows (samples x data rows) one pass of the log-likelihood estimate
#: holds: its memory is this many rows of the decoder's activations, D + sum(decoder widths)
#: values each, plus as many rows of noise (Z values), whatever k is
CHUNK_ROWS = 8192
#: Burda et al.'s threshold on Cov_x(E_q[z_j]) for an active unit
ACTIVE_THRESHOLD = 0.01


class ElboResult(dict):
    """Dataset-level ELBO estimate: ``elbo`` (the bound, <= log p(x)), ``neg_elbo`` (nats
    per datapoint), ``recon`` and ``kl`` (its two terms), ``n`` datapoints, ``n_samples``."""

    __getattr__ = dict.__getitem__


class LogLikelihood(dict):
    """The importance-weighted estimate of log p(x): ``per_row`` (N,) in nats, ``mean``,
    ``nll`` (= -mean), ``stderr`` (of the mean, over rows), ``k`` samples, ``n`` rows."""

    __getattr__ = dict.__getitem__


class Diagnostics(dict):
    """Posterior collapse diagnostics over a dataset: ``active_units`` (dimensions whose
    ``activity`` Cov_x(E_q[z_j]) is above ``threshold``, Burda et al. 2016), ``activity``
    (Z,), ``kl_per_dim`` (Z,) the mean KL of each dimension in nats, ``mean_sigma`` (Z,)
    the mean posterior standard deviation, ``order`` the dimensions by decreasing KL."""

    __getattr__ = dict.__getitem__


def as_dataset(X, name="data"):
    """A :class:`Dataset` for X (an array is wrapped, a Dataset passes through)."""
    return X if isinstance(X, Dataset) else Dataset(X, name=name)


def _dataset_for(model, X):
    ds = as_dataset(X)
    if ds.dim != model.row_width:
        raise DataError(f"{ds.name}: rows have {ds.dim} values, the model expects "
                        f"{model.row_width}")
    return ds


def _rows_of(model, X, validate, ag, compare=True):
    """(ds, lo, hi, validate, fingerprint) of an estimate: X as a Dataset of the model's
    width, this process's rows [lo, hi) of it, scanned for NaN/inf and range on the host
    once when validate (a GPU pass reports its input check only with its loss), and what
    MPI ranks compare of it (:meth:`~fastvae.training.agreement.Solo.check_data`)."""
    ds = _dataset_for(model, X)
    validate = boolean(validate, "validate")
    lo, hi = ag.shard(0, len(ds))
    fingerprint = None
    if validate or compare:  # (compare=False: the ranks were compared before, by fit)
        fingerprint = ag.check_data(ds, model.data_rule, scan=validate)
    return ds, lo, hi, validate, fingerprint


def elbo(model, X, n_samples=1, batch_size=1000, seed=0, validate=True, comm=None, *,
         agreement=None):
    """Estimate the ELBO of every datapoint of X and average, ``batch_size`` rows at a time.

    X : (N, D) array or Dataset.  The estimate samples z ~ q(z|x) (``n_samples`` draws per
    datapoint, averaged: more draws lower the estimate's variance, they do not tighten the
    bound; :func:`log_likelihood` does).  Sample l of row i is drawn from a counter-based
    stream keyed by (model.seed, seed) with counter i, so the same parameters give the same
    number whatever ``batch_size`` or the number of MPI ranks sharing the rows, and the
    training noise is not touched.  validate=False skips the up-front NaN/range scan (for
    data already checked).  comm : an mpi4py communicator: every rank passes the same X and
    arguments (checked: ranks that differ, or a rank whose arguments are refused, raise on
    every rank) and estimates its share of the rows; every rank returns the whole result.
    agreement : fit's validation passes the training run's own (whose ranks were compared
    before training) instead of ``comm``.  Returns an :class:`ElboResult`.
    """
    ag = _agreement(comm, model) if agreement is None else agreement
    failure = data = None
    try:
        L = positive_int(n_samples, "n_samples")
        bs = positive_int(batch_size, "batch_size")
        key = noise_key(model, seed, stream=0x5EED)
        ds, lo, hi, validate, data = _rows_of(model, X, validate, ag,
                                              compare=agreement is None)
    except Exception as e:  # noqa: BLE001  (with ranks: told to every rank)
        failure = ag.fail(e)
    bk, Z = model.kernels, model.latent_dim

    def rows():  # the sums [loss, recon, kl] over rows [lo, hi)
        buf = np.empty((max(1, min(bs, hi - lo)), ds.dim), dtype=model.dtype)
        noise = bk.xp.empty(L * buf.shape[0] * Z, dtype=model.dtype)
        acc = bk.xp.zeros(3, dtype=np.float64)  # sums stay on the model's device until the end
        for s in range(lo, hi, bs):
            idx = np.arange(s, min(hi, s + bs))
            n = idx.size
            xb = ds.batch(idx, out=buf[:n])
            eps = noise[: L * n * Z].reshape(L, n, Z)
            bk.normal_eps(eps, key, s, 0)  # counter: the row's index in X
            model.forward(xb, eps, n_samples=L, validate=False, grad=False,
                          objective="elbo", step=StepContext(acc=acc, weight=n))
        return bk.to_numpy(acc).astype(np.float64)
    if agreement is not None:  # fit's validation: the ranks were compared before training
        sums = np.sum(ag.gather(failure, rows, "elbo failed"), axis=0)
    else:
        sums = np.sum(ag.gather_same(failure, lambda: estimate_fingerprint(
            model, data, ("elbo", L, int(seed), validate)), rows, "elbo failed"), axis=0)
    n = len(ds)
    _, recon, kl = (float(v) / n for v in sums)
    return ElboResult(elbo=-(recon + kl), neg_elbo=recon + kl, recon=recon, kl=kl, n=n,
                      n_samples=L)


class Scores(dict):
    """Per-row scores of a dataset: ``scores`` (N,) in nats, higher for rows the model finds
    less likely; ``kind`` ("neg_elbo" or "iwae_nll"), ``k`` or ``n_samples``; with
    per_column also ``kl`` (N,) and ``columns`` (N, D): each column's share of the
    reconstruction term."""

    __getattr__ = dict.__getitem__


def score_samples(model, X, k=None, n_samples=1, per_column=False, batch_size=1000, seed=0,
                  validate=True, encoder_X=None):
    """Per-row anomaly scores of X, in nats: higher means less likely under the model.

    Default: each row's negative ELBO, its reconstruction term averaged over ``n_samples``
    draws of z plus its KL.  Every row is scored with the same ``n_samples`` noise vectors
    eps (drawn from ``seed``; z = mu + sigma * eps): a row's score depends on that row alone,
    not on the other rows, their order or the batch size, and rows are compared under the
    same noise (common random numbers: their differences are less noisy than their
    scores).  With ``k``: each row's importance-weighted negative log-likelihood with k
    samples, ``-log_likelihood(X, k, seed=seed).per_row``, a tighter bound (its noise is
    keyed by the row's index in X, as the log-likelihood estimate's is).

    per_column=True adds ``columns`` (N, D): each column's -log p(x_d | z) averaged over the
    ELBO's draws (what tells an anomaly detector which cells made a row unlikely; it splits
    the reconstruction term, so ``columns.sum(1) + kl`` is the negative ELBO score; the
    importance-weighted bound has no such split, so with ``k`` the columns still come from
    the ELBO's draws) and ``kl`` (N,).  Returns :class:`Scores`.
    """
    per_column = boolean(per_column, "per_column")
    if k is not None:  # (its proposal is the encoder of X itself: any proposal bounds p(x))
        ll = log_likelihood(model, X, k, seed=seed, validate=validate)
        out = Scores(scores=-ll.per_row, kind="iwae_nll", k=ll.k)
        if per_column:
            cols = score_samples(model, X, None, n_samples, True, batch_size, seed, False,
                                 encoder_X)
            out.update(columns=cols.columns, kl=cols.kl, n_samples=cols.n_samples)
        return out
    L = positive_int(n_samples, "n_samples")
    bs = positive_int(batch_size, "batch_size")
    key = noise_key(model, seed, stream=0x5C0E)
    ds, lo, hi, validate, _ = _rows_of(model, X, validate, _agreement(None, model))
    enc = None
    if encoder_X is not None:
        enc = _dataset_for(model, encoder_X)
        if len(enc) != len(ds):
            raise ValueError(f"encoder_x has {len(enc)} rows; X has {len(ds)}")
    bk, Z, N = model.kernels, model.latent_dim, len(ds)
    common = bk.xp.empty((L, 1, Z), dtype=model.dtype)  # the noise every row is scored with
    bk.normal_eps(common, key, 0, 0)
    scores, kl = np.empty(N), np.empty(N)
    cl = model.columns
    columns = np.empty((N, model.input_dim)) if per_column else None
    buf = np.empty((max(1, min(bs, N)), ds.dim), dtype=model.dtype)
    ebuf = None if enc is None else np.empty_like(buf)
    noise = bk.xp.empty(L * buf.shape[0] * Z, dtype=model.dtype)
    logscale = None if not per_column or model.likelihood == "bernoulli" or cl else \
        model.obs_logscale().astype(np.float64)
    aux = model.aux_values() if per_column and cl else None
    for s in range(0, N, bs):
        idx = np.arange(s, min(N, s + bs))
        n = idx.size
        xb = ds.batch(idx, out=buf[:n])
        eps = noise[: L * n * Z].reshape(L, n, Z)
        eps[...] = common
        eb = None if enc is None else enc.batch(idx, out=ebuf[:n])
        cache = model.forward(xb, eps, n_samples=L, validate=False, grad=False,
                              objective="elbo", encoder_x=eb)
        rows = slice(s, s + n)
        kl[rows] = bk.to_numpy(cache.kl)
        scores[rows] = bk.to_numpy(cache.recon) + kl[rows]
        if per_column:  # the decoder's outputs (bias added): -log p per cell, on the host
            a = bk.to_numpy(cache.out).astype(np.float64)  # (L, n, D)
            x = xb.astype(np.float64)
            if cl is not None:  # the kernels' own per-cell terms (reference, on the host)
                cells = backends.get("numpy").block_cells(a.reshape(-1, cl.P), x, aux, cl.cols,
                                                          cl.meta)[0]
                cells = cells.reshape(L, n, cl.D)
            elif model.likelihood == "bernoulli":
                cells = np.logaddexp(0.0, a) - x * a
            else:
                cells = (0.5 * (a - x) ** 2 * np.exp(-2 * logscale) + logscale
                         + 0.5 * math.log(2 * math.pi))
            columns[rows] = cells.mean(axis=0)
    out = Scores(scores=scores, kind="neg_elbo", n_samples=L)
    if per_column:
        out.update(columns=columns, kl=kl)
    return out


def noise_key(model, seed, stream=0x11CE):
    """The Philox key of an estimate's noise for (model.seed, seed); ``stream`` tells the
    estimates apart (the log-likelihood's, the ELBO's)."""
    ss = np.random.SeedSequence((model.seed, stream, nonneg_int(seed, "seed")))
    return tuple(int(k) for k in ss.generate_state(2, np.uint32))


def _agreement(comm, model):
    from .agreement import agreement
    return agreement(comm, model)


def estimate_fingerprint(model, data, args):
    """What MPI ranks compare before an estimate (see
    :func:`fastvae.training.distributed.estimate_fingerprint`)."""
    from .distributed import estimate_fingerprint as fingerprint
    return fingerprint(model, data, args)


def log_likelihood(model, X, k=5000, batch_size=None, seed=0, validate=True, comm=None):
    """The importance-weighted estimate of log p(x) of every row of X (Burda et al. 2016).

    Per row, with k samples z_j ~ q(z|x): log w_j = log p(x|z_j) + log p(z_j) - log q(z_j|x)
    and the estimate is logsumexp_j log w_j - log k, a lower bound on log p(x) that tightens
    as k grows (k = 1 is the ELBO with a sampled KL).  The samples are streamed in chunks
    (a running logsumexp in float64 with its maximum subtracted), so memory does not grow
    with k: a pass holds at most max(CHUNK_ROWS, batch_size) decoder rows (and their
    activations), and up to four pass shapes are alive at once (the full and the last
    chunk of samples, for the full and the last batch of rows), all let go of on return.  The noise of sample j of row i is element j of
    a counter-based stream keyed by (model.seed, seed) with counter i: the estimate does not
    depend on ``batch_size`` or on the chunking, and never touches the training noise.

    X : (N, D) array or Dataset; k : samples per row; batch_size : rows per pass (default:
    as many as fit CHUNK_ROWS with at least one sample each, at most 100); comm : an mpi4py
    communicator: every rank passes the same X, estimates its share of the rows, and
    returns the whole result (the same numbers as one process; ranks whose data or
    arguments differ, or a rank whose arguments are refused, raise on every rank).
    Returns a :class:`LogLikelihood`.
    """
    ag = _agreement(comm, model)
    failure = data = None
    try:
        k = positive_int(k, "k")
        key = noise_key(model, seed)
        ds, lo, hi, validate, data = _rows_of(model, X, validate, ag)
        bs = (min(100, CHUNK_ROWS) if batch_size is None
              else positive_int(batch_size, "batch_size"))
        bs = min(bs, len(ds))
        c = max(1, min(k, CHUNK_ROWS // bs))  # samples per chunk
    except Exception as e:  # noqa: BLE001  (with ranks: told to every rank)
        failure = ag.fail(e)
    bk, Z = model.kernels, model.latent_dim

    def rows():  # the estimates of rows [lo, hi)
        xbuf = np.empty((bs, ds.dim), dtype=model.dtype)
        noise = bk.xp.empty(c * bs * Z, dtype=model.dtype)
        per_row = np.empty(hi - lo)
        shapes = set()  # the workspaces made here: let go of at the end
        try:
            for s in range(lo, hi, bs):
                idx = np.arange(s, min(hi, s + bs))
                n = idx.size
                xb = ds.batch(idx, out=xbuf[:n])
                top = np.full(n, -np.inf)   # running max of the log weights
                tot = np.zeros(n)          # running sum of exp(log w - top)
                for j0 in range(0, k, c):
                    cj = min(c, k - j0)
                    eps = noise[: cj * n * Z].reshape(cj, n, Z)  # sample l of row b: (l, b)
                    bk.normal_eps(eps, key, s, j0 * Z)  # counter: the row's index in X
                    shapes.add((n, cj))
                    cache = model.forward(xb, eps, n_samples=cj, grad=False,
                                          objective="iwae", validate=False)
                    lw = bk.to_numpy(cache.workspace.logw).astype(np.float64).reshape(cj, n)
                    new_top = np.maximum(top, lw.max(axis=0))
                    tot = tot * np.exp(top - new_top) + np.exp(lw - new_top).sum(axis=0)
                    top = new_top
                per_row[s - lo:s - lo + n] = top + np.log(tot) - math.log(k)
        finally:
            for n, cj in shapes:
                model.workspaces.discard(n, cj, False)
        return per_row
    per_row = np.concatenate(ag.gather_same(
        failure, lambda: estimate_fingerprint(model, data, ("log_likelihood", k, int(seed),
                                                            validate)),
        rows, "log_likelihood failed"))
    mean = float(per_row.mean())
    stderr = (float(per_row.std(ddof=1) / math.sqrt(len(per_row))) if len(per_row) > 1
              else float("nan"))
    return LogLikelihood(per_row=per_row, mean=mean, nll=-mean, stderr=stderr, k=k,
                         n=len(per_row))


def diagnostics(model, X, batch_size=1000, threshold=ACTIVE_THRESHOLD):
    """Collapse diagnostics of the posterior over the rows of X (see :class:`Diagnostics`):
    the variance over X of each posterior mean, the number of dimensions where it exceeds
    ``threshold`` (the active units), the mean KL per dimension and the mean posterior
    sigma per dimension, in float64."""
    ds = _dataset_for(model, X)
    bs = positive_int(batch_size, "batch_size")
    Z = model.latent_dim
    s1, s2, kl, sig = (np.zeros(Z) for _ in range(4))
    buf = np.empty((min(bs, len(ds)), ds.dim), dtype=model.dtype)
    for s in range(0, len(ds), bs):
        idx = np.arange(s, min(len(ds), s + bs))
        mu, lv = (model.kernels.to_numpy(a).astype(np.float64)
                  for a in model.encode_rows(ds.batch(idx, out=buf[: idx.size])))
        s1 += mu.sum(0)
        s2 += (mu * mu).sum(0)
        kl += (0.5 * (mu * mu + (np.expm1(lv) - lv))).sum(0)
        sig += np.exp(0.5 * lv).sum(0)
    n = len(ds)
    mean = s1 / n
    activity = np.maximum(s2 / n - mean * mean, 0.0) * (n / max(1, n - 1))  # sample variance
    kl /= n
    return Diagnostics(active_units=int((activity > threshold).sum()), activity=activity,
                       kl_per_dim=kl, mean_sigma=sig / n, order=np.argsort(-kl),
                       threshold=threshold, n=n)
