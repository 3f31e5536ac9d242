"""Every Numba kernel against its NumPy reference on random inputs, awkward sizes included.

Tolerances are relative, so that a formula that loses the relative precision of small
values (1 - exp(-y) for small y, say) fails: float64 rtol 1e-12; float32 rtol 1e-5 for
elementwise outputs (the float32 exp/expm1/log1p polynomials are within a few ulp) and
rtol 1e-4 (with an absolute floor) for sums over rows or columns, whose order differs.
"""
import numpy as np
import pytest

from fastvae.backends import cpu, reference as ref
from fastvae.core.codes import ACTIVATIONS, ACT_IDENTITY, LIK_BERNOULLI, LIK_GAUSSIAN

SHAPES = [(1, 1), (1, 7), (3, 1), (5, 33), (128, 400), (17, 784)]
DTYPES = ["float32", "float64"]
ACTS = [(n, c, a) for n, (c, a) in ACTIVATIONS.items()] + [("identity", ACT_IDENTITY, 0.0)]


def tol(dtype, reduction=False, scale=None):
    """Relative tolerances; ``scale`` adds an absolute floor relative to the magnitude of
    the inputs, for outputs that are differences (sigmoid(a) - x, p - lr * update), which
    cancel in every backend alike."""
    if reduction:
        return dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=1e-4, atol=1e-5)
    rtol, floor = (1e-12, 1e-14) if dtype == "float64" else (1e-5, 1e-6)
    return dict(rtol=rtol, atol=0 if scale is None else floor * scale)


def rnd(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def both(fn_name, outputs, *inputs):
    """Run a kernel in both backends on copies of the same arrays; return both outputs."""
    o_ref = [o.copy() for o in outputs]
    o_cpu = [o.copy() for o in outputs]
    i_ref = [i.copy() if isinstance(i, np.ndarray) else i for i in inputs]
    i_cpu = [i.copy() if isinstance(i, np.ndarray) else i for i in inputs]
    r_ref = getattr(ref, fn_name)(*o_ref, *i_ref)
    r_cpu = getattr(cpu, fn_name)(*o_cpu, *i_cpu)
    return (o_ref, i_ref, r_ref), (o_cpu, i_cpu, r_cpu)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0])
def test_bias_act_fwd(act, shape, dtype):
    rng = np.random.default_rng(0)
    y, b = rnd(rng, shape, dtype), rnd(rng, shape[1], dtype)
    (o_r, _, _), (o_c, _, _) = both("bias_act_fwd", [y], b, act[1], act[2])
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0])
def test_act_bias_bwd(act, shape, dtype):
    rng = np.random.default_rng(1)
    y = rnd(rng, shape, dtype)
    ref.bias_act_fwd(y, np.zeros(shape[1], dtype), act[1], act[2])  # a valid saved output
    dy = rnd(rng, shape, dtype)
    da, db = np.empty(shape, dtype), np.empty(shape[1], dtype)
    (o_r, _, _), (o_c, _, _) = both("act_bias_bwd", [da, db], dy, y, act[1], act[2])
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))
    np.testing.assert_allclose(o_c[1], o_r[1], **tol(dtype, reduction=True))


def test_act_bias_bwd_in_place_is_allowed():
    rng = np.random.default_rng(2)
    y = np.maximum(rnd(rng, (6, 9), "float32"), 0)
    dy = rnd(rng, (6, 9), "float32")
    want = dy * (y > 0)
    db = np.empty(9, np.float32)
    cpu.act_bias_bwd(dy, db, dy, y, ACTIVATIONS["relu"][0], 0.0)
    np.testing.assert_allclose(dy, want)
    np.testing.assert_allclose(db, want.sum(0), rtol=1e-5)


