"""Every CUDA kernel against the NumPy reference, on the emulated device everywhere and on
the GPU where there is one (``-m gpu``).

Shapes cover 1 row, sizes that are not multiples of the 32-wide tile or the 256-thread
block, several latent tiles (Z > 32) and several row chunks (the emulated device reports 2
SMs, so rows beyond 32 are split and the partial sums are finished by sum_partials).
Tolerances: float64 to 1e-12 relative, float32 to a few ulp of the values' scale.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastvae.backends import cuda as C
from fastvae.backends import reference as R
from fastvae.core.codes import ACTIVATIONS, LIK_BERNOULLI, LIK_GAUSSIAN

from cuda_helpers import dev, emu, emu_library, host  # noqa: F401  (fixtures)

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1), (1, 45), (37, 45), (300, 70)]
LV = (-30.0, 20.0)


def tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-5)


def put(dev, a):
    return dev.xp.asarray(a)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", [code for code, _ in ACTIVATIONS.values()] + [0])
def test_bias_act_fwd_and_act_bias_bwd(dev, dtype, shape, act):
    rng = np.random.default_rng(1)
    alpha = 0.1
    y = rng.standard_normal(shape).astype(dtype) * 3
    b = rng.standard_normal(shape[1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y_dev = put(dev, y)
    R.bias_act_fwd(y, b, act, alpha)
    C.bias_act_fwd(y_dev, put(dev, b), act, alpha)
    rel = dict(rtol=tol(dtype)["rtol"], atol=0)  # relative: small values keep their digits
    np.testing.assert_allclose(host(y_dev), y, **rel)
    da, db = np.empty_like(y), np.empty(shape[1], dtype)
    R.act_bias_bwd(da, db, dy, y, act, alpha)
    da_dev, db_dev = dev.xp.empty_like(y_dev), dev.xp.full(shape[1], np.nan, dtype=dtype)
    # the same saved output on both sides: act' read off two outputs that differ by an ulp
    # differs by more than an ulp where the derivative is small (tanh near +-1)
    C.act_bias_bwd(da_dev, db_dev, put(dev, dy), put(dev, y), act, alpha)
    np.testing.assert_allclose(host(da_dev), da, **rel)
    np.testing.assert_allclose(host(db_dev), db, rtol=tol(dtype)["rtol"],
                               atol=tol(dtype)["atol"] * shape[0])


def test_act_bias_bwd_in_place(dev):
    rng = np.random.default_rng(2)
    y = np.maximum(rng.standard_normal((50, 33)), 0)
    dy = rng.standard_normal(y.shape)
    da, db = np.empty_like(y), np.empty(33)
    R.act_bias_bwd(da, db, dy, y, 1, 0.0)
    d = put(dev, dy)
    db_dev = dev.xp.empty(33)
    C.act_bias_bwd(d, db_dev, d, put(dev, y), 1, 0.0)
    np.testing.assert_allclose(host(d), da, rtol=1e-12)
    np.testing.assert_allclose(host(db_dev), db, rtol=1e-12, atol=1e-12)


def _reparam_inputs(dtype, B, Z, L, seed=3):
    rng = np.random.default_rng(seed)
    head = rng.standard_normal((B, 2 * Z)).astype(dtype)
    head[0, Z] = 40.0   # clamped above: the logvar gradient must vanish there
    head[-1, -1] = -45.0
    hb = rng.standard_normal(2 * Z).astype(dtype) * 0.1
    eps = rng.standard_normal((L * B, Z)).astype(dtype)
    return head, hb, eps


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Z,L", [(1, 1, 1), (5, 3, 2), (70, 20, 1), (41, 40, 3)])
@pytest.mark.parametrize("free_bits", [0.0, 0.3])
def test_reparam_kl_fwd_bwd(dev, dtype, B, Z, L, free_bits):
    head, hb, eps = _reparam_inputs(dtype, B, Z, L)
    e = lambda *s: np.empty(s, dtype)  # noqa: E731
    ref = dict(mu=e(B, Z), logvar=e(B, Z), sigma=e(B, Z), z=e(L * B, Z), kl=e(B), kl_dim=e(Z))
    ref_head = head.copy()
    R.reparam_kl_fwd(*ref.values(), ref_head, hb, eps, *LV)
    got = {k: dev.xp.full(v.shape, np.nan, dtype=dtype) for k, v in ref.items()}
    head_dev, eps_dev = put(dev, head), put(dev, eps)
    C.reparam_kl_fwd(*got.values(), head_dev, put(dev, hb), eps_dev, *LV)
    for k in ref:
        np.testing.assert_allclose(host(got[k]), ref[k], err_msg=k, rtol=tol(dtype)["rtol"],
                                   atol=tol(dtype)["atol"] * (B if k == "kl_dim" else Z))
    np.testing.assert_allclose(host(head_dev), ref_head, **tol(dtype))

    dz = np.random.default_rng(4).standard_normal((L * B, Z)).astype(dtype)
    dhead, dhb = e(B, 2 * Z), e(2 * Z)
    R.reparam_kl_bwd(dhead, dhb, dz, eps, ref["mu"], ref["sigma"], ref_head, ref["kl_dim"],
                     0.7 / B, free_bits, *LV)
    dhead_dev, dhb_dev = dev.xp.empty((B, 2 * Z), dtype=dtype), dev.xp.empty(2 * Z, dtype=dtype)
    C.reparam_kl_bwd(dhead_dev, dhb_dev, put(dev, dz), eps_dev, got["mu"], got["sigma"],
                     head_dev, got["kl_dim"], 0.7 / B, free_bits, *LV)
    np.testing.assert_allclose(host(dhead_dev), dhead, **tol(dtype))
    np.testing.assert_allclose(host(dhb_dev), dhb, rtol=tol(dtype)["rtol"],
                               atol=tol(dtype)["atol"] * B)
    # the clamp cut this logvar's sample path off; the KL's pull at the edge remains
    w = 0.7 / B if free_bits == 0 or ref["kl_dim"][0] > free_bits else 0.0
    pull = w * 0.5 * np.expm1(np.clip(ref_head[0, Z], *LV))
    assert host(dhead_dev)[0, Z] == pytest.approx(pull, rel=1e-6)


LIKELIHOODS = [
    ("bernoulli", LIK_BERNOULLI, False, 1),
    ("gaussian fixed", LIK_GAUSSIAN, False, 1),
    ("gaussian learned", LIK_GAUSSIAN, True, 1),
    ("gaussian per pixel", LIK_GAUSSIAN, True, "D"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,D,L", [(1, 1, 1), (1, 45, 2), (37, 45, 1), (150, 70, 2)])
@pytest.mark.parametrize("name,kind,learn,ls_size", LIKELIHOODS, ids=[c[0] for c in LIKELIHOODS])
def test_likelihood_fwd_bwd(dev, dtype, B, D, L, name, kind, learn, ls_size):
    rng = np.random.default_rng(5)
    Rr = L * B
    out = (rng.standard_normal((Rr, D)) * 4).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    logscale = (rng.standard_normal(D if ls_size == "D" else 1) * 0.3).astype(dtype)
    gs = 1.0 / Rr
    e = lambda *s: np.zeros(s, dtype)  # noqa: E731
    dout, rows, db, dls = e(Rr, D), e(Rr), e(D), e(logscale.shape[0])
    ref_out = out.copy()
    R.likelihood_fwd_bwd(dout, rows, db, dls, ref_out, b, x, logscale, kind, learn, gs)
    g = {k: dev.xp.full(v.shape, np.nan, dtype=dtype) for k, v in
         dict(dout=dout, rows=rows, db=db, dls=dls).items()}
    out_dev = put(dev, out)
    C.likelihood_fwd_bwd(g["dout"], g["rows"], g["db"], g["dls"], out_dev, put(dev, b),
                         put(dev, x), put(dev, logscale), kind, learn, gs)
    t = tol(dtype)
    np.testing.assert_allclose(host(out_dev), ref_out, **t)
    np.testing.assert_allclose(host(g["dout"]), dout, **t)
    np.testing.assert_allclose(host(g["rows"]), rows, rtol=t["rtol"], atol=t["atol"] * D * 4)
    np.testing.assert_allclose(host(g["db"]), db, rtol=t["rtol"], atol=t["atol"] * L)
    if learn:
        np.testing.assert_allclose(host(g["dls"]), dls, rtol=t["rtol"] * 10,
                                   atol=t["atol"] * D * 4)
    else:
        assert np.isnan(host(g["dls"])).all()  # not learned: never written


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,D,L", [(1, 1, 1), (37, 45, 1), (150, 70, 2)])
@pytest.mark.parametrize("name,kind,learn,ls_size", LIKELIHOODS, ids=[c[0] for c in LIKELIHOODS])
def test_likelihood_fwd(dev, dtype, B, D, L, name, kind, learn, ls_size):
    """The loss-only kernel: the reference's loss per row, the bias added, nothing else."""
    rng = np.random.default_rng(12)
    out = (rng.standard_normal((L * B, D)) * 4).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    logscale = (rng.standard_normal(D if ls_size == "D" else 1) * 0.3).astype(dtype)
    rows, ref_out = np.empty(L * B, dtype), out.copy()
    R.likelihood_fwd(rows, ref_out, b, x, logscale, kind)
    got, out_dev = dev.xp.full(L * B, np.nan, dtype=dtype), put(dev, out)
    C.likelihood_fwd(got, out_dev, put(dev, b), put(dev, x), put(dev, logscale), kind)
    t = tol(dtype)
    np.testing.assert_allclose(host(out_dev), ref_out, **t)
    np.testing.assert_allclose(host(got), rows, rtol=t["rtol"], atol=t["atol"] * D * 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S", [1, 300])
def test_logscale_fwd_bwd(dev, dtype, S):
    raw = np.linspace(-40, 10, S).astype(dtype) if S > 1 else np.array([-6.5], dtype)
    dls = np.random.default_rng(13).standard_normal(S).astype(dtype)
    ls, draw = np.empty(S, dtype), np.empty(S, dtype)
    R.logscale_fwd(ls, raw, -6.0)
    R.logscale_bwd(draw, dls, raw, -6.0)
    g_ls, g_draw = dev.xp.empty(S, dtype=dtype), dev.xp.empty(S, dtype=dtype)
    C.logscale_fwd(g_ls, put(dev, raw), -6.0)
    C.logscale_bwd(g_draw, put(dev, dls), put(dev, raw), -6.0)
    rel = dict(rtol=tol(dtype)["rtol"], atol=0)
    np.testing.assert_allclose(host(g_ls), ls, **rel)
    np.testing.assert_allclose(host(g_draw), draw, **rel)


def test_kl_near_collapse_keeps_its_digits_in_float32(dev):
    rng = np.random.default_rng(14)
    B, Z = 64, 20
    head = (rng.standard_normal((B, 2 * Z)) * 1e-3).astype(np.float32)
    eps = rng.standard_normal((B, Z)).astype(np.float32)
    e = lambda *s, dt=np.float64: np.empty(s, dt)  # noqa: E731
    ref = [e(B, Z), e(B, Z), e(B, Z), e(B, Z), e(B), e(Z)]
    R.reparam_kl_fwd(*ref, head.astype(np.float64), np.zeros(2 * Z), eps.astype(np.float64),
                     *LV)
    got = [dev.xp.empty(a.shape, dtype=np.float32) for a in ref]
    C.reparam_kl_fwd(*got, put(dev, head), put(dev, np.zeros(2 * Z, np.float32)),
                     put(dev, eps), *LV)
    assert ref[5].max() < 1e-5
    np.testing.assert_allclose(host(got[4]), ref[4], rtol=2e-4)
    np.testing.assert_allclose(host(got[5]), ref[5], rtol=2e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("free_bits", [0.0, 0.5])
def test_loss_stats(dev, dtype, free_bits):
    rng = np.random.default_rng(6)
    rows = rng.uniform(50, 150, 600).astype(dtype)
    kl = rng.uniform(0, 20, 300).astype(dtype)
    kl_dim = rng.uniform(0, 1, 40).astype(dtype)
    ref_s, ref_acc = np.zeros(3), np.array([1.0, 2.0, 3.0])
    none = np.empty(0, dtype)
    R.loss_stats(ref_s, ref_acc, rows, kl, kl_dim, free_bits, 0.8, 7.0, none)
    s, acc = dev.xp.zeros(3), put(dev, np.array([1.0, 2.0, 3.0]))
    C.loss_stats(s, acc, put(dev, rows), put(dev, kl), put(dev, kl_dim), free_bits, 0.8, 7.0,
                 put(dev, none))
    np.testing.assert_allclose(host(s), ref_s, rtol=1e-12)
    np.testing.assert_allclose(host(acc), ref_acc, rtol=1e-12)
    # weight 0 leaves the accumulator alone, even when the stats are not finite
    acc = put(dev, np.zeros(3))
    rows[3] = np.nan
    C.loss_stats(s, acc, put(dev, rows), put(dev, kl), put(dev, kl_dim), free_bits, 0.8, 0.0,
                 put(dev, none))
    assert np.isnan(host(s)[0]) and (host(acc) == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.01), (True, 0.01)])
