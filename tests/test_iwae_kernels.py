"""The importance-weighting kernels: Numba and CUDA (emulated) against the NumPy reference,
and the reference against plain formulas."""
import numpy as np
import pytest

from fastvae.backends import cpu, reference as ref
from fastvae.backends import cuda as C
from fastvae.core.codes import LIK_BERNOULLI, LIK_GAUSSIAN

from cuda_helpers import dev, emu_library, host  # noqa: F401  (fixtures)

DTYPES = ["float32", "float64"]
LV = (-30.0, 20.0)


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)


def _iw_inputs(rng, B, K, Z, dtype):
    loss_rows = rng.uniform(20, 60, K * B).astype(dtype)
    z = rng.standard_normal((K * B, Z)).astype(dtype)
    eps = rng.standard_normal((K * B, Z)).astype(dtype)
    logvar = (rng.standard_normal((B, Z)) * 0.5).astype(dtype)
    return loss_rows, z, eps, logvar


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,K,Z", [(1, 1, 1), (5, 3, 4), (70, 5, 20)])
def test_iwae_fwd(dtype, B, K, Z):
    rng = np.random.default_rng(0)
    loss_rows, z, eps, logvar = _iw_inputs(rng, B, K, Z, dtype)
    loss_rows[0] = 1e4  # a log weight of about -1e4 must not break the logsumexp
    outs = {}
    for name, mod in (("ref", ref), ("cpu", cpu)):
        o = [np.full(K * B, np.nan, dtype), np.full(K * B, np.nan, dtype), np.full(B, np.nan, dtype)]
        mod.iwae_fwd(*o, loss_rows, z, eps, logvar)
        outs[name] = o
    for a, b in zip(outs["cpu"], outs["ref"]):
        np.testing.assert_allclose(a, b, **tol(dtype))
    logw, wnorm, loss_b = (a.astype(np.float64) for a in outs["ref"])
    # the formulas, written out: log w = log N(x|..) + log N(z; 0, I) - log N(z; mu, sigma)
    d64 = [a.astype(np.float64) for a in (loss_rows, z, eps, logvar)]
    lr, zz, ee, lv = d64
    want = -lr - 0.5 * (zz ** 2).sum(1) + 0.5 * (ee ** 2).sum(1) + np.tile(0.5 * lv.sum(1), K)
    np.testing.assert_allclose(logw, want, rtol=1e-6 if dtype == "float32" else 1e-13)
    lw = want.reshape(K, B)
    np.testing.assert_allclose(wnorm.reshape(K, B).sum(0), 1.0, rtol=1e-5 if dtype == "float32" else 1e-13)
    lse = np.logaddexp.reduce(lw, axis=0)
    np.testing.assert_allclose(loss_b, -(lse - np.log(K)), rtol=1e-6 if dtype == "float32" else 1e-13)
    assert np.all(np.isfinite(loss_b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "learned", "per_pixel"])
def test_likelihood_bwd_is_the_fused_gradient_weighted_per_row(dtype, kind):
    """Uniform weights 1/R reproduce the fused kernel's gradient; other weights scale each
    row's gradient and the column sums follow."""
    rng = np.random.default_rng(1)
    R, B, D = 12, 4, 33
    out = (rng.standard_normal((R, D)) * 3).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    code = LIK_BERNOULLI if kind == "bernoulli" else LIK_GAUSSIAN
    learn = kind in ("learned", "per_pixel")
    ls = (rng.standard_normal(D if kind == "per_pixel" else 1) * 0.3).astype(dtype)
    e = lambda *s: np.empty(s, dtype)  # noqa: E731
    fused = [e(R, D), e(R), e(D), e(ls.size)]
    biased = out.copy()
    ref.likelihood_fwd_bwd(*fused, biased, b, x, ls, code, learn, 1.0 / R)
    w = rng.uniform(0, 1, R).astype(dtype)
    for mod in (ref, cpu):
        g = [e(R, D), e(D), e(ls.size)]
        mod.likelihood_bwd(*g, biased, x, ls, code, learn, np.ones(R, dtype), 1.0 / R)
        np.testing.assert_allclose(g[0], fused[0], **tol(dtype))
        np.testing.assert_allclose(g[1], fused[2], **tol(dtype))
        if learn:
            np.testing.assert_allclose(g[2], fused[3], rtol=tol(dtype)["rtol"] * 10,
                                       atol=tol(dtype)["atol"] * 10)
        gw = [e(R, D), e(D), e(ls.size)]
        mod.likelihood_bwd(*gw, biased, x, ls, code, learn, w, 0.5)
        np.testing.assert_allclose(gw[0], fused[0] * (0.5 * R * w)[:, None], **tol(dtype))
        np.testing.assert_allclose(gw[1], gw[0].sum(0), rtol=1e-4 if dtype == "float32" else 1e-12,
                                   atol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dreg", [False, True])
@pytest.mark.parametrize("B,K,Z", [(1, 1, 1), (7, 3, 5), (64, 5, 20)])
def test_reparam_iw_bwd(dtype, dreg, B, K, Z):
    rng = np.random.default_rng(2)
    dz = (rng.standard_normal((K * B, Z)) * 0.1).astype(dtype)
    eps = rng.standard_normal((K * B, Z)).astype(dtype)
    head = rng.standard_normal((B, 2 * Z)).astype(dtype)
    head[0, Z] = 25.0  # past the clamp: no logvar gradient there
    sigma = np.exp(0.5 * np.clip(head[:, Z:], *LV)).astype(dtype)
    z = (np.tile(head[:, :Z], (K, 1)) + np.tile(sigma, (K, 1)) * eps).astype(dtype)
    wn = rng.uniform(0, 1, (K, B))
    wnorm = (wn / wn.sum(0)).reshape(-1).astype(dtype)
    res = {}
    for name, mod in (("ref", ref), ("cpu", cpu)):
        o = [np.full((B, 2 * Z), np.nan, dtype), np.full(2 * Z, np.nan, dtype)]
        mod.reparam_iw_bwd(*o, dz, eps, z, sigma, head, wnorm, 1.0 / B, dreg, *LV)
        res[name] = o
    for a, b in zip(res["cpu"], res["ref"]):
        np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == "float32" else 1e-11,
                                   atol=1e-5 if dtype == "float32" else 1e-12)
    assert res["ref"][0][0, Z] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_eps_is_addressed_by_row_and_element(dtype):
    """A block of rows and samples drawn on its own equals the same block of a larger draw:
    what makes batching, chunking and sharding invisible in the noise."""
    key, Z = (7, 9), 3
    big = np.empty((10, 8, Z), dtype)
    ref.normal_eps(big, key, 0, 0)
    for mod in (ref, cpu):
        small = np.empty((4, 3, Z), dtype)
        mod.normal_eps(small, key, 2, 3 * Z)  # rows 2..4, samples 3..6
        np.testing.assert_array_equal(small, big[3:7, 2:5])
        whole = np.empty((10, 8, Z), dtype)
        mod.normal_eps(whole, key, 0, 0)
        np.testing.assert_array_equal(whole, big)


