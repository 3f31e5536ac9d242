"""Block models through the whole engine, on every backend: gradients against finite
differences and PyTorch autograd (every block kind, both dtypes, the edge values), missing
cells, conditions and counterfactual decoding, exact resume, pickling, the estimators,
sampling, and a clear error for each kind of bad input."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastvae
from fastvae import Bernoulli, Categorical, Gaussian, NegBinomial, Poisson

import blocks_data as bd
from cuda_helpers import host


def make(name, backend, dtype="float64", hidden=(6,), **kw):
    """A model of layout ``name``; "<layout>-dec": its conditions read by the decoder alone
    (encode_conditions=False); "<layout>-inj": read by every decoder layer
    (inject_conditions=True, two hidden layers unless ``hidden`` is given)."""
    if name.endswith("-dec"):
        name, kw = name[:-4], dict(kw, encode_conditions=False)
    if name.endswith("-inj"):
        name, kw = name[:-4], dict(kw, inject_conditions=True)
        hidden = (6, 5) if hidden == (6,) else hidden
    blocks, C, missing = bd.layout(name)
    kw = dict(dict(latent_dim=3, activation="tanh", seed=1), **kw)
    return fastvae.VAE(likelihood=blocks, hidden=hidden, n_conditions=C,
                       missing="mask" if missing else None, dtype=dtype, backend=backend, **kw)


def set_edges(model, rng):
    """Learned scales at the floor (raw far below it) and dispersions 1e-3 and 1e4."""
    p = model.parameters()
    if "dec.logscale" in p:
        v = host(p["dec.logscale"]).copy()
        v[0] = -40.0
        p["dec.logscale"][...] = model.kernels.asarray(v)
    if "dec.log_theta" in p:
        v = rng.normal(size=p["dec.log_theta"].shape) * 0.3
        v[0], v[-1] = np.log(1e-3), np.log(1e4)
        p["dec.log_theta"][...] = model.kernels.asarray(v.astype(model.dtype))


def grads_of(model, rows, eps):
    cache = model.forward(rows, eps)
    loss = float(cache.loss)
    g = model.backward(cache)
    return loss, {k: host(v).copy() for k, v in g.items()}


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", bd.LAYOUTS + ["mixed-inj"])
def test_gradients_match_torch(backend, name, dtype):
    """Every parameter's gradient, the loss's too, against autograd on the same parameters
    in float64 (the truth for both dtypes), with the edge values: learned scales at the
    floor, dispersions 1e-3 and 1e4, counts 0 and 10^6, a near-certain class, exposures
    1e-3 and 1e3, missing cells."""
    import torch_blocks
    rng = np.random.default_rng(11)
    model = make(name, backend, dtype, n_samples=2)
    set_edges(model, rng)
    p = model.parameters()
    if model.columns.n_onehot:  # a near-certain class: a large output bias
        b = host(p["dec.out.b"]).copy()
        b[model.columns.cols[model.columns.cat_cols[0], 1]] = 30.0
        p["dec.out.b"][...] = model.kernels.asarray(b.astype(model.dtype))
    B, L = 5, 2
    rows = bd.rows(model.columns, B, rng, moderate=dtype == "float32")
    eps = rng.normal(size=(L, B, 3))
    loss, g = grads_of(model, model.kernels.asarray(rows.astype(dtype)),
                       model.kernels.asarray(eps.astype(dtype)))
    m64 = make(name, "numpy", "float64", n_samples=2)
    for k, v in model.parameters().items():
        m64.parameters()[k][...] = host(v)
    want_loss, want = torch_blocks.loss_and_grads(m64, rows.astype(dtype).astype(np.float64),
                                                  eps.astype(dtype).astype(np.float64))
    rtol = 1e-9 if dtype == "float64" else 2e-4
    assert abs(loss - want_loss) <= rtol * max(1.0, abs(want_loss))
    for k, w in want.items():
        np.testing.assert_allclose(g[k], w, rtol=rtol, atol=rtol * max(1e-3, np.abs(w).max()),
                                   err_msg=k)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
@pytest.mark.parametrize("name", ["mixed", "categorical", "negbinomial", "zinb", "gaussian",
                                  "mixed-dec", "mixed-inj"])
@pytest.mark.parametrize("hidden", [(6,), ()])
def test_gradients_match_finite_differences(backend, name, objective, hidden):
    """Central differences of the loss (float64, moderate counts so that differences of
    the loss keep their digits), for the ELBO and the IWAE bound, with and without hidden
    layers (the encoder's first product is then the head, gathered too)."""
    rng = np.random.default_rng(12)
    model = make(name, backend, hidden=hidden, n_samples=3 if objective == "iwae" else 2,
                 objective=objective)
    set_edges(model, rng)
    if "dec.log_theta" in model.parameters():  # moderate dispersions for the differences
        model.parameters()["dec.log_theta"][...] = model.kernels.asarray(
            rng.normal(size=model.parameters()["dec.log_theta"].shape) * 0.3)
    B = 4
    rows = model.kernels.asarray(bd.rows(model.columns, B, rng, moderate=True))
    eps = model.kernels.asarray(rng.normal(size=(model.n_samples, B, 3)))
    loss, g = grads_of(model, rows, eps)
    names = list(model.parameters())
    pick = []
    for k in names:  # a few entries of every tensor, and every extra entry
        v = model.parameters()[k]
        n = v.size
        idx = range(n) if k.startswith("dec.log") or n <= 6 else rng.choice(n, 6, replace=False)
        pick += [(k, int(i)) for i in idx]
    h = 1e-6
    for k, i in pick:
        v = model.parameters()[k].reshape(-1)
        old = float(host(v[i:i + 1])[0])
        v[i:i + 1] = old + h
        lp = float(model.forward(rows, eps, grad=False).loss)
        v[i:i + 1] = old - h
        lm = float(model.forward(rows, eps, grad=False).loss)
        v[i:i + 1] = old
        fd = (lp - lm) / (2 * h)
        got = g[k].reshape(-1)[i]
        # (the differences of a loss of size |loss| carry its rounding, 1e-16 |loss| / h)
        assert abs(fd - got) <= 1e-5 * max(1.0, abs(fd)) + 1e-9 * abs(loss), (k, i, fd, got)


@pytest.mark.parametrize("objective", ["iwae", "iwae-dreg"])
@pytest.mark.parametrize("name", ["mixed", "wide_nb", "zinb"])
def test_importance_weighted_gradients_match_torch(backend, name, objective):
    """The IWAE bound and DReG's encoder gradients of a block model against autograd."""
    import torch_blocks
    rng = np.random.default_rng(22)
    model = make(name, backend, n_samples=3, objective=objective)
    set_edges(model, rng)
    rows = bd.rows(model.columns, 4, rng, moderate=True)
    eps = rng.normal(size=(3, 4, 3))
    loss, g = grads_of(model, model.kernels.asarray(rows), model.kernels.asarray(eps))
    m64 = make(name, "numpy", n_samples=3, objective=objective)
    for k, v in model.parameters().items():
        m64.parameters()[k][...] = host(v)
    want_loss, want = torch_blocks.iwae_loss_and_grads(m64, rows, eps,
                                                       dreg=objective == "iwae-dreg")
    assert loss == pytest.approx(want_loss, rel=1e-9)
    for k, w in want.items():
        np.testing.assert_allclose(g[k], w, rtol=1e-8, atol=1e-9 * max(1.0, np.abs(w).max()),
                                   err_msg=k)


# ------------------------------------------------------------------------ missing cells
def test_a_missing_cell_gives_no_gradient_to_its_outputs(backend):
    model = make("mixed", backend)
    rng = np.random.default_rng(13)
    rows = bd.rows(model.columns, 6, rng)
    cache = model.forward(model.kernels.asarray(rows), model.kernels.asarray(
        rng.normal(size=(1, 6, 3))))
    dout = host(cache.workspace.dout)
    cl = model.columns
    miss = np.isnan(rows[:, :cl.D])
    assert miss.any()
    for r, j in zip(*np.nonzero(miss)):
        o, w = cl.cols[j, 1], cl.cols[j, 2]
        assert np.all(dout[r, o:o + w] == 0)


def test_masked_cells_are_the_model_without_those_terms():
    """The loss with NaN cells is the loss of the same rows, encoder input unchanged, minus
    those cells' terms: the likelihood of a row is the sum over its observed cells."""
    model = make("mixed", "numpy")
    rng = np.random.default_rng(14)
    rows = bd.rows(model.columns, 6, rng)
    eps = rng.normal(size=(1, 6, 3))
    c = model.forward(rows, eps, grad=False)
    recon = c.recon.copy()
    cl = model.columns
    aux = model.aux_values()
    out = host(c.out).reshape(-1, cl.P)
    from fastvae.backends.reference import block_cells
    terms = block_cells(out, rows, aux, cl.cols, cl.meta)[0]
    np.testing.assert_allclose(recon, terms.sum(1), rtol=1e-12)
    assert np.all(terms[np.isnan(rows[:, :cl.D])] == 0)


# -------------------------------------------------------------------------- conditions
def test_counterfactual_decoding(backend):
    """Decoding one z under two conditions gives the decoder's output under each: what
    torch computes for [z | c] (the same parameters), and different for c != c'."""
    import torch
    import torch_blocks  # noqa: F401
    model = make("wide_nb", backend)
    rng = np.random.default_rng(15)
    z = rng.normal(size=(4, 3))
    ca, cb = np.eye(3)[[0, 0, 0, 0]], np.eye(3)[[1, 1, 1, 1]]
    ma = host(model.decode(model.kernels.asarray(z), conditions=ca))
    mb = host(model.decode(model.kernels.asarray(z), conditions=cb))
    assert ma.shape == (4, model.columns.P) and not np.allclose(ma, mb)
    p = {k: torch.tensor(host(v)) for k, v in model.parameters().items()}
    for c, m in ((ca, ma), (cb, mb)):
        g = torch.cat([torch.tensor(z), torch.tensor(c)], 1)
        g = torch.tanh(g @ p["dec.0.W"] + p["dec.0.b"])
        out = (g @ p["dec.out.W"] + p["dec.out.b"]).numpy()
        want = out.copy()
        want[:, :40] = np.exp(out[:, :40])  # the counts' means at exposure 1
        np.testing.assert_allclose(m, want, rtol=1e-10)


@pytest.mark.parametrize("name,dtype,kw", [
    ("mixed", "float32", {}),
    # injected conditions with other non-default settings, in float64
    ("mixed-inj", "float64", dict(beta=0.5, n_samples=2, encode_conditions=False,
                                  activation="elu"))])
def test_exact_resume_with_conditions_and_exposure(tmp_path, name, dtype, kw):
    rng = np.random.default_rng(16)
    model = make(name, "cpu", dtype, **kw)
    cl = model.columns
    rows = bd.rows(cl, 90, rng, edges=False)
    X, cond, expo = cl.split(rows)
    one = make(name, "cpu", dtype, **kw)
    one.fit(X, epochs=2, batch_size=16, conditions=cond, exposure=expo, progress=False)
    two = make(name, "cpu", dtype, **kw)
    two.fit(X, epochs=1, batch_size=16, conditions=cond, exposure=expo, progress=False)
    path = two.save(tmp_path / "m.npz")
    back = fastvae.load(path)
    back.fit(X, epochs=1, conditions=cond, exposure=expo, progress=False)
    np.testing.assert_array_equal(back.flat_params, one.flat_params)
    assert back.columns.blocks == one.columns.blocks


@pytest.mark.parametrize("name", ["mixed", "mixed-inj"])
def test_pickle_and_load_keep_the_blocks(tmp_path, backend, name):
    model = make(name, backend)
    rng = np.random.default_rng(17)
    set_edges(model, rng)
    rows = model.kernels.asarray(bd.rows(model.columns, 5, rng))
    eps = model.kernels.asarray(rng.normal(size=(1, 5, 3)))
    want = float(model.forward(rows, eps, grad=False).loss)
    for other in (pickle.loads(pickle.dumps(model)), fastvae.load(model.save(tmp_path / "m.npz"),
                                                                  backend=backend)):
        assert repr(other) == repr(model)
        assert other.config() == model.config()
        assert float(other.forward(rows, eps, grad=False).loss) == want
        assert float(other.forward(rows, eps, grad=False).loss) == want  # (a second pass)


# -------------------------------------------------------------------------- estimators
def test_scores_split_by_column_and_estimators_run(backend):
    model = make("mixed", backend)
    rng = np.random.default_rng(18)
    rows = bd.rows(model.columns, 20, rng, edges=False)
    X, cond, expo = model.columns.split(rows)
    s = model.score_samples(X, per_column=True, conditions=cond, exposure=expo)
    assert s["columns"].shape == (20, model.columns.D)
    np.testing.assert_allclose(s["columns"].sum(1) + s["kl"], s["scores"], rtol=1e-9)
    assert np.all(s["columns"][np.isnan(X)] == 0)
    e = model.elbo(X, conditions=cond, exposure=expo)
    ll = model.log_likelihood(X, k=64, conditions=cond, exposure=expo)
    assert ll["mean"] >= e["elbo"] - 5 * ll["stderr"] - 1.0
    d = model.diagnostics(X, conditions=cond, exposure=expo)
    assert d["kl_per_dim"].shape == (3,)


def test_samples_are_valid_rows(backend):
    model = make("mixed", backend, "float32")
    cl = model.columns
    rng = np.random.default_rng(19)
    cond = np.eye(2)[rng.integers(0, 2, 50)]
    s = host(model.sample(50, seed=3, mean=False, conditions=cond,
                          exposure=np.full(50, 2.0)))
    assert s.shape == (50, cl.D) and np.isfinite(s).all()
    for b, (j0, j1) in zip(cl.blocks, cl.block_columns):
        v = s[:, j0:j1]
        if isinstance(b, Categorical):
            assert np.all((v >= 0) & (v < np.array(b.classes)) & (v == np.round(v)))
        elif isinstance(b, Poisson):
            assert np.all((v >= 0) & (v == np.round(v)))
        elif isinstance(b, Bernoulli):
            assert set(np.unique(v)) <= {0.0, 1.0}
    cl.check(cl.compose(s, cond, np.ones(50)))  # a valid data row, by the model's own check
    again = host(model.sample(50, seed=3, mean=False, conditions=cond, exposure=np.full(50, 2.0)))
    np.testing.assert_array_equal(s, again)


def test_fit_learns_a_table():
    """A table with structure: the held-out ELBO rises well above the untrained model's, and
    the learned dispersion moves from its start."""
    rng = np.random.default_rng(20)
    N = 600
    z = rng.normal(size=(N, 2))
    g = rng.integers(0, 2, N)
    X = np.column_stack([z[:, 0] + 0.1 * rng.normal(size=N), (z[:, 1] > 0) + (z[:, 0] > 0),
                         rng.poisson(np.exp(1 + z[:, 0] + g)),
                         rng.negative_binomial(5, 5 / (5 + np.exp(2 + z[:, 1])))])
    cond = np.eye(2)[g]
    model = fastvae.VAE(likelihood=[Gaussian(1, scale="learned"), Categorical(3), Poisson(1),
                                    NegBinomial(1)], hidden=(32,), latent_dim=3, n_conditions=2,
                        backend="cpu", seed=0)
    before = model.elbo(X[500:], conditions=cond[500:])["elbo"]
    model.fit(X[:500], epochs=20, batch_size=50, lr=3e-3, conditions=cond[:500], progress=False)
    after = model.elbo(X[500:], conditions=cond[500:])["elbo"]
    assert after > before + 5.0, (before, after)
    assert abs(model.aux_values()[-1]) > 0.05  # log theta is learned: it left its start, 0


# --------------------------------------------------------------------------- bad input
def _bad(model, X, match, **kw):
    with pytest.raises(ValueError, match=match):
        model.fit(X, epochs=1, batch_size=2, progress=False, **kw)


def test_bad_input_is_named():
    m = fastvae.VAE(likelihood=[Gaussian(1), Categorical([3]), Poisson(1, exposure=True),
                                NegBinomial(1)], hidden=(4,), latent_dim=2, n_conditions=2,
                    backend="numpy")
    good = np.array([[0.5, 2, 3, 4], [1.0, 0, 0, 7]], dtype=float)
    cond, expo = np.eye(2), np.ones(2)
    m.fit(good, epochs=1, batch_size=2, progress=False, conditions=cond, exposure=expo)  # fine
    for col, value, match in [(1, 3, r"column 1 .*Categorical.* has 3\.0 in row 0.*0\.\.K-1 \(K = 3"),
                              (1, 1.5, r"column 1 .* has 1\.5 in row 0"),
                              (2, -1, r"column 2 .*Poisson.* has -1\.0 in row 0.*count"),
                              (3, 2.5, r"column 3 .*NegBinomial.* has 2\.5 in row 0.*count"),
                              (0, np.nan, r"column 0 .*Gaussian.* nan.*missing='mask'")]:
        bad = good.copy()
        bad[0, col] = value
        _bad(m, bad, match, conditions=cond, exposure=expo)
    _bad(m, good, r"conditions must be \(rows, 2\).*shape \(2, 3\)", conditions=np.ones((2, 3)),
         exposure=expo)
    c = cond.copy()
    c[1, 0] = np.nan
    _bad(m, good, r"condition column 0 of row 1 is nan", conditions=c, exposure=expo)
    _bad(m, good, r"exposure of row 1 is 0\.0.*> 0", conditions=cond, exposure=np.array([1, 0.]))
    _bad(m, good, r"pass exposure=", conditions=cond)
    _bad(m, good, r"n_conditions=2: pass conditions=", exposure=expo)
    with pytest.raises(ValueError, match=r"blocks cover 4 columns, but input_dim=5"):
        fastvae.VAE(5, likelihood=[Gaussian(1), Categorical([3]), Poisson(2)])
    with pytest.raises(ValueError, match=r"must be \(rows, 4\)"):
        m.fit(good[:, :3], epochs=1, progress=False, conditions=cond, exposure=expo)
    with pytest.raises(ValueError, match="n_conditions >= 2"):
        fastvae.VAE(likelihood=[NegBinomial(2, dispersion="condition")])
    with pytest.raises(ValueError, match="Categorical classes must be integers >= 2"):
        Categorical([3, 1])
    with pytest.raises(ValueError, match="missing must be None"):
        fastvae.VAE(likelihood=[Bernoulli(2)], missing="drop")
    with pytest.raises(ValueError, match="gives each Gaussian block its scale"):
        fastvae.VAE(likelihood=[Gaussian(2)], obs_scale="learned")


def test_one_hot_conditions_are_required_for_per_condition_dispersions():
    m = make("wide_nb", "numpy")
    rows = bd.rows(m.columns, 4, np.random.default_rng(0))
    rows[1, m.columns.D:m.columns.D + 3] = [0.5, 0.5, 0]
    with pytest.raises(ValueError, match=r"conditions of row 1 .* not one-hot"):
        m.forward(rows)


def test_a_string_likelihood_with_conditions_runs_on_blocks():
    m = fastvae.VAE(6, hidden=(5,), latent_dim=2, likelihood="gaussian", obs_scale="per_pixel",
                    n_conditions=2, backend="cpu", seed=0)
    assert m.columns is not None and m.parameters()["dec.logscale"].shape == (6,)
    X = np.random.default_rng(0).normal(size=(40, 6))
    m.fit(X, epochs=2, batch_size=8, progress=False, conditions=np.eye(2)[np.arange(40) % 2])
    assert m.config()["likelihood"] == "gaussian" and m.config()["n_conditions"] == 2
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.flat_params, m.flat_params)


