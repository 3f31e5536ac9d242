"""The zero-inflated negative binomial block at its edges: inflation near 0 and 1,
dispersions of 1e-3 and 1e4, counts of 0, 1 and 10^6, against finite differences, PyTorch's
autograd and the NB it becomes as the inflation goes to 0; its draws; and what it is for, a
count matrix with dropout (the whole-model checks are in test_blocks.py's layouts)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import fastvae
from fastvae import ZINB, NegBinomial
from fastvae.backends import reference_blocks as rb
from fastvae.core.columns import Columns

from test_kernels import Kernels, kb, tol  # noqa: F401  (kb: a fixture)

THETAS = [1e-3, 1.0, 1e4]       # one column each
GATES = [-40.0, -3.0, 0.0, 3.0, 40.0]  # pi from 4e-18 to 1 - 4e-18
LOGMEANS = [-8.0, 0.0, 8.0]


def edge_grid(counts):
    """(columns, out (R, 2 * 3), x (R, 3), aux (3,)): one row per (gate, log-mean, count),
    the same in each of three columns of dispersions THETAS."""
    cl = Columns([ZINB(len(THETAS))])
    rows = list(itertools.product(GATES, LOGMEANS, counts))
    out = np.zeros((len(rows), cl.P))
    x = np.zeros((len(rows), cl.width))
    for r, (g, a, c) in enumerate(rows):
        out[r, 0::2], out[r, 1::2], x[r] = a, g, c
    return cl, out, x, np.log(THETAS)


def test_cells_match_torch_autograd_at_the_edges():
    cl, out, x, aux = edge_grid([0.0, 1.0, 7.0, 1e6])
    terms, d, dcell, _ = rb.block_cells(out, x, aux, cl.cols, cl.meta)
    o = torch.tensor(out, requires_grad=True)
    r = torch.tensor(aux, requires_grad=True)
    xt = torch.tensor(x)
    th = torch.exp(r).expand(len(x), -1)
    nb = torch.distributions.NegativeBinomial(total_count=th, logits=o[:, 0::2] - r).log_prob(xt)
    ls = torch.nn.functional.logsigmoid
    lp = torch.where(xt == 0, torch.logaddexp(ls(o[:, 1::2]), ls(-o[:, 1::2]) + nb),
                     ls(-o[:, 1::2]) + nb)
    (-lp).sum().backward()
    want = -lp.detach().numpy()
    np.testing.assert_allclose(terms, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(d, o.grad.numpy(), rtol=1e-8, atol=1e-12)
    R = len(x)  # (the aux gradient as the kernels sum it, each column's own entry)
    d2, lr, db, daux = np.empty((R, cl.P)), np.empty(R), np.empty(cl.P), np.empty(3)
    rb.blocks_fwd_bwd(d2, lr, db, daux, out.copy(), np.zeros(cl.P), x, aux, cl.cols,
                      cl.meta, 1.0)
    np.testing.assert_allclose(daux, r.grad.numpy(), rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dcell.sum(0), daux, rtol=1e-12, atol=1e-12)
    assert np.all(terms >= -1e-12)  # -log of a probability


def test_cells_match_finite_differences_at_the_edges():
    """Per cell (each term depends on its own outputs and its column's aux entry alone), so
    the differences keep their digits; counts up to 10^3."""
    cl, out, x, aux = edge_grid([0.0, 1.0, 1e3])
    terms, d, dcell, _ = rb.block_cells(out, x, aux, cl.cols, cl.meta)
    h = 1e-6

    def cells(o, a):
        return rb.block_cells(o, x, a, cl.cols, cl.meta)[0]

    for k in range(cl.P):
        e = np.zeros_like(out)
        e[:, k] = h
        fd = (cells(out + e, aux) - cells(out - e, aux))[:, k // 2] / (2 * h)
        np.testing.assert_allclose(d[:, k], fd, rtol=1e-6, atol=1e-6 + 1e-10 * np.abs(terms).max())
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        fd = (cells(out, aux + e) - cells(out, aux - e))[:, j] / (2 * h)
        np.testing.assert_allclose(dcell[:, j], fd, rtol=1e-6,
                                   atol=1e-6 + 1e-10 * np.abs(terms[:, j]).max())


def test_no_inflation_is_the_negative_binomial():
    cl, out, x, aux = edge_grid([0.0, 1.0, 7.0, 1e6])
    out[:, 1::2] = -1e5  # pi = 0 in float64, and below every NB(0) of the grid (e^-2609)
    z = rb.block_cells(out, x, aux, cl.cols, cl.meta)
    nb_cl = Columns([NegBinomial(3)])
    n = rb.block_cells(np.ascontiguousarray(out[:, 0::2]), x, aux, nb_cl.cols, nb_cl.meta)
    # (terms: the NB's carry the reference lgamma(1)'s 2e-14, the ZINB's zero adds none)
    np.testing.assert_allclose(z[0], n[0], rtol=1e-14, atol=1e-13)
    np.testing.assert_allclose(z[1][:, 0::2], n[1], rtol=1e-14, atol=0)  # d/da
    np.testing.assert_allclose(z[2], n[2], rtol=1e-14, atol=0)           # d/d aux
    assert np.all(z[1][:, 1::2] == 0)                                   # d/d logit: pi


def test_full_inflation_makes_zeros_certain():
    cl, out, x, aux = edge_grid([0.0])
    out[:, 1::2] = 745.0
    terms, d, dcell, _ = rb.block_cells(out, x, aux, cl.cols, cl.meta)
    assert np.all(np.abs(terms) < 1e-300) and np.all(np.abs(d) < 1e-300)
    assert np.all(np.abs(dcell) < 1e-300)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_backend_agrees_at_the_edges(kb, dtype):
    cl, out, x, aux = edge_grid([0.0, 1.0, 7.0, 1e6])
    out, x, aux = out.astype(dtype), x.astype(dtype), aux.astype(dtype)
    R = out.shape[0]
    b = np.linspace(-0.5, 0.5, cl.P).astype(dtype)
    outs = [np.full((R, cl.P), np.nan, dtype), np.full(R, np.nan, dtype),
            np.full(cl.P, np.nan, dtype), np.full(3, np.nan, dtype)]
    (o_r, _, _), (o_c, _, _) = kb.run("blocks_fwd_bwd", outs, out, b, x, aux, cl.cols, cl.meta,
                                      1.0 / R)
    for got, want, red in zip(o_c, o_r, (False, True, True, True)):
        scale = max(float(np.abs(want).max()), 1.0)
        t = tol(dtype, reduction=True, terms=R * 3) if red else tol(dtype, scale=scale)
        t["atol"] = max(t["atol"], t["rtol"] * 1e-3 * scale) if red else t["atol"]
        np.testing.assert_allclose(got, want, **t)
        assert np.isfinite(got).all()


def test_draws_follow_the_mixture():
    """The share of zeros is pi + (1 - pi) NB(0) and the mean (1 - pi) mu, and the mean
    draw is that mean."""
    block = ZINB(2)
    cl = Columns([block])
    N = 200_000
    a = np.tile([np.log(4.0), 0.0, np.log(20.0), np.log(0.25 / 0.75)], (N, 1))  # pi .5, .25
    aux = np.log([2.0, 0.5])
    m = block.means(a, None, np)
    rng = np.random.default_rng(0)
    s = block.draw(m, cl.cols, aux, np.zeros(N, np.int64), rng, mean=False)
    for k, (mu, pi, th) in enumerate([(4.0, 0.5, 2.0), (20.0, 0.25, 0.5)]):
        p0 = pi + (1 - pi) * (th / (th + mu)) ** th
        assert abs((s[:, k] == 0).mean() - p0) < 4 * np.sqrt(p0 * (1 - p0) / N)
        var = (1 - pi) * (mu + mu * mu / th) + pi * (1 - pi) * mu * mu
        assert abs(s[:, k].mean() - (1 - pi) * mu) < 4 * np.sqrt(var / N)
    np.testing.assert_allclose(block.draw(m, cl.cols, aux, None, rng, mean=True)[0],
                               [2.0, 15.0])
    assert np.all(s == np.round(s)) and np.all(s >= 0)


@pytest.mark.parametrize("kw,message", [
    (dict(n=0), r"ZINB's n must be a positive integer"),
    (dict(n=2.5), r"ZINB's n must be a positive integer"),
    (dict(n=2, dispersion="gene"), r"ZINB dispersion must be 'column' or 'condition'"),
    (dict(n=2, exposure="yes"), r"ZINB's exposure must be True or False"),
])
def test_bad_arguments_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        ZINB(**kw)


def test_per_condition_dispersions_need_conditions():
    with pytest.raises(ValueError, match=r"ZINB\(n=2.*dispersion='condition'\) learns one "
                                         r"dispersion per column and condition"):
        fastvae.VAE(likelihood=[ZINB(2, dispersion="condition")])


def test_bad_counts_are_named_like_the_nb():
    with pytest.raises(ValueError, match=r"column 1 \(ZINB\(n=2.*has 2\.5 in row 0.*count"):
        fastvae.VAE(likelihood=[ZINB(2)], hidden=(4,), latent_dim=2).fit(
            np.array([[0.0, 2.5], [1.0, 0.0]]), epochs=1, progress=False)


def planted_dropout(n, D=30, seed=0):
    """NB counts of a 2-d latent structure (the same for every seed) with 40% of the cells
    dropped to 0."""
    W = np.random.default_rng(99).normal(size=(2, D)) * 0.7
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    mu = np.exp(1.5 + z @ W)
    x = rng.negative_binomial(3.0, 3.0 / (3.0 + mu)).astype(float)
    x[rng.random(x.shape) < 0.4] = 0
    return x


def test_zinb_explains_dropout_better_than_the_nb():
    """On counts with planted dropout the ZINB's held-out ELBO beats the NB's, and its mean
    inflation on the held-out rows is near the planted 40%."""
    X, V = planted_dropout(1200), planted_dropout(300, seed=1)
    elbo = {}
    for cls in (NegBinomial, ZINB):
        m = fastvae.VAE(likelihood=[cls(X.shape[1])], hidden=(32,), latent_dim=2, seed=0,
                        backend="cpu")
        m.fit(X, epochs=40, batch_size=64, lr=3e-3, progress=False)
        elbo[cls.name] = m.elbo(V)["elbo"]
        if cls is ZINB:
            pi = m.decode(m.encode(V)[0])[:, 1::2]
            assert 0.25 < float(np.mean(pi)) < 0.5
    assert elbo["zinb"] > elbo["negbinomial"] + 0.5, elbo