# ------------------------------------------------------------------- cuda, emulated
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cuda_iwae_kernels_match_the_reference(dev, dtype):
    rng = np.random.default_rng(3)
    B, K, Z, D = 41, 3, 37, 45  # several latent tiles and row chunks on the emulator
    put = dev.xp.asarray
    loss_rows, z, eps, logvar = _iw_inputs(rng, B, K, Z, dtype)
    o = [np.empty(K * B, dtype), np.empty(K * B, dtype), np.empty(B, dtype)]
    ref.iwae_fwd(*o, loss_rows, z, eps, logvar)
    g = [dev.xp.empty(a.shape, dtype=dtype) for a in o]
    C.iwae_fwd(*g, put(loss_rows), put(z), put(eps), put(logvar))
    for a, b in zip(g, o):
        np.testing.assert_allclose(host(a), b, **tol(np.dtype(dtype).name))
    wnorm = o[1]
    head = rng.standard_normal((B, 2 * Z)).astype(dtype)
    head[0, Z] = -40.0
    sigma = np.exp(0.5 * np.clip(head[:, Z:], *LV)).astype(dtype)
    dz = (rng.standard_normal((K * B, Z)) * 0.1).astype(dtype)
    for dreg in (False, True):
        r = [np.empty((B, 2 * Z), dtype), np.empty(2 * Z, dtype)]
        ref.reparam_iw_bwd(*r, dz, eps, z, sigma, head, wnorm, 1.0 / B, dreg, *LV)
        c = [dev.xp.empty((B, 2 * Z), dtype=dtype), dev.xp.empty(2 * Z, dtype=dtype)]
        C.reparam_iw_bwd(*c, put(dz), put(eps), put(z), put(sigma), put(head), put(wnorm),
                         1.0 / B, dreg, *LV)
        for a, b in zip(c, r):
            np.testing.assert_allclose(host(a), b, rtol=1e-4 if dtype == np.float32 else 1e-11,
                                       atol=1e-5 if dtype == np.float32 else 1e-12)
    out = (rng.standard_normal((K * B, D)) * 3).astype(dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    for kind, ls in ((LIK_BERNOULLI, np.zeros(1, dtype)), (LIK_GAUSSIAN, np.full(D, -0.2, dtype)),
                     (LIK_GAUSSIAN, np.full(1, 0.3, dtype))):
        learn = kind == LIK_GAUSSIAN
        r = [np.empty((K * B, D), dtype), np.empty(D, dtype), np.empty(ls.size, dtype)]
        ref.likelihood_bwd(*r, out, x, ls, kind, learn, wnorm, 1.0 / B)
        c = [dev.xp.empty(a.shape, dtype=dtype) for a in r]
        C.likelihood_bwd(*c, put(out), put(x), put(ls), kind, learn, put(wnorm), 1.0 / B)
        for a, b in zip(c[:3 if learn else 2], r):  # dlogscale is written only when learned
            np.testing.assert_allclose(host(a), b, rtol=1e-4 if dtype == np.float32 else 1e-11,
                                       atol=1e-5 if dtype == np.float32 else 1e-12)
    want = np.empty((3, 4, 7), dtype)
    ref.normal_eps(want, (5, 6), 2 ** 33 + 1, 7 + (3 << 34))
    got = dev.xp.empty((3, 4, 7), dtype=dtype)
    C.normal_eps(got, (5, 6), 2 ** 33 + 1, 7 + (3 << 34))
    np.testing.assert_allclose(host(got), want, rtol=1e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-12)