# ------------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["mixed", "wide_nb", "categorical", "poisson", "zinb",
                                  "mixed-dec", "mixed-inj"])
def test_onnx_export_of_block_models(tmp_path, name, dtype):
    """Each part runs in onnxruntime on the rows fastvae reads (codes, counts, NaN cells,
    conditions, exposures) and gives what encode and decode give, each block's parameters
    included."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = make(name, "numpy", dtype)
    rng = np.random.default_rng(21)
    set_edges(model, rng)
    cl = model.columns
    X, cond, expo = cl.split(bd.rows(cl, 7, rng).astype(dtype))
    X = np.ascontiguousarray(X)
    eps = rng.normal(size=(7, 3)).astype(dtype)
    mu, lv = model.encode(X, conditions=cond)
    rtol = 1e-12 if dtype == "float64" else 2e-5

    def close(got, want):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())

    for part in ("encoder", "decoder", "vae"):
        path = model.export_onnx(tmp_path / f"{part}.onnx", part=part)
        sess = ort.InferenceSession(str(path))
        have = {i.name for i in sess.get_inputs()}
        feeds = {"x": X, "z": mu, "eps": eps}
        if cl.C:
            feeds["conditions"] = np.ascontiguousarray(cond)
        if cl.E:
            feeds["exposure"] = np.ascontiguousarray(expo)
        assert {"conditions"} <= have or not cl.C
        res = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {k: v for k, v in feeds.items() if k in have})))
        if part == "encoder":
            close(res["mu"], mu)
            close(res["logvar"], lv)
            continue
        z = mu if part == "decoder" else res["z"]
        xh = model.decode(z, conditions=cond, exposure=expo)
        close(res["x_hat"], xh)
        o = 0
        for i, b in enumerate(cl.blocks):  # each block's outputs are its slice of x_hat
            w = sum(b.widths())
            key = {"gaussian": "mean", "bernoulli": "prob", "categorical": "probs",
                   "poisson": "rate", "negbinomial": "mean", "zinb": "params"}[b.name]
            close(res[f"block{i}_{key}"], xh[:, o:o + w])
            if b.name == "zinb":  # [mean, dropout] per column
                close(res[f"block{i}_mean"], xh[:, o:o + w:2])
                close(res[f"block{i}_dropout"], xh[:, o + 1:o + w:2])
            if b.name in ("negbinomial", "zinb"):
                assert res[f"block{i}_theta"].shape == (7, b.n)
                assert np.all(res[f"block{i}_theta"] > 0)
            o += w


def test_conditions_read_by_the_decoder_alone(backend, tmp_path):
    """encode_conditions=False: the codes do not depend on the conditions, the decoder's
    outputs do, and the setting survives save and load."""
    m = make("mixed-dec", backend)
    on = make("mixed", backend)
    X, kw = bd.fit_args("mixed", 8)
    other = kw["conditions"][:, ::-1].copy()
    for model, same in ((m, True), (on, False)):
        a = host(model.encode(X, conditions=kw["conditions"])[0])
        b = host(model.encode(X, conditions=other)[0])
        assert np.array_equal(a, b) == same
    z = m.kernels.asarray(np.zeros((8, 3)))
    assert not np.array_equal(host(m.decode(z, conditions=kw["conditions"])),
                              host(m.decode(z, conditions=other)))
    assert m.columns.n_dense == on.columns.n_dense - 2
    m.fit(X, epochs=1, batch_size=4, progress=False, **kw)
    back = fastvae.load(m.save(tmp_path / "m.npz"), backend=backend)
    assert back.encode_conditions is False
    np.testing.assert_array_equal(host(back.flat_params), host(m.flat_params))


def test_conditions_injected_into_every_decoder_layer(backend, tmp_path):
    """inject_conditions=True: every later decoder weight has the conditions' rows, decode
    is [z | c] -> act -> [h | c] -> act -> [h | c] -> out (checked against NumPy on
    counterfactual conditions, through a Gaussian block whose means are the outputs), and
    the setting survives save and load; without conditions, or given a non-bool, it is an
    error that says so."""
    g = fastvae.VAE(likelihood=[Gaussian(4)], hidden=(6, 5), latent_dim=3, n_conditions=2,
                    inject_conditions=True, activation="tanh", dtype="float64", seed=1,
                    backend=backend)
    rng = np.random.default_rng(3)
    for k, v in g.parameters().items():  # (nonzero biases, so that every term shows)
        v[...] = g.kernels.asarray(rng.normal(size=v.shape) * 0.5)
    p = {k: host(v) for k, v in g.parameters().items()}
    H0, H1 = g.dec_hidden
    assert p["dec.0.W"].shape[0] == 3 + 2
    assert p["dec.1.W"].shape[0] == H0 + 2 and p["dec.out.W"].shape[0] == H1 + 2
    z = rng.normal(size=(6, 3))
    c = np.eye(2)[rng.integers(0, 2, 6)]

    def numpy_decoder(c):
        h = np.tanh(np.hstack([z, c]) @ p["dec.0.W"] + p["dec.0.b"])
        h = np.tanh(np.hstack([h, c]) @ p["dec.1.W"] + p["dec.1.b"])
        return np.hstack([h, c]) @ p["dec.out.W"] + p["dec.out.b"]

    for cc in (c, 1.0 - c):  # the rows' conditions, then the other ones
        got = host(g.decode(g.kernels.asarray(z), conditions=cc))
        np.testing.assert_allclose(got, numpy_decoder(cc), rtol=1e-12, atol=1e-12)
    m = make("mixed-inj", backend)
    X, kw = bd.fit_args("mixed", 8)
    m.fit(X, epochs=1, batch_size=4, progress=False, **kw)
    back = fastvae.load(m.save(tmp_path / "m.npz"), backend=backend)
    assert back.inject_conditions is True and back.config()["inject_conditions"] is True
    np.testing.assert_array_equal(host(back.flat_params), host(m.flat_params))
    with pytest.raises(ValueError, match="n_conditions"):
        fastvae.VAE(likelihood=[NegBinomial(3)], inject_conditions=True, backend=backend)
    with pytest.raises((TypeError, ValueError), match="inject_conditions"):
        fastvae.VAE(likelihood=[NegBinomial(3)], n_conditions=2, inject_conditions="yes",
                    backend=backend)


@pytest.mark.parametrize("classes", [[3], [2, 4], [5, 1 + 1, 3]])
def test_categorical_means_leave_the_logits_alone(classes):
    """The readout's softmax works on copies: the logits it is given (one column spanning
    them all included, whose slice is the whole array) come back unchanged, and each
    column's probabilities are its logits' softmax."""
    a = np.random.default_rng(0).normal(size=(6, sum(classes))) * 4
    before = a.copy()
    m = Categorical(classes).means(a, None, np)
    assert np.array_equal(a, before)
    o = 0
    for w in classes:
        e = np.exp(before[:, o:o + w] - before[:, o:o + w].max(axis=1, keepdims=True))
        np.testing.assert_allclose(m[:, o:o + w], e / e.sum(axis=1, keepdims=True), rtol=1e-12)
        o += w
