"""The importance-weighted objectives (IWAE, DReG) and the log-likelihood estimate: finite
differences, PyTorch autograd, the estimator's bounds and invariances, and the learner's
claims of the README's second worked example."""
import math

import numpy as np
import pytest

import fastvae
from fastvae.backends import reference as ref
from fastvae.training.evaluate import CHUNK_ROWS, noise_key

from conftest import BACKEND_PARAMS, host, make_data, make_eps, make_model
from test_gradcheck import ACTIVATIONS, LIKELIHOODS, _cases, _fd_check



def _model(backend="numpy", objective="iwae", K=3, **kw):
    return make_model(backend=backend, objective=objective, n_samples=K, hidden=(5, 4), **kw)


def _data(model, gaussian):
    x = make_data(model)
    return x * 3 - 1 if gaussian else x


# --------------------------------------------------------------------- gradients
# every backend; on cuda a diagonal of the grid and a few elements a tensor (test_gradcheck)
@pytest.mark.parametrize("backend,activation,lik,K", _cases([ACTIVATIONS, LIKELIHOODS, [1, 2, 5]]),
                         indirect=["backend"])
def test_iwae_finite_differences(backend, activation, lik, K):
    model = _model(backend, "iwae", K, activation=activation, likelihood=lik[0],
                   obs_scale=lik[1])
    x = _data(model, lik[0] == "gaussian")
    _fd_check(model, x, make_eps(model, len(x)))