@pytest.mark.parametrize("step", [1, 7])
def test_adam_step(dev, dtype, decoupled, wd, step):
    rng = np.random.default_rng(7)
    n = 1000
    p, m = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype) * 0.01
    v, g = rng.uniform(0, 1e-3, n).astype(dtype), rng.standard_normal(n).astype(dtype)
    m[:5] = 1e-35  # flushed to zero by both
    bufs = [put(dev, a) for a in (p, m, v, g)]
    args = (1e-3, 0.9, 0.999, 1e-8, wd, decoupled, step, 0.5)
    R.adam_step(p, m, v, g, *args)
    C.adam_step(*bufs, *args)
    for name, a, b in zip("pmv", (p, m, v), bufs):
        np.testing.assert_allclose(host(b), a, err_msg=name, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("step", [1, 3])
def test_sgd_step(dev, dtype, momentum, nesterov, step):
    rng = np.random.default_rng(8)
    p, buf, g = (rng.standard_normal(777).astype(dtype) for _ in range(3))
    bufs = [put(dev, a) for a in (p, buf, g)]
    args = (0.01, momentum, nesterov, 1e-4, step, 1.0)
    R.sgd_step(p, buf, g, *args)
    C.sgd_step(bufs[0], bufs[1], bufs[2], *args)
    np.testing.assert_allclose(host(bufs[0]), p, **tol(dtype))
    np.testing.assert_allclose(host(bufs[1]), buf, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_data_and_sq_norm(dev, dtype):
    rng = np.random.default_rng(9)
    x = rng.uniform(0, 1, (33, 70)).astype(dtype)
    assert C.check_data(put(dev, x), 0.0, 1.0) == (0, 0)
    x[0, 0], x[5, 3], x[7, 7], x[9, 9] = np.nan, np.inf, 1.5, -0.25
    assert C.check_data(put(dev, x), 0.0, 1.0) == R.check_data(x, 0.0, 1.0) == (2, 2)
    assert C.check_data(put(dev, x), -np.inf, np.inf) == (2, 0)
    g = rng.standard_normal(5001).astype(dtype)
    assert C.sq_norm(put(dev, g)) == pytest.approx(R.sq_norm(g), rel=1e-12)


#: (gradient size, clip norm): clipped, not clipped (scale exactly 1), a zero gradient
CLIPS = [(5001, 3.0), (5001, 1e6), (70, 0.5), (1, 2.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,clip", CLIPS)
def test_clip_scale(dev, dtype, n, clip):
    """The device's norm and scale against reference.clip_scale, on buffers that start as
    the optimizer's do (scale 1, norm [0, skipped count])."""
    g = np.random.default_rng(n).standard_normal(n).astype(dtype) * 10
    if n == 1:
        g[:] = 0
    scale, norm = np.ones(1), np.array([0.0, 2.0])
    R.clip_scale(scale, norm, g, clip)
    d_scale, d_norm = put(dev, np.ones(1)), put(dev, np.array([0.0, 2.0]))
    C.clip_scale(d_scale, d_norm, put(dev, g), clip)
    np.testing.assert_allclose(host(d_norm), norm, rtol=1e-12, atol=0)
    np.testing.assert_allclose(host(d_scale), scale, rtol=1e-12, atol=0)
    assert norm[1] == 2.0  # a finite norm skips nothing
    assert (scale[0] == 1.0) == (clip >= norm[0] + 1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_scale_of_a_non_finite_gradient(dev, bad):
    g = np.ones(300)
    g[17] = bad
    for backend, xp_put in ((R, np.asarray), (C, lambda a: put(dev, a))):
        scale, norm = xp_put(np.ones(1)), xp_put(np.array([0.0, 2.0]))
        backend.clip_scale(scale, norm, xp_put(g), 1.0)
        scale, norm = host(scale), host(norm)
        assert np.isnan(scale[0]) and norm[1] == 3.0, backend.NAME
        assert np.isnan(norm[0]) if np.isnan(bad) else np.isinf(norm[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L,B,Z,first", [(1, 1, 1, 0), (1, 5, 3, 7), (3, 37, 20, 5 << 34)])
def test_normal_eps_matches_reference(dev, dtype, L, B, Z, first):
    key, row0 = (0x1234, 0xABCDEF), 2 ** 33 + 5
    ref = np.empty((L, B, Z), dtype)
    R.normal_eps(ref, key, row0, first)
    got = dev.xp.empty((L, B, Z), dtype=dtype)
    C.normal_eps(got, key, row0, first)
    np.testing.assert_allclose(host(got), ref, rtol=1e-6 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-12)


def test_normal_eps_is_standard_normal_and_counter_based():
    a = np.empty((1, 100, 2000))
    R.normal_eps(a, (1, 2), 0, 0)
    b = np.empty((1, 100, 2000))
    R.normal_eps(b, (1, 2), 100, 0)  # the next 100 rows
    c = np.empty((1, 100, 2000))
    R.normal_eps(c, (1, 2), 0, 1 << 34)  # the same rows, the next step
    for v in (a, b, c):
        assert abs(v.mean()) < 0.01 and abs(v.std() - 1) < 0.01
        assert abs((v > 1.96).mean() - 0.025) < 0.002  # the tail, not just two moments
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    d = np.empty((1, 7, 2000))
    R.normal_eps(d, (1, 2), 3, 0)
    np.testing.assert_array_equal(d, a[:, 3:10])  # a row's noise is its own, however batched


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("data_dtype", [np.uint8, np.float32, np.float64])
def test_gather_rows(dev, out_dtype, data_dtype):
    rng = np.random.default_rng(10)
    X = (rng.uniform(0, 255, (50, 37))).astype(data_dtype)
    idx = rng.permutation(50)[:13].astype(np.int64)
    scale = 1 / 255 if data_dtype == np.uint8 else 1.0
    ref = np.empty((13, 37), out_dtype)
    R.gather_rows(ref, X, idx, scale)
    got = dev.xp.empty((13, 37), dtype=out_dtype)
    C.gather_rows(got, put(dev, X), put(dev, idx), scale)
    np.testing.assert_array_equal(host(got), ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (5, 3, 7), (33, 70, 9)])
def test_matmul_transpose_flags(dev, dtype, ta, tb, M, K, N):
    rng = np.random.default_rng(11)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    out = dev.xp.empty((M, N), dtype=dtype)
    C.matmul(out, put(dev, a), put(dev, b), trans_a=ta, trans_b=tb)
    np.testing.assert_allclose(host(out), want, rtol=1e-4 if dtype == np.float32 else 1e-12,
                               atol=1e-4 if dtype == np.float32 else 1e-12)


def test_matmul_refuses_bad_arguments(emu):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match="shapes do not agree"):
        C.matmul(np.empty((3, 6), np.float32), a, b)
    with pytest.raises(ValueError, match="C-contiguous"):
        C.matmul(np.empty((3, 5), np.float32), np.ones((4, 3), np.float32).T, b)
    with pytest.raises(TypeError, match="dtypes"):
        C.matmul(np.empty((3, 5), np.float64), a, b)


def test_launches_are_checked_against_the_kernel_signatures(emu):
    y = emu.xp.zeros((2, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="expected int32"):
        emu.launch("bias_act_fwd_f32", (1,), (256,), (y, y[0], np.int64(2), np.int64(3),
                                                      np.int32(0), np.float32(0)))
    with pytest.raises(TypeError, match="float32 device array"):
        emu.launch("bias_act_fwd_f32", (1,), (256,), (y.astype(np.float64), y[0], np.int64(2),
                                                      np.int32(3), np.int32(0), np.float32(0)))
    with pytest.raises(TypeError, match="device array, got ndarray"):  # a host array
        emu.launch("bias_act_fwd_f32", (1,), (256,), (np.zeros((2, 3), np.float32), y[0],
                                                      np.int64(2), np.int32(3), np.int32(0),
                                                      np.float32(0)))
    with pytest.raises(KeyError, match="no CUDA kernel"):
        emu.launch("bias_act_fwd_f16", (1,), (256,), ())