def _reparam_inputs(rng, B, Z, L, dtype):
    head = rnd(rng, (B, 2 * Z), dtype, 1.0)
    head[0, Z] = 50.0  # one logvar above the clamp range, one below
    if B > 1 or Z > 1:
        head[-1, 2 * Z - 1] = -50.0
    return head, rnd(rng, 2 * Z, dtype, 0.5), rnd(rng, (L * B, Z), dtype, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Z,L", [(1, 1, 1), (1, 3, 2), (7, 5, 3), (128, 20, 1)])
def test_reparam_kl_fwd_and_bwd(B, Z, L, dtype):
    rng = np.random.default_rng(3)
    head, hb, eps = _reparam_inputs(rng, B, Z, L, dtype)
    e = lambda *s: np.empty(s, dtype)  # noqa: E731
    outs = [e(B, Z), e(B, Z), e(B, Z), e(L * B, Z), e(B), e(Z)]
    (o_r, i_r, _), (o_c, i_c, _) = both("reparam_kl_fwd", outs, head, hb, eps, -30.0, 20.0)
    for a, b in zip(o_c, o_r):
        np.testing.assert_allclose(a, b, **tol(dtype, reduction=True))
    np.testing.assert_allclose(i_c[0], i_r[0], **tol(dtype))  # head with bias added
    mu, logvar, sigma, z, kl, kl_dim = o_r
    dz = rnd(rng, (L * B, Z), dtype, 0.1)
    for free_bits in (0.0, float(np.median(kl_dim))):
        (g_r, _, _), (g_c, _, _) = both("reparam_kl_bwd", [e(B, 2 * Z), e(2 * Z)], dz, eps, mu,
                                        sigma, i_r[0], kl_dim, 0.3, free_bits, -30.0, 20.0)
        np.testing.assert_allclose(g_c[0], g_r[0], **tol(dtype, reduction=True))
        np.testing.assert_allclose(g_c[1], g_r[1], **tol(dtype, reduction=True))
        # clamped from above: the sample path is cut, the KL's pull at the edge remains
        pull = (0.3 if free_bits == 0 or kl_dim[0] > free_bits else 0.0) * 0.5 * np.expm1(20.0)
        assert g_r[0][0, Z] == pytest.approx(pull, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B,D", [(1, 1, 1), (3, 1, 5), (6, 3, 33), (256, 128, 784)])
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "learned", "per_pixel"])
def test_likelihood_fwd_bwd(kind, R, B, D, dtype):
    rng = np.random.default_rng(4)
    out, b = rnd(rng, (R, D), dtype, 4.0), rnd(rng, D, dtype)
    out[0, 0] = 60.0  # saturated logits must stay finite
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    code = LIK_BERNOULLI if kind == "bernoulli" else LIK_GAUSSIAN
    learn = kind in ("learned", "per_pixel")
    logscale = rnd(rng, D if kind == "per_pixel" else 1, dtype, 0.3)
    e = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731  (NaN: unwritten outputs show)
    dls = e(logscale.shape[0])
    outs = [e(R, D), e(R), e(D), dls]
    (o_r, i_r, _), (o_c, i_c, _) = both("likelihood_fwd_bwd", outs, out, b, x, logscale, code,
                                        learn, 1.0 / R)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype, scale=np.abs(o_r[0]).max()))
    np.testing.assert_allclose(o_c[1], o_r[1], **tol(dtype, reduction=True))
    np.testing.assert_allclose(o_c[2], o_r[2], **tol(dtype, reduction=True))
    np.testing.assert_allclose(i_c[0], i_r[0], **tol(dtype))
    if learn:
        np.testing.assert_allclose(o_c[3], o_r[3], **tol(dtype, reduction=True))
    assert np.all(np.isfinite(o_c[0])) and np.all(np.isfinite(o_c[1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B,D", [(1, 1, 1), (6, 3, 33), (256, 128, 784)])
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian", "per_pixel"])
def test_likelihood_fwd_is_the_loss_of_fwd_bwd(kind, R, B, D, dtype):
    """The loss-only kernel gives the loss of the fused one (to the rounding of a sum in
    another order: the two loops vectorise differently), and writes nothing else."""
    rng = np.random.default_rng(14)
    out, b = rnd(rng, (R, D), dtype, 4.0), rnd(rng, D, dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    code = LIK_BERNOULLI if kind == "bernoulli" else LIK_GAUSSIAN
    logscale = rnd(rng, D if kind == "per_pixel" else 1, dtype, 0.3)
    (o_r, i_r, _), (o_c, i_c, _) = both("likelihood_fwd", [np.full(R, np.nan, dtype)], out, b,
                                        x, logscale, code)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype, reduction=True))
    np.testing.assert_array_equal(i_c[0], i_r[0])  # the bias, added in place
    full = [np.empty((R, D), dtype), np.empty(R, dtype), np.empty(D, dtype),
            np.empty(logscale.shape, dtype)]
    cpu.likelihood_fwd_bwd(*full, out.copy(), b, x, logscale, code, False, 1.0)
    np.testing.assert_allclose(o_c[0], full[1], **tol(dtype, reduction=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S", [1, 50])
def test_logscale_soft_floor(dtype, S):
    """ls = floor + softplus(raw - floor): the identity far above the floor, the floor far
    below it, and its derivative sigmoid(raw - floor); cpu against the reference."""
    floor = -6.0
    raw = np.linspace(-40, 10, S).astype(dtype) if S > 1 else np.array([-6.5], dtype)
    (o_r, _, _), (o_c, _, _) = both("logscale_fwd", [np.empty(S, dtype)], raw, floor)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))
    assert np.all(o_r[0] >= floor)  # in float32 far below it rounds to the floor itself
    dls = rnd(np.random.default_rng(15), S, dtype)
    (g_r, _, _), (g_c, _, _) = both("logscale_bwd", [np.empty(S, dtype)], dls, raw, floor)
    np.testing.assert_allclose(g_c[0], g_r[0], **tol(dtype))
    t = raw.astype(np.float64) - floor
    np.testing.assert_allclose(o_r[0], floor + np.logaddexp(0, t), rtol=1e-6, atol=4e-6)
    np.testing.assert_allclose(g_r[0], dls * np.exp(-np.logaddexp(0, -t)), rtol=1e-6)
    if S > 1:
        assert o_r[0][-1] == pytest.approx(10.0, rel=1e-6)   # far above: the raw value
        assert o_r[0][0] == pytest.approx(floor, abs=1e-6)   # far below: the floor


@pytest.mark.parametrize("backend", [ref, cpu], ids=["numpy", "cpu"])
def test_kl_near_collapse_keeps_its_digits_in_float32(backend):
    """Near posterior collapse (mu, logvar ~ 1e-3) the per-dimension KL is ~1e-6 nats:
    0.5 (mu^2 + expm1(lv) - lv) keeps it to float32 precision, where
    0.5 (mu^2 + sigma^2 - 1 - lv) would keep no digit at all."""
    rng = np.random.default_rng(16)
    B, Z = 64, 20
    head = (rng.standard_normal((B, 2 * Z)) * 1e-3).astype(np.float32)
    eps = rng.standard_normal((B, Z)).astype(np.float32)
    got = {}
    for dt, fn in (("float32", backend.reparam_kl_fwd), ("float64", ref.reparam_kl_fwd)):
        e = lambda *s: np.empty(s, dt)  # noqa: E731
        outs = [e(B, Z), e(B, Z), e(B, Z), e(B, Z), e(B), e(Z)]
        fn(*outs, head.astype(dt), np.zeros(2 * Z, dt), eps.astype(dt), -30.0, 20.0)
        got[dt] = outs
    kl32, kl64 = got["float32"][4], got["float64"][4]
    kd32, kd64 = got["float32"][5], got["float64"][5]
    assert kd64.max() < 1e-5  # the regime in question
    np.testing.assert_allclose(kl32, kl64, rtol=2e-4)
    np.testing.assert_allclose(kd32, kd64, rtol=2e-4)
    mu, lv = head[:, :Z], head[:, Z:]  # what the old formula gave, for the record
    old = 0.5 * (mu * mu + np.exp(lv) - np.float32(1) - lv)
    assert np.abs(old.mean(0) - kd64).max() > 100 * np.abs(kd32 - kd64).max()


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("data_dtype", ["uint8", "float32", "float64"])
def test_gather_and_scatter_rows(out_dtype, data_dtype):
    rng = np.random.default_rng(17)
    X = rng.uniform(0, 255, (40, 29)).astype(data_dtype)
    idx = rng.permutation(40)[:11]
    scale = 1 / 255 if data_dtype == "uint8" else 1.0
    (o_r, _, _), (o_c, _, _) = both("gather_rows", [np.empty((11, 29), out_dtype)], X, idx,
                                    scale)
    np.testing.assert_array_equal(o_c[0], o_r[0])
    np.testing.assert_array_equal(o_r[0], X[idx].astype(out_dtype) * np.dtype(out_dtype).type(scale))
    where = np.argsort(idx, kind="stable")  # read X in order, write each row to its place
    (s_r, _, _), (s_c, _, _) = both("scatter_rows", [np.empty((11, 29), out_dtype)], where, X,
                                    idx[where], scale)
    np.testing.assert_array_equal(s_r[0], o_r[0])
    np.testing.assert_array_equal(s_c[0], o_r[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_binarize_rows(dtype):
    rng = np.random.default_rng(18)
    x = rng.uniform(0, 1, (9, 31)).astype(dtype)
    u = rng.random((9, 31)).astype(dtype)
    (o_r, _, _), (o_c, _, _) = both("binarize_rows", [x], u)
    np.testing.assert_array_equal(o_c[0], o_r[0])
    np.testing.assert_array_equal(o_r[0], (u < x).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_data(dtype):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (9, 13)).astype(dtype)
    assert cpu.check_data(x, 0.0, 1.0) == ref.check_data(x, 0.0, 1.0) == (0, 0)
    x[1, 2], x[3, 4], x[5, 6], x[7, 8] = np.nan, np.inf, -0.5, 1.5
    assert cpu.check_data(x, 0.0, 1.0) == ref.check_data(x, 0.0, 1.0) == (2, 2)
    assert cpu.check_data(x, -np.inf, np.inf) == ref.check_data(x, -np.inf, np.inf) == (2, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.1), (True, 0.05)])
def test_adam_step(decoupled, wd, dtype):
    rng = np.random.default_rng(6)
    P = 1001
    p, g = rnd(rng, P, dtype), rnd(rng, P, dtype)
    m, v = rnd(rng, P, dtype, 0.1), np.abs(rnd(rng, P, dtype, 0.1))
    args = (g, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled, 7, 0.5)
    (o_r, _, _), (o_c, _, _) = both("adam_step", [p, m, v], *args)
    for a, b in zip(o_c, o_r):
        np.testing.assert_allclose(a, b, **tol(dtype, scale=np.abs(b).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov,step", [(0.0, False, 1), (0.9, False, 1),
                                                    (0.9, False, 4), (0.9, True, 4)])
def test_sgd_step(momentum, nesterov, step, dtype):
    rng = np.random.default_rng(7)
    P = 999
    p, g, buf = rnd(rng, P, dtype), rnd(rng, P, dtype), rnd(rng, P, dtype)
    (o_r, _, _), (o_c, _, _) = both("sgd_step", [p, buf], g, 0.01, momentum, nesterov, 1e-4,
                                    step, 1.0)
    for a, b in zip(o_c, o_r):
        np.testing.assert_allclose(a, b, **tol(dtype, scale=np.abs(b).max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sq_norm(dtype):
    g = np.random.default_rng(8).standard_normal(12345).astype(dtype)
    assert cpu.sq_norm(g) == pytest.approx(ref.sq_norm(g), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip,bad", [(3.0, None), (1e6, None), (3.0, np.nan), (3.0, np.inf)])
def test_clip_scale(dtype, clip, bad):
    g = np.random.default_rng(8).standard_normal(12345).astype(dtype) * 10
    if bad is not None:
        g[99] = bad
    out = {}
    for backend in (ref, cpu):
        scale, norm = np.ones(1), np.array([0.0, 2.0])
        backend.clip_scale(scale, norm, g, clip)
        out[backend.NAME] = scale, norm
    (rs, rn), (cs, cn) = out["numpy"], out["cpu"]
    np.testing.assert_allclose(cn, rn, rtol=1e-12)
    np.testing.assert_allclose(cs, rs, rtol=1e-12)
    if bad is None:
        assert rn[1] == 2 and rs[0] == min(1.0, clip / (rn[0] + 1e-6))
    else:
        assert np.isnan(rs[0]) and rn[1] == 3


@pytest.mark.parametrize("backend", [ref, cpu], ids=["numpy", "cpu"])
def test_moments_of_zero_gradients_flush_instead_of_going_denormal(backend):
    """A dead unit's moments decay geometrically; below MOMENT_FLUSH they become exact zeros
    rather than float32 denormals (which slowed the whole step 3x)."""
    P = 1003
    p, g = np.zeros(P, np.float32), np.zeros(P, np.float32)
    m, v = np.full(P, 1e-3, np.float32), np.full(P, 1e-3, np.float32)
    buf = np.full(P, 1e-3, np.float32)
    for s in range(2, 1500):
        backend.adam_step(p, m, v, g, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, s, 1.0)
        backend.sgd_step(p, buf, g, 0.1, 0.9, False, 0.0, s, 1.0)
    tiny = np.finfo(np.float32).tiny
    for a in (m, v, buf):
        assert not np.any((a != 0) & (np.abs(a) < tiny))
    assert np.all(m == 0) and np.all(buf == 0) and np.all(v > 0)  # v decays slower: still normal


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(R=st.integers(1, 40), D=st.integers(1, 70), L=st.integers(1, 3),
       kind=st.sampled_from([LIK_BERNOULLI, LIK_GAUSSIAN]), seed=st.integers(0, 2**31))
def test_likelihood_any_shape(R, D, L, kind, seed):
    """Random shapes: the fused loss and gradient agree with the reference (float32)."""
    rng = np.random.default_rng(seed)
    B = R
    out = rnd(rng, (L * B, D), "float32", 5.0)
    b, x = rnd(rng, D, "float32"), rng.uniform(0, 1, (B, D)).astype("float32")
    ls = rnd(rng, 1, "float32", 0.3)
    outs = [np.empty((L * B, D), "float32"), np.empty(L * B, "float32"),
            np.empty(D, "float32"), np.empty(1, "float32")]
    (o_r, _, _), (o_c, _, _) = both("likelihood_fwd_bwd", outs, out, b, x, ls, kind,
                                    kind == LIK_GAUSSIAN, 1.0 / (L * B))
    for a, e in zip(o_c, o_r):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("free_bits,weight", [(0.0, 0.0), (0.0, 3.0), (0.4, 5.0)])
def test_loss_stats(dtype, free_bits, weight):
    rng = np.random.default_rng(12)
    rows = rng.uniform(50, 150, 256).astype(dtype)
    kl = rng.uniform(0, 20, 128).astype(dtype)
    kl_dim = rng.uniform(0, 1, 20).astype(dtype)
    out = []
    for backend in (ref, cpu):
        stats, acc = np.zeros(3), np.array([1.0, -2.0, 0.5])
        backend.loss_stats(stats, acc, rows, kl, kl_dim, free_bits, 0.7, weight,
                           np.empty(0, dtype))
        out.append((stats, acc))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-13)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-13)
    recon, klm = rows.astype(np.float64).mean(), kl.astype(np.float64).mean()
    obj = np.maximum(kl_dim.astype(np.float64), free_bits).sum() if free_bits else klm
    np.testing.assert_allclose(out[0][0], [recon + 0.7 * obj, recon, klm], rtol=1e-13)
    np.testing.assert_allclose(out[0][1], np.array([1.0, -2.0, 0.5]) + weight * out[0][0],
                               rtol=1e-13)


def test_float32_exp_and_expm1_are_accurate_to_a_few_ulp():
    """The vectorisable float32 exp/expm1 of the Numba kernels against float64 libm, over
    the range the kernels use them on (logvar in [-30, 20], its half, softplus outputs)."""
    from numba import njit

    from fastvae.backends.nbmath import vexp, vexpm1

    @njit
    def both(t, e, m):
        for i in range(t.shape[0]):
            e[i] = vexp(t[i])
            m[i] = vexpm1(t[i])

    t = np.concatenate([np.linspace(-30, 20, 20001), np.linspace(-0.5, 0.5, 20001),
                        np.geomspace(1e-8, 1e-1, 2001), -np.geomspace(1e-8, 1e-1, 2001)])
    t = t.astype(np.float32)
    e, m = np.empty_like(t), np.empty_like(t)
    both(t, e, m)
    t64 = t.astype(np.float64)
    ulp = np.finfo(np.float32).eps
    assert np.max(np.abs(e / np.exp(t64) - 1)) < 4 * ulp
    nz = t != 0
    assert np.max(np.abs(m[nz] / np.expm1(t64[nz]) - 1)) < 4 * ulp and np.all(m[~nz] == 0)