@pytest.mark.parametrize("lik", LIKELIHOODS, ids=lambda l: f"{l[0]}-{l[1]}")
@pytest.mark.parametrize("K", [1, 2, 5])
@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_dreg_decoder_gradients_are_the_iwae_gradients(backend, lik, K):
    """DReG changes the encoder's estimator only: its decoder gradients are the IWAE loss's
    (finite differences), and its loss is the IWAE bound."""
    model = _model(backend, "iwae-dreg", K, activation="tanh", likelihood=lik[0],
                   obs_scale=lik[1])
    x = _data(model, lik[0] == "gaussian")
    eps = make_eps(model, len(x))
    loss, g = model.loss_and_grad(x, eps)
    loss, g = float(loss), {k: host(v).copy() for k, v in g.items()}
    iw = _model(backend, "iwae", K, activation="tanh", likelihood=lik[0], obs_scale=lik[1])
    iw_loss, gi = iw.loss_and_grad(x, eps)
    assert loss == float(iw_loss)  # one backend, the same forward: the same bits
    for k in g:
        if not k.startswith("enc."):
            np.testing.assert_allclose(g[k], host(gi[k]), rtol=1e-12, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("objective", ["iwae", "iwae-dreg"])
@pytest.mark.parametrize("cfg", [dict(activation="relu"),
                                 dict(activation="elu", likelihood="gaussian", obs_scale="learned"),
                                 dict(activation="softplus", likelihood="gaussian",
                                      obs_scale="per_pixel", hidden=(6,))])
@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_against_torch_autograd(backend, objective, cfg):
    """IWAE: torch's autograd of the bound written with torch's own densities of z.
    DReG: the encoder against the usual torch surrogate with q's parameters detached."""
    torch_ref = pytest.importorskip("torch_ref")
    cfg = dict(cfg)
    model = make_model(backend=backend, objective=objective, n_samples=4,
                       hidden=cfg.pop("hidden", (5, 4)), **cfg)
    x = _data(model, model.likelihood == "gaussian")
    eps = make_eps(model, len(x))
    loss, g = model.loss_and_grad(x, eps)
    t_loss, tg = torch_ref.iwae_loss_and_grads(model, x, eps, dreg=objective == "iwae-dreg")
    assert float(loss) == pytest.approx(t_loss, rel=1e-12)
    for k in tg:
        np.testing.assert_allclose(host(g[k]), tg[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_logvar_outside_the_clamp_under_iwae():
    """Past the clamp every logvar term of the importance-weighted gradient is zero (log q
    takes the clamped logvar); finite differences agree."""
    for objective in ("iwae", "iwae-dreg"):
        model = _model("numpy", objective, 3, activation="tanh")
        Z = model.latent_dim
        model.parameters()["enc.head.b"][Z] = -45.0
        x, eps = make_data(model), make_eps(model, 4)
        _, g = model.loss_and_grad(x, eps)
        assert g["enc.head.b"][Z] == 0.0 and np.all(g["enc.head.W"][:, Z] == 0.0)
        if objective == "iwae":
            _fd_check(model, x, eps)


# ------------------------------------------------------------- learner's claims
def test_k1_iwae_is_the_elbo_with_a_sampled_kl():
    """With one sample the IWAE loss is -log w = recon + log q(z|x) - log p(z): the ELBO
    with the KL sampled, not analytic.  Its gradient is that of the sampled form too."""
    model = _model("numpy", "iwae", 1, activation="tanh")
    x = make_data(model)
    eps = make_eps(model, 4)
    c = model.forward(x, eps)
    mu, lv, z = c.mu, c.logvar, c.z[0]
    sampled_kl = (-0.5 * eps[0] ** 2 - 0.5 * lv + 0.5 * z ** 2).sum(1)  # log q - log p
    assert c.loss == pytest.approx(np.mean(c.recon + sampled_kl), rel=1e-12)
    assert c.loss != pytest.approx(c.neg_elbo, rel=1e-6)  # the analytic KL differs
    # ... and in expectation they agree: over many draws the two means meet
    many = np.random.default_rng(5).standard_normal((20000, 4, model.latent_dim))
    z = mu[None] + np.exp(0.5 * lv)[None] * many
    mc = (-0.5 * many ** 2 - 0.5 * lv[None] + 0.5 * z ** 2).sum(-1).mean(0)
    np.testing.assert_allclose(mc, c.kl, rtol=0.05, atol=0.02)


def test_more_elbo_samples_lower_the_variance_more_importance_samples_tighten_the_bound():
    """Averaging L ELBO draws estimates the same bound (its mean does not move); the
    importance-weighted bound rises with k towards log p(x)."""
    m = fastvae.VAE(12, hidden=(8,), latent_dim=2, dtype="float64", backend="numpy", seed=4)
    x = np.random.default_rng(0).random((40, 12))
    e = {L: np.array([-m.elbo(x, n_samples=L, seed=s).neg_elbo for s in range(30)])
         for L in (1, 16)}
    se = math.sqrt(e[1].var(ddof=1) / 30 + e[16].var(ddof=1) / 30)
    assert abs(e[16].mean() - e[1].mean()) < 4 * se      # the same bound ...
    assert e[16].std() < e[1].std() / 2                  # ... estimated with less noise
    ll = [m.log_likelihood(x, k=k, seed=1).mean for k in (1, 10, 100, 1000)]
    assert ll == sorted(ll) and ll[-1] - ll[0] > 0.05     # the IW bound rises with k
    assert ll[-1] > e[16].mean() + 0.05


# ------------------------------------------------------------ the log-likelihood
def _plain_numpy_log_w(model, x, eps):
    """log w (K, B) computed directly from the parameters with NumPy (float64)."""
    p = {k: host(v).astype(np.float64) for k, v in model.parameters().items()}
    act = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0)}[model.activation]
    h = x
    for i in range(len(model.enc_hidden)):
        h = act(h @ p[f"enc.{i}.W"] + p[f"enc.{i}.b"])
    head = h @ p["enc.head.W"] + p["enc.head.b"]
    Z = model.latent_dim
    mu, lv = head[:, :Z], np.clip(head[:, Z:], -30, 20)
    z = mu[None] + np.exp(0.5 * lv)[None] * eps
    g = z
    for j in range(len(model.dec_hidden)):
        g = act(g @ p[f"dec.{j}.W"] + p[f"dec.{j}.b"])
    a = g @ p["dec.out.W"] + p["dec.out.b"]
    log_px = (x * a - np.logaddexp(0, a)).sum(-1)
    log_pz = (-0.5 * z ** 2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_q = (-0.5 * eps ** 2 - 0.5 * lv[None] - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_px + log_pz - log_q


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_log_likelihood_equals_a_plain_numpy_computation(backend):
    m = fastvae.VAE(10, hidden=(6,), latent_dim=3, activation="tanh", dtype="float64",
                    backend=backend, seed=2)
    x = np.random.default_rng(0).random((9, 10))
    k = 37
    res = m.log_likelihood(x, k=k, seed=3)
    eps = np.empty((k, 9, 3))
    ref.normal_eps(eps, noise_key(m, 3), 0, 0)
    lw = _plain_numpy_log_w(m, x, eps)
    want = np.logaddexp.reduce(lw, axis=0) - math.log(k)
    np.testing.assert_allclose(host(res.per_row), want, rtol=1e-10, atol=1e-10)
    assert res.mean == pytest.approx(want.mean(), rel=1e-12) and res.nll == -res.mean
    assert res.stderr == pytest.approx(want.std(ddof=1) / 3, rel=1e-9)
    assert (res.k, res.n) == (k, 9)


def test_log_likelihood_does_not_depend_on_batching_or_chunking(monkeypatch):
    m = fastvae.VAE(10, hidden=(6,), latent_dim=3, dtype="float64", backend="cpu", seed=2)
    x = np.random.default_rng(1).random((23, 10))
    whole = m.log_likelihood(x, k=50, seed=0).per_row
    np.testing.assert_allclose(m.log_likelihood(x, k=50, batch_size=4).per_row, whole,
                               rtol=1e-12)
    import fastvae.training.evaluate as ev
    monkeypatch.setattr(ev, "CHUNK_ROWS", 7 * 3)  # chunks of 3 samples for 7 rows
    np.testing.assert_allclose(m.log_likelihood(x, k=50, batch_size=7).per_row, whole,
                               rtol=1e-12)
    assert not np.allclose(m.log_likelihood(x, k=50, seed=1).per_row, whole)
    counter = m.noise.counter
    m.log_likelihood(x, k=5)
    assert m.noise.counter == counter  # the training noise is not touched


def test_log_likelihood_is_a_bound_that_approaches_log_px_in_one_dimension():
    """With a 1-D latent space log p(x) = log of an integral over z, computed here by
    quadrature on a model trained a little (so that q is a fair proposal): averaged over
    seeds the estimate lies below it, and the gap closes as k grows."""
    rng = np.random.default_rng(2)
    t = rng.uniform(-2, 2, 400)
    X = (rng.random((400, 8)) < 1 / (1 + np.exp(-np.outer(t, np.linspace(-3, 3, 8))))) * 1.0
    m = fastvae.VAE(8, hidden=(16,), latent_dim=1, activation="tanh", dtype="float64",
                    backend="cpu", seed=7)
    m.fit(X, epochs=40, batch_size=40, lr=1e-2, progress=False)
    x = X[:5]
    grid = np.linspace(-12, 12, 24001)
    p = {k: np.asarray(v) for k, v in m.parameters().items()}
    a = np.tanh(grid[:, None] @ p["dec.0.W"] + p["dec.0.b"]) @ p["dec.out.W"] + p["dec.out.b"]
    log_px_z = x @ a.T - np.logaddexp(0, a).sum(1)[None]          # (N, G)
    log_prior = -0.5 * grid ** 2 - 0.5 * math.log(2 * math.pi)
    log_px = (np.logaddexp.reduce(log_px_z + log_prior[None], axis=1)
              + math.log(grid[1] - grid[0]))
    gaps = {}
    for k in (1, 10, 100):
        est = np.array([m.log_likelihood(x, k=k, seed=s).per_row for s in range(40)])
        mean, se = est.mean(0), est.std(0, ddof=1) / math.sqrt(len(est))
        assert np.all(mean <= log_px + 3 * se), k
        gaps[k] = np.mean(log_px - mean)
    est = m.log_likelihood(x, k=5000).per_row
    assert np.all(np.abs(log_px - est) < 0.05) and abs(np.mean(log_px - est)) < 0.02
    assert gaps[1] > gaps[100] + 0.01 and gaps[1] > 0.02


def test_log_likelihood_stays_finite_with_log_weights_of_minus_1e4():
    m = fastvae.VAE(10, hidden=(6,), latent_dim=3, likelihood="gaussian", obs_scale=0.01,
                    dtype="float64", backend="cpu", seed=2)
    x = np.random.default_rng(0).random((6, 10)) * 2
    cache = m.forward(x, objective="iwae", n_samples=4, grad=False)
    assert cache.workspace.logw.max() < -1e3  # the regime in question
    res = m.log_likelihood(x, k=20)
    assert np.all(np.isfinite(res.per_row)) and res.mean < -1e3


def test_k1_log_likelihood_is_the_sampled_elbo():
    m = fastvae.VAE(10, hidden=(6,), latent_dim=3, activation="tanh", dtype="float64",
                    backend="numpy", seed=2)
    x = np.random.default_rng(0).random((5, 10))
    eps = np.empty((1, 5, 3))
    ref.normal_eps(eps, noise_key(m, 0), 0, 0)
    c = m.forward(x, eps, objective="iwae")
    np.testing.assert_allclose(m.log_likelihood(x, k=1).per_row, -c.workspace.loss_b, rtol=1e-12)


@pytest.mark.parametrize("k", [3000, 30000])
def test_log_likelihood_memory_is_bounded_whatever_k(k):
    """A pass of the estimate holds at most CHUNK_ROWS decoder rows, at most four pass
    shapes are made (full and last chunk of samples x full and last batch of rows), the
    same for any k, and none is kept once it returns."""
    m = fastvae.VAE(30, hidden=(8,), latent_dim=2, backend="cpu")
    x = np.random.default_rng(0).random((250, 30)).astype(np.float32)
    made, factory = [], m.workspaces._factory

    def recording(B, L, train):
        made.append((B, L))
        return factory(B, L, train)
    m.workspaces._factory = recording
    m.log_likelihood(x, k=k)
    assert len(made) <= 4 and max(B * L for B, L in made) <= CHUNK_ROWS
    assert not any((B, L, False) in m.workspaces for B, L in made)


# ------------------------------------------------------------------ training and input
@pytest.mark.parametrize("objective", ["iwae", "iwae-dreg"])
def test_training_on_an_importance_weighted_objective(objective, tmp_path):
    """fit trains on it, saves it, resumes it exactly; its loss is the IWAE bound (above
    the single-sample ELBO's negative), and validation reports the ELBO."""
    X = (np.random.default_rng(0).random((256, 20)) > 0.5).astype(np.float32)

    def fresh():
        return fastvae.VAE(20, hidden=(16,), latent_dim=4, objective=objective, n_samples=5,
                           backend="cpu", seed=1)

    a = fresh()
    h = a.fit(X, epochs=3, batch_size=32, val=X[:64], progress=False)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert all(r["train_loss"] <= r["train_neg_elbo"] + 1e-6 for r in h)
    b = fresh()
    b.fit(X, epochs=1, batch_size=32, val=X[:64], progress=False, checkpoint=tmp_path / "c.npz")
    c = fastvae.load(tmp_path / "c.npz", backend="cpu")
    assert c.objective == objective
    c.fit(X, epochs=2, val=X[:64], progress=False)
    np.testing.assert_array_equal(c.flat_params, a.flat_params)


@pytest.mark.parametrize("kw,match", [
    (dict(objective="vimco"), r"objective must be one of 'elbo', 'iwae', 'iwae-dreg'; got 'vimco'"),
    (dict(objective="iwae", beta=0.5), r"beta=0\.5 with objective='iwae'"),
    (dict(objective="iwae-dreg", free_bits=0.1), r"free_bits=0\.1 with objective='iwae-dreg'"),
])
def test_bad_objective_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        fastvae.VAE(10, hidden=(4,), latent_dim=2, backend="numpy", **kw)


def test_bad_log_likelihood_arguments_and_warmup():
    m = fastvae.VAE(10, hidden=(4,), latent_dim=2, backend="numpy", objective="iwae")
    x = np.random.default_rng(0).random((5, 10))
    for k in (0, -3, 2.5, "10", True):
        with pytest.raises(ValueError, match=f"k must be a positive integer, got {k!r}"):
            m.log_likelihood(x, k=k)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        m.log_likelihood(x, k=3, batch_size=0)
    with pytest.raises(ValueError, match=r"kl_warmup=2\.0 with objective='iwae'"):
        m.fit(x, epochs=1, batch_size=5, kl_warmup=2, progress=False)
    assert m.train_state is None
