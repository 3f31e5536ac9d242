"""The column-block kernels of every backend against their NumPy reference
(backends/reference_blocks.py), and the reference against PyTorch: cpu (Numba), the cuda
backend on the emulated device (the real kernels/blocks.cu), and the GPU where there is one.

Inputs carry the edge values of the block likelihoods (tests/blocks_data.py): learned
scales at the floor, dispersions of 1e-3 and 1e4, counts of 0 and 10^6, a categorical class
with probability near 1, exposures of 1e-3 and 1e3, missing cells.  Cell math is float64 in
every backend but the cpu kernel's categorical softmax and its count cells' terms (but the
lgamma and digamma sums), which run in the arrays' precision so that they vectorise; float32
outputs differ from the reference by their rounding and by the order of the sums
(tolerances as in test_kernels.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvae.backends import reference as ref

import blocks_data as bd
from test_kernels import Kernels, any_kb, kb, tol  # noqa: F401  (kb, any_kb: fixtures)

DTYPES = ["float32", "float64"]
SIZES = [(1, 1), (6, 3), (300, 150)]  # (R, B): one row, samples of few rows, row chunks


def _inputs(name, R, B, dtype, seed=0):
    rng = np.random.default_rng(seed)
    cl = bd.columns(name)
    x = bd.rows(cl, B, rng).astype(dtype)
    return (cl, bd.outputs(cl, R, rng).astype(dtype), (rng.normal(size=cl.P)).astype(dtype),
            x, bd.aux(cl, rng).astype(dtype))


def _nan(*shape, dtype):
    return np.full(shape, np.nan, dtype)


def _close(got, want, dtype, reduction=False, terms=32):
    scale = float(np.abs(want).max()) if want.size else 1.0
    if reduction:
        t = tol(dtype, reduction=True, terms=terms)
        t["atol"] = max(t["atol"], t["rtol"] * 1e-3 * scale)
    else:
        t = tol(dtype, scale=max(scale, 1.0))
    np.testing.assert_allclose(got, want, **t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B", SIZES)
@pytest.mark.parametrize("name", bd.LAYOUTS)
def test_blocks_fwd_bwd(kb, name, R, B, dtype):
    cl, out, b, x, aux = _inputs(name, R, B, dtype)
    outs = [_nan(R, cl.P, dtype=dtype), _nan(R, dtype=dtype), _nan(cl.P, dtype=dtype),
            _nan(cl.n_aux, dtype=dtype)]
    (o_r, i_r, _), (o_c, i_c, _) = kb.run("blocks_fwd_bwd", outs, out, b, x, aux, cl.cols,
                                          cl.meta, 1.0 / R)
    _close(o_c[0], o_r[0], dtype)                                   # dout
    _close(o_c[1], o_r[1], dtype, reduction=True, terms=cl.D)       # loss per row
    _close(o_c[2], o_r[2], dtype, reduction=True, terms=R)          # db
    _close(o_c[3], o_r[3], dtype, reduction=True, terms=R * cl.D)   # daux
    np.testing.assert_array_equal(i_c[0], i_r[0])  # the bias, added in place: one IEEE add
    assert all(np.isfinite(o).all() for o in o_c)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B", SIZES)
@pytest.mark.parametrize("name", ["mixed", "categorical", "wide_nb"])
def test_blocks_fwd_is_the_loss_of_fwd_bwd(kb, name, R, B, dtype):
    cl, out, b, x, aux = _inputs(name, R, B, dtype, seed=1)
    (o_r, i_r, _), (o_c, i_c, _) = kb.run("blocks_fwd", [_nan(R, dtype=dtype)], out, b, x,
                                          aux, cl.cols, cl.meta)
    _close(o_c[0], o_r[0], dtype, reduction=True, terms=cl.D)
    np.testing.assert_array_equal(i_c[0], i_r[0])
    full = kb.call("blocks_fwd_bwd", [np.empty((R, cl.P), dtype), np.empty(R, dtype),
                                      np.empty(cl.P, dtype), np.empty(cl.n_aux, dtype)],
                   out.copy(), b, x, aux, cl.cols, cl.meta, 1.0)
    _close(o_c[0], full[1], dtype, reduction=True, terms=cl.D)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B", SIZES)
@pytest.mark.parametrize("name", ["mixed", "gaussian", "wide_nb"])
def test_blocks_bwd(kb, name, R, B, dtype):
    cl, out, b, x, aux = _inputs(name, R, B, dtype, seed=2)
    out = out + b  # (bwd reads outputs with the bias added)
    row_scale = np.random.default_rng(3).random(R).astype(dtype)
    outs = [_nan(R, cl.P, dtype=dtype), _nan(cl.P, dtype=dtype), _nan(cl.n_aux, dtype=dtype)]
    (o_r, _, _), (o_c, _, _) = kb.run("blocks_bwd", outs, out.astype(dtype), x, aux, cl.cols,
                                      cl.meta, row_scale, 0.25)
    _close(o_c[0], o_r[0], dtype)
    _close(o_c[1], o_r[1], dtype, reduction=True, terms=R)
    _close(o_c[2], o_r[2], dtype, reduction=True, terms=R * cl.D)


def test_bwd_with_unit_weights_is_the_gradient_of_fwd_bwd():
    cl, out, b, x, aux = _inputs("mixed", 12, 4, "float64", seed=4)
    R = 12
    d1, lr, db1, da1 = np.empty((R, cl.P)), np.empty(R), np.empty(cl.P), np.empty(cl.n_aux)
    o = out.copy()
    ref.blocks_fwd_bwd(d1, lr, db1, da1, o, b, x, aux, cl.cols, cl.meta, 0.5)
    d2, db2, da2 = np.empty((R, cl.P)), np.empty(cl.P), np.empty(cl.n_aux)
    ref.blocks_bwd(d2, db2, da2, o, x, aux, cl.cols, cl.meta, np.ones(R), 0.5)
    for a, c in ((d1, d2), (db1, db2), (da1, da2)):
        np.testing.assert_allclose(a, c, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("name", bd.LAYOUTS)
def test_reference_cells_against_torch(name):
    """The reference's loss and gradients (every block kind, edge values) against torch's
    own densities and autograd, in float64 (tests/torch_blocks.py writes the cells)."""
    import fastvae
    import torch_blocks
    rng = np.random.default_rng(5)
    cl = bd.columns(name)
    blocks, C, missing = bd.layout(name)
    R, B = 10, 5
    x = bd.rows(cl, B, rng)
    out, aux = bd.outputs(cl, R, rng), bd.aux(cl, rng)
    d, lr, db, da = np.empty((R, cl.P)), np.empty(R), np.empty(cl.P), np.empty(cl.n_aux)
    ref.blocks_fwd_bwd(d, lr, db, da, out.copy(), np.zeros(cl.P), x, aux, cl.cols, cl.meta, 1.0)
    # the torch cells read the learned aux from the parameters of a model of this layout
    model = fastvae.VAE(likelihood=blocks, n_conditions=C, missing="mask" if missing else None,
                        dtype="float64", backend="numpy", hidden=(), latent_dim=1)
    nf, nl = len(cl.aux_fixed), cl.n_logscale
    p = {}
    if nl:  # raw whose softly floored value is aux (the floor itself: raw -> -inf)
        ls = aux[nf:nf + nl]
        raw = np.where(ls > -6.0 + 1e-12, -6.0 + np.log(np.expm1(np.maximum(ls + 6.0, 1e-300))),
                       -745.0)
        p["dec.logscale"] = torch.tensor(raw, requires_grad=True)
    if cl.n_theta:
        p["dec.log_theta"] = torch.tensor(aux[nf + nl:], requires_grad=True)
    ot = torch.tensor(out, requires_grad=True)
    cells = torch_blocks.logp_cells(model, p, ot, torch.tensor(x), R)
    loss = -cells.sum()
    loss.backward()
    np.testing.assert_allclose(lr, -cells.detach().numpy().sum(1), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(d, ot.grad.numpy(), rtol=1e-10, atol=1e-12 * np.abs(d).max())
    if cl.n_theta:
        np.testing.assert_allclose(da[nf + nl:], p["dec.log_theta"].grad.numpy(), rtol=1e-8,
                                   atol=1e-10)
    if nl:  # d/d raw = d/d ls * sigmoid(raw - floor); compare where that factor is not 0
        sig = torch.sigmoid(p["dec.logscale"].detach() + 6.0).numpy()
        np.testing.assert_allclose(da[nf:nf + nl] * sig, p["dec.logscale"].grad.numpy(),
                                   rtol=1e-9, atol=1e-12)


def test_missing_cells_add_nothing():
    """A NaN cell: no loss term, exactly zero gradient in its outputs, and the rest of the
    row as if the cell's column were not there (the same cells' terms and gradients)."""
    cl, out, b, x, aux = _inputs("mixed", 8, 8, "float64", seed=6)
    full = x.copy()
    full[:, :cl.D] = np.nan_to_num(bd.rows(cl, 8, np.random.default_rng(6), edges=False)[:, :cl.D])
    full[:, cl.D:] = x[:, cl.D:]
    miss = np.isnan(x[:, :cl.D])
    assert miss.any()
    t_miss, d_miss, c_miss, i_miss = ref.block_cells(out + b, x, aux, cl.cols, cl.meta)
    t_full, d_full, c_full, _ = ref.block_cells(out + b, np.where(np.isnan(x), full, x), aux,
                                                cl.cols, cl.meta)
    assert np.all(t_miss[miss] == 0) and np.all(c_miss[miss] == 0) and np.all(i_miss[miss] == -1)
    np.testing.assert_array_equal(t_miss[~miss], t_full[~miss])
    for r, j in zip(*np.nonzero(miss)):
        o, w = cl.cols[j, 1], cl.cols[j, 2]
        assert np.all(d_miss[r, o:o + w] == 0)
    obs_outputs = np.ones_like(d_miss, dtype=bool)
    for r, j in zip(*np.nonzero(miss)):
        obs_outputs[r, cl.cols[j, 1]:cl.cols[j, 1] + cl.cols[j, 2]] = False
    np.testing.assert_array_equal(d_miss[obs_outputs], d_full[obs_outputs])


# ----------------------------------------------------------------------- the input side
@pytest.mark.parametrize("dtype", DTYPES)
def test_encoder_input_count_runs_after_a_code(kb, dtype):
    """Runs of count columns whose dense inputs do not start at their data column (a
    categorical column before them is read as a code, not an input), with missing cells,
    fractional values past the counts' table and 10^6: the cpu kernel's run pass reads the
    data columns the map says."""
    from fastvae.core.blocks import Categorical, Gaussian, NegBinomial, Poisson
    from fastvae.core.columns import Columns
    cl = Columns([Categorical(3), NegBinomial(20), Gaussian(2), Poisson(17)], 0, True)
    assert cl.enc_src[0] != 0  # (the case this test is for)
    rng = np.random.default_rng(11)
    x = bd.rows(cl, 9, rng).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.nan
    x[0, 1:4] = [63.0, 64.0, 1e6]
    (o_r, _, _), (o_c, _, _) = kb.run("encoder_input", [_nan(9, cl.n_dense, dtype=dtype)], x,
                                      cl.enc_src, cl.enc_mode)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))
    assert np.isfinite(o_c[0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 7, 150])
@pytest.mark.parametrize("name", ["mixed", "wide_nb", "poisson"])
def test_encoder_input(kb, name, B, dtype):
    cl = bd.columns(name)
    x = bd.rows(cl, B, np.random.default_rng(7)).astype(dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("encoder_input", [_nan(B, cl.n_dense, dtype=dtype)], x,
                                      cl.enc_src, cl.enc_mode)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))
    assert np.isfinite(o_c[0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,N", [(1, 1), (7, 33), (150, 70)])
@pytest.mark.parametrize("name", ["mixed", "categorical"])
def test_embed_fwd_and_bwd(kb, name, B, N, dtype):
    """The gather adds the rows one-hot inputs would select, and its backward is the one-hot
    product's: onehot^T dh (missing codes select nothing)."""
    rng = np.random.default_rng(8)
    cl = bd.columns(name)
    x = bd.rows(cl, B, rng).astype(dtype)
    Wc = rng.normal(size=(cl.n_onehot, N)).astype(dtype)
    h = rng.normal(size=(B, N)).astype(dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("embed_fwd", [h], Wc, x, cl.cat_cols, cl.cat_rows)
    onehot = np.zeros((B, cl.n_onehot))
    for c, row in zip(cl.cat_cols, cl.cat_rows):
        ok = ~np.isnan(x[:, c].astype(float))
        onehot[np.flatnonzero(ok), row + x[ok, c].astype(int)] = 1
    want = h.astype(np.float64) + onehot @ Wc.astype(np.float64)
    _close(o_r[0], want.astype(dtype), dtype, reduction=True)
    _close(o_c[0], o_r[0], dtype, reduction=True)
    dh = rng.normal(size=(B, N)).astype(dtype)
    (g_r, _, _), (g_c, _, _) = kb.run("embed_bwd", [_nan(cl.n_onehot, N, dtype=dtype)], dh, x,
                                      cl.cat_cols, cl.cat_rows)
    _close(g_r[0], (onehot.T @ dh.astype(np.float64)).astype(dtype), dtype, reduction=True,
           terms=B)
    _close(g_c[0], g_r[0], dtype, reduction=True, terms=B)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B", [(1, 1), (6, 3), (300, 150)])
def test_decoder_input(kb, R, B, dtype):
    cl = bd.columns("wide_nb")
    rng = np.random.default_rng(9)
    x = bd.rows(cl, B, rng).astype(dtype)
    z = rng.normal(size=(R, 4)).astype(dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("decoder_input", [_nan(R, 4 + cl.C, dtype=dtype)], z, x,
                                      cl.cond_cols)
    np.testing.assert_array_equal(o_c[0], o_r[0])  # copies
    np.testing.assert_array_equal(o_r[0][:, :4], z)
    np.testing.assert_array_equal(o_r[0][:, 4:], x[np.arange(R) % B][:, cl.cond_cols])


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_binomial_over_counts_and_dispersions(kb, dtype):
    """Every path of the count cells against the reference: counts 0..70 (the small-count
    tables, the exact sums, and past them) and 10^6, under dispersions from 1e-33 to 1e6
    (where (theta + k)^k overflows a float64 product the series must take over)."""
    from fastvae.core.blocks import NegBinomial
    from fastvae.core.columns import Columns
    thetas = np.array([1e-33, 1e-3, 0.5, 7.5, 2.9e4, 3.1e4, 1e5, 1e6])
    counts = np.concatenate([np.arange(71.0), [1e6]])
    cl = Columns([NegBinomial(len(thetas))])
    x = np.repeat(counts, 1)[:, None] * np.ones((1, len(thetas)))
    rng = np.random.default_rng(3)
    out = (np.log(counts + 0.5)[:, None] + rng.normal(size=x.shape)).astype(dtype)
    aux = np.log(thetas).astype(dtype)
    R = len(counts)
    outs = [_nan(R, cl.P, dtype=dtype), _nan(R, dtype=dtype), _nan(cl.P, dtype=dtype),
            _nan(cl.n_aux, dtype=dtype)]
    (o_r, _, _), (o_c, _, _) = kb.run("blocks_fwd_bwd", outs, out, np.zeros(cl.P, dtype),
                                      x.astype(dtype), aux, cl.cols, cl.meta, 1.0 / R)
    assert all(np.isfinite(o).all() for o in o_c)
    _close(o_c[0], o_r[0], dtype)
    _close(o_c[1], o_r[1], dtype, reduction=True, terms=cl.D)
    _close(o_c[3], o_r[3], dtype, reduction=True, terms=R * cl.D)


@pytest.mark.parametrize("dtype", DTYPES)
def test_count_runs_longer_than_a_cell_chunk(kb, dtype):
    """Count runs of 600 columns (the cpu kernel sums a run's cell terms in chunks of 256
    cells: two whole chunks and a part) with missing cells and the edge values, against
    the reference."""
    from fastvae.core.blocks import ZINB, NegBinomial
    from fastvae.core.columns import Columns
    rng = np.random.default_rng(5)
    cl = Columns([NegBinomial(600, exposure=True), ZINB(600)], 0, True)
    R = 7
    x = bd.rows(cl, R, rng).astype(dtype)
    counts = x[:, :cl.block_columns[-1][1]]  # (a view: the exposure column stays as it is)
    counts[rng.random(counts.shape) < 0.05] = np.nan
    out = bd.outputs(cl, R, rng).astype(dtype)
    aux = bd.aux(cl, rng).astype(dtype)
    outs = [_nan(R, cl.P, dtype=dtype), _nan(R, dtype=dtype), _nan(cl.P, dtype=dtype),
            _nan(cl.n_aux, dtype=dtype)]
    (o_r, _, _), (o_c, _, _) = kb.run("blocks_fwd_bwd", outs, out, np.zeros(cl.P, dtype), x,
                                      aux, cl.cols, cl.meta, 1.0 / R)
    assert all(np.isfinite(o).all() for o in o_c)
    _close(o_c[0], o_r[0], dtype)
    _close(o_c[1], o_r[1], dtype, reduction=True, terms=cl.D)
    _close(o_c[2], o_r[2], dtype, reduction=True, terms=R)
    _close(o_c[3], o_r[3], dtype, reduction=True, terms=R * cl.D)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_denormal_gradient_reaches_the_products(any_kb, dtype):
    """A confident softmax's or logit's gradient (p = e^-100) is written as an exact 0, not
    a denormal (GRAD_FLUSH, fastvae.backends.codes): a product reading denormals ran 20x
    slower.  Every other entry is as the reference's."""
    from fastvae.backends.codes import GRAD_FLUSH
    from fastvae.core.blocks import Bernoulli, Categorical
    from fastvae.core.columns import Columns
    cl = Columns([Categorical([3]), Bernoulli(2)])
    R = 4
    out = np.array([[100.0, 0.0, 0.0, -100.0, 100.0]] * (R - 1) + [[0.0] * 5], dtype)
    x = np.array([[0.0, 0.0, 1.0]] * R, dtype)
    outs = [np.full((R, cl.P), np.nan, dtype), np.full(R, np.nan, dtype),
            np.full(cl.P, np.nan, dtype), np.zeros(0, dtype)]
    d = any_kb.call("blocks_fwd_bwd", outs, out, np.zeros(cl.P, dtype), x, np.zeros(0, dtype),
                    cl.cols, cl.meta, 1.0)[0]
    assert np.all(d[:3] == 0), d  # (rows 0-2: every cell predicted with certainty)
    np.testing.assert_allclose(d[3], [-2 / 3, 1 / 3, 1 / 3, 0.5, -0.5], rtol=1e-6)
    assert GRAD_FLUSH > np.finfo(np.float32).tiny  # (flushed values include every denormal)


def test_a_confident_categorical_cell_keeps_its_gradient():
    """The cpu kernel's softmax runs in float32 for float32 arrays; the true class's
    gradient w (p - 1) is taken as -w (sum of the other classes) / (sum of all), so it
    keeps float32's relative precision as p nears 1 (p - 1 itself lost every digit at a
    logit margin of 22 over 1,000 classes), and each row's gradients still sum to 0."""
    from fastvae.backends.cpu import blocks as cb
    from fastvae.core.blocks import Categorical
    from fastvae.core.columns import Columns
    cl = Columns([Categorical([1000])], 0, False)
    R = 64
    out = np.random.default_rng(1).normal(size=(R, cl.P)).astype(np.float32)
    out[:, 0] += 8 + 0.25 * np.arange(R)  # class 0 ever more probable: p up to 1 - 1e-9
    x = np.zeros((R, cl.width), np.float32)
    d = np.empty((R, cl.P), np.float32)
    e32 = np.empty(0, np.float32)
    cb.blocks_fwd_bwd(d, np.empty(R, np.float32), np.empty(cl.P, np.float32), e32, out.copy(),
                      np.zeros(cl.P, np.float32), x, e32, cl.cols, cl.meta, 1.0)
    want = np.empty((R, cl.P))
    ref.blocks_fwd_bwd(want, np.empty(R), np.empty(cl.P), np.empty(0), out.astype(np.float64),
                       np.zeros(cl.P), x.astype(np.float64), np.empty(0), cl.cols, cl.meta, 1.0)
    rel = np.abs(d[:, 0] - want[:, 0]) / np.abs(want[:, 0])
    assert rel.max() < 1e-5
    assert np.abs(d.astype(np.float64).sum(1)).max() < 1e-6
