"""Every kernel of every backend against its NumPy reference (backends/reference.py), on
random inputs, awkward sizes included: the cpu backend (Numba), the cuda backend on the
emulated device (tests/cuda_emu.py: the real kernels/*.cu compiled with g++), and the cuda
backend on a real GPU where there is one (``-m gpu``).

Shapes cover 1 row, sizes that are not multiples of the 32-wide tile or the 256-thread
block, several latent tiles (Z > 32) and several row chunks (the emulated device reports 2
SMs, so rows beyond 32 are split and the partial sums are finished by sum_partials), and
the canonical model's sizes (784, 400, 20, batch 128).

Tolerances (:func:`tol`) are relative, so that a formula that loses the relative precision
of small values (1 - exp(-y) for small y, say) fails: float64 rtol 1e-12; float32 rtol 1e-5
for elementwise outputs (the float32 exp/expm1/log1p of the Numba kernels are within a few
ulp, see the last test, and CUDA's within 2 ulp) and rtol 1e-4 (with an absolute floor) for
sums over rows or columns, whose order differs between backends.  Where a test states its
own tolerance, the comment there says why.  Exact equality only where every backend must
give the same bits: copies, a single correctly rounded IEEE operation (x * scale, out + b),
comparisons (u < x), counts.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastvae.backends import cpu, reference as ref
from fastvae.backends.codes import ACTIVATIONS, ACT_IDENTITY, LIK_BERNOULLI, LIK_GAUSSIAN

from conftest import DEVICE_BACKENDS
from cuda_helpers import host
from tolerances import RTOL

DTYPES = ["float32", "float64"]
ACTS = [(n, c, a) for n, (c, a) in ACTIVATIONS.items()] + [("identity", ACT_IDENTITY, 0.0)]
SHAPES = [(1, 1), (1, 7), (3, 1), (5, 33), (1, 45), (37, 45), (300, 70), (17, 784), (128, 400)]
LV = (-30.0, 20.0)


def tol(dtype, reduction=False, scale=None, terms=32):
    """Relative tolerances; ``scale`` adds an absolute floor relative to the magnitude of
    the inputs, for outputs that are differences (sigmoid(a) - x, p - lr * update), which
    cancel in every backend alike.  A reduction's absolute floor (for sums that cancel to
    near zero) grows like the rounding error of a sum in another order, as the square root
    of the number of ``terms`` beyond a 32-row tile (a column sum of 300 rows of ~3 cancelled
    to 0.011 on the emulated GPU, 1.6e-5 from the reference)."""
    if reduction:
        grow = max(1.0, float(np.sqrt(terms / 32)))
        return (dict(rtol=1e-12, atol=1e-12 * grow) if dtype == "float64"
                else dict(rtol=1e-4, atol=1e-5 * grow))
    rtol = RTOL[dtype]  # elementwise: the cross-backend tolerance (tests/tolerances.py)
    floor = 1e-14 if dtype == "float64" else 1e-6
    return dict(rtol=rtol, atol=0 if scale is None else floor * scale)


def rnd(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def skip_large_on_the_emulator(kb, elements):
    """The emulated device runs one fiber per CUDA thread: the canonical model's sizes
    (R x D = 200,704) take seconds a test there and cover nothing that the (300, 150, 70)
    case (several row chunks, partial tiles and blocks) does not; they run on cpu and GPU."""
    if kb.name == "cuda" and elements > 100_000:
        pytest.skip("canonical size: cpu and GPU only (the emulator is slow at it)")


class Kernels:
    """One backend's kernels, with the copies to and from where its arrays live."""

    def __init__(self, name, mod, dev=None):
        self.name, self.mod, self.dev = name, mod, dev

    def put(self, a):
        if not isinstance(a, np.ndarray):
            return a
        return a.copy() if self.dev is None else self.dev.xp.asarray(a)

    def has(self, fn_name):
        return hasattr(self.mod, fn_name)

    def run(self, fn_name, outputs, *inputs):
        """Run a kernel in the reference and in this backend on copies of the same arrays;
        return (outputs, inputs, result) of each, this backend's as host arrays."""
        if not self.has(fn_name):
            pytest.skip(f"the {self.name} backend has no {fn_name} kernel")
        o_ref = [o.copy() for o in outputs]
        i_ref = [i.copy() if isinstance(i, np.ndarray) else i for i in inputs]
        r_ref = getattr(ref, fn_name)(*o_ref, *i_ref)
        o_b = [self.put(o) for o in outputs]
        i_b = [self.put(i) for i in inputs]
        r_b = getattr(self.mod, fn_name)(*o_b, *i_b)
        back = lambda a: host(a) if hasattr(a, "shape") else a  # noqa: E731
        return (o_ref, i_ref, r_ref), ([back(o) for o in o_b], [back(i) for i in i_b], r_b)

    def call(self, fn_name, outputs, *inputs):
        """Run a kernel in this backend only; return its outputs as host arrays."""
        o_b = [self.put(o) for o in outputs]
        getattr(self.mod, fn_name)(*o_b, *[self.put(i) for i in inputs])
        return [host(o) for o in o_b]


KERNEL_BACKENDS = DEVICE_BACKENDS  # (the one list, in conftest.py)


def _kernels(request, name):
    if name == "numpy":
        return Kernels("numpy", ref)
    if name == "cpu":
        return Kernels("cpu", cpu)
    from fastvae.backends import cuda as C
    d = request.getfixturevalue("emu" if name == "cuda" else "gpu_device")
    return Kernels(name, C, d)


@pytest.fixture(params=KERNEL_BACKENDS)
def kb(request):
    """A backend whose kernels are held against the reference: cpu, emulated cuda, GPU."""
    return _kernels(request, request.param)


@pytest.fixture(params=["numpy"] + KERNEL_BACKENDS)
def any_kb(request):
    """Every backend, the reference included, for properties each must have on its own."""
    return _kernels(request, request.param)


# ---------------------------------------------------------------------------- layers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0])
def test_bias_act_fwd(kb, act, shape, dtype):
    rng = np.random.default_rng(0)
    y, b = rnd(rng, shape, dtype), rnd(rng, shape[1], dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("bias_act_fwd", [y], b, act[1], act[2])
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0])
def test_act_bias_bwd(kb, act, shape, dtype):
    rng = np.random.default_rng(1)
    y = rnd(rng, shape, dtype)
    # the same saved output on both sides: act' read off two outputs that differ by an ulp
    # differs by more than an ulp where the derivative is small (tanh near +-1)
    ref.bias_act_fwd(y, np.zeros(shape[1], dtype), act[1], act[2])
    dy = rnd(rng, shape, dtype)
    da, db = np.full(shape, np.nan, dtype), np.full(shape[1], np.nan, dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("act_bias_bwd", [da, db], dy, y, act[1], act[2])
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))
    np.testing.assert_allclose(o_c[1], o_r[1], **tol(dtype, reduction=True, terms=shape[0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 9), (50, 33)])
def test_act_bias_bwd_in_place_is_allowed(kb, dtype, shape):
    rng = np.random.default_rng(2)
    y = np.maximum(rnd(rng, shape, dtype), 0)
    dy = rnd(rng, shape, dtype)
    want = dy * (y > 0)
    d = kb.put(dy)
    db = kb.put(np.full(shape[1], np.nan, dtype))
    kb.mod.act_bias_bwd(d, db, d, kb.put(y), ACTIVATIONS["relu"][0], 0.0)
    np.testing.assert_array_equal(host(d), want)  # dy times 1 or 0: exact everywhere
    # a column sum in another order: six rows keep float32's 1e-5, more the reduction's
    t = (dict(rtol=1e-5) if dtype == "float32" and shape[0] <= 6
         else tol(dtype, reduction=True, terms=shape[0]))
    np.testing.assert_allclose(host(db), want.sum(0), **t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (5, 3, 7), (33, 70, 9)])
def test_matmul_transpose_flags(kb, dtype, ta, tb, M, K, N):
    """Against the float64 product: a dot product of up to 70 float32 terms in any order is
    within ~70 ulp (1e-5) of the sum's terms' scale; 1e-4 leaves a factor of ten."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    out = kb.put(np.full((M, N), np.nan, dtype))
    kb.mod.matmul(out, kb.put(a), kb.put(b), trans_a=ta, trans_b=tb)
    t = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(host(out), want, rtol=t, atol=t)


# ------------------------------------------------------------------- reparametrisation
def _reparam_inputs(rng, B, Z, L, dtype):
    head = rnd(rng, (B, 2 * Z), dtype, 1.0)
    head[0, Z] = 50.0  # one logvar above the clamp range, one below
    if B > 1 or Z > 1:
        head[-1, 2 * Z - 1] = -50.0
    return head, rnd(rng, 2 * Z, dtype, 0.5), rnd(rng, (L * B, Z), dtype, 1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Z,L", [(1, 1, 1), (1, 3, 2), (5, 3, 2), (7, 5, 3), (70, 20, 1),
                                   (41, 40, 3), (128, 20, 1)])
def test_reparam_kl_fwd_and_bwd(kb, B, Z, L, dtype):
    rng = np.random.default_rng(3)
    head, hb, eps = _reparam_inputs(rng, B, Z, L, dtype)
    e = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731  (NaN: unwritten outputs show)
    outs = [e(B, Z), e(B, Z), e(B, Z), e(L * B, Z), e(B), e(Z)]
    (o_r, i_r, _), (o_c, i_c, _) = kb.run("reparam_kl_fwd", outs, head, hb, eps, *LV)
    for name, a, b in zip(["mu", "logvar", "sigma"], o_c, o_r):  # elementwise
        np.testing.assert_allclose(a, b, err_msg=name, **tol(dtype))
    # z = mu + sigma * eps cancels where mu ~ -sigma eps: relative to z's scale there
    np.testing.assert_allclose(o_c[3], o_r[3], err_msg="z",
                               **tol(dtype, scale=np.abs(o_r[3]).max()))
    for name, a, b in zip(["kl", "kl_dim"], o_c[4:], o_r[4:]):  # sums over Z, over B
        np.testing.assert_allclose(a, b, err_msg=name, **tol(dtype, reduction=True))
    np.testing.assert_allclose(i_c[0], i_r[0], **tol(dtype))  # head with bias added
    mu, logvar, sigma, z, kl, kl_dim = o_r
    dz = rnd(rng, (L * B, Z), dtype, 0.1)
    for free_bits in (0.0, 0.3, float(np.median(kl_dim))):
        (g_r, _, _), (g_c, _, _) = kb.run("reparam_kl_bwd", [e(B, 2 * Z), e(2 * Z)], dz, eps,
                                          mu, sigma, i_r[0], kl_dim, 0.3, free_bits, *LV)
        # dhead sums over L <= 3 samples: elementwise, relative to the scale of the entries
        # (the clamp's pull of ~1e7 aside) where the sample path and the KL's pull cancel;
        # dhb sums over B rows
        scale = np.abs(g_r[0][np.abs(g_r[0]) < 1e3]).max()
        np.testing.assert_allclose(g_c[0], g_r[0], **tol(dtype, scale=scale))
        np.testing.assert_allclose(g_c[1], g_r[1], **tol(dtype, reduction=True, terms=B))
        # clamped from above: the sample path is cut, the KL's pull at the edge remains
        pull = (0.3 if free_bits == 0 or kl_dim[0] > free_bits else 0.0) * 0.5 * np.expm1(20.0)
        assert g_r[0][0, Z] == pytest.approx(pull, rel=1e-6)
        assert g_c[0][0, Z] == pytest.approx(pull, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("S", [1, 50, 300])
def test_logscale_soft_floor(kb, dtype, S):
    """ls = floor + softplus(raw - floor): the identity far above the floor, the floor far
    below it, and its derivative sigmoid(raw - floor); against the reference."""
    floor = -6.0
    raw = np.linspace(-40, 10, S).astype(dtype) if S > 1 else np.array([-6.5], dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("logscale_fwd", [np.full(S, np.nan, dtype)], raw, floor)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype))
    assert np.all(o_r[0] >= floor)  # in float32 far below it rounds to the floor itself
    dls = rnd(np.random.default_rng(15), S, dtype)
    (g_r, _, _), (g_c, _, _) = kb.run("logscale_bwd", [np.full(S, np.nan, dtype)], dls, raw,
                                      floor)
    np.testing.assert_allclose(g_c[0], g_r[0], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_logscale_is_the_soft_floor(dtype):
    floor = -6.0
    raw = np.linspace(-40, 10, 50).astype(dtype)
    ls, g = np.empty(50, dtype), np.empty(50, dtype)
    ref.logscale_fwd(ls, raw, floor)
    dls = rnd(np.random.default_rng(15), 50, dtype)
    ref.logscale_bwd(g, dls, raw, floor)
    t = raw.astype(np.float64) - floor
    np.testing.assert_allclose(ls, floor + np.logaddexp(0, t), rtol=1e-6, atol=4e-6)
    np.testing.assert_allclose(g, dls * np.exp(-np.logaddexp(0, -t)), rtol=1e-6)
    assert ls[-1] == pytest.approx(10.0, rel=1e-6)   # far above: the raw value
    assert ls[0] == pytest.approx(floor, abs=1e-6)   # far below: the floor


def test_kl_near_collapse_keeps_its_digits_in_float32(any_kb):
    """Near posterior collapse (mu, logvar ~ 1e-3) the per-dimension KL is ~1e-6 nats:
    0.5 (mu^2 + expm1(lv) - lv) keeps it to float32 precision, where
    0.5 (mu^2 + sigma^2 - 1 - lv) would keep no digit at all."""
    rng = np.random.default_rng(16)
    B, Z = 64, 20
    head = (rng.standard_normal((B, 2 * Z)) * 1e-3).astype(np.float32)
    eps = rng.standard_normal((B, Z)).astype(np.float32)
    e = lambda *s, dt=np.float64: np.empty(s, dt)  # noqa: E731
    want = [e(B, Z), e(B, Z), e(B, Z), e(B, Z), e(B), e(Z)]
    ref.reparam_kl_fwd(*want, head.astype(np.float64), np.zeros(2 * Z), eps.astype(np.float64),
                       *LV)
    got = any_kb.call("reparam_kl_fwd", [a.astype(np.float32) for a in want], head,
                      np.zeros(2 * Z, np.float32), eps, *LV)
    kl32, kl64, kd32, kd64 = got[4], want[4], got[5], want[5]
    assert kd64.max() < 1e-5  # the regime in question
    np.testing.assert_allclose(kl32, kl64, rtol=2e-4)
    np.testing.assert_allclose(kd32, kd64, rtol=2e-4)
    mu, lv = head[:, :Z], head[:, Z:]  # what the old formula gave, for the record
    old = 0.5 * (mu * mu + np.exp(lv) - np.float32(1) - lv)
    assert np.abs(old.mean(0) - kd64).max() > 100 * np.abs(kd32 - kd64).max()


# --------------------------------------------------------------------------- likelihood
LIK_KINDS = ["bernoulli", "gaussian", "learned", "per_pixel"]
#: (R, B, D): R = L * B decoder rows for B data rows
LIK_SHAPES = [(1, 1, 1), (3, 1, 5), (2, 1, 45), (6, 3, 33), (37, 37, 45), (300, 150, 70),
              (256, 128, 784)]


def _lik_inputs(rng, R, B, D, kind, dtype):
    out, b = rnd(rng, (R, D), dtype, 4.0), rnd(rng, D, dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    code = LIK_BERNOULLI if kind == "bernoulli" else LIK_GAUSSIAN
    logscale = rnd(rng, D if kind == "per_pixel" else 1, dtype, 0.3)
    return out, b, x, code, kind in ("learned", "per_pixel"), logscale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B,D", LIK_SHAPES)
@pytest.mark.parametrize("kind", LIK_KINDS)
def test_likelihood_fwd_bwd(kb, kind, R, B, D, dtype):
    skip_large_on_the_emulator(kb, R * D)
    rng = np.random.default_rng(4)
    out, b, x, code, learn, logscale = _lik_inputs(rng, R, B, D, kind, dtype)
    out[0, 0] = 60.0  # saturated logits must stay finite
    e = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731  (NaN: unwritten outputs show)
    outs = [e(R, D), e(R), e(D), e(logscale.shape[0])]
    (o_r, i_r, _), (o_c, i_c, _) = kb.run("likelihood_fwd_bwd", outs, out, b, x, logscale,
                                          code, learn, 1.0 / R)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype, scale=np.abs(o_r[0]).max()))
    np.testing.assert_allclose(o_c[1], o_r[1], **tol(dtype, reduction=True))
    np.testing.assert_allclose(o_c[2], o_r[2], **tol(dtype, reduction=True))
    np.testing.assert_allclose(i_c[0], i_r[0], **tol(dtype))  # the bias, added in place
    if learn:
        np.testing.assert_allclose(o_c[3], o_r[3], **tol(dtype, reduction=True))
    else:
        assert np.isnan(o_c[3]).all()  # not learned: never written
    assert np.all(np.isfinite(o_c[0])) and np.all(np.isfinite(o_c[1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("R,B,D", [(1, 1, 1), (6, 3, 33), (37, 37, 45), (300, 150, 70),
                                   (256, 128, 784)])
@pytest.mark.parametrize("kind", LIK_KINDS)
def test_likelihood_fwd_is_the_loss_of_fwd_bwd(kb, kind, R, B, D, dtype):
    """The loss-only kernel gives the reference's loss per row and the loss of the backend's
    own fused kernel (to the rounding of a sum in another order: the two loops vectorise
    differently), adds the bias (one IEEE addition: the same bits everywhere), and writes
    nothing else."""
    skip_large_on_the_emulator(kb, R * D)
    rng = np.random.default_rng(14)
    out, b, x, code, learn, logscale = _lik_inputs(rng, R, B, D, kind, dtype)
    (o_r, i_r, _), (o_c, i_c, _) = kb.run("likelihood_fwd", [np.full(R, np.nan, dtype)], out, b,
                                          x, logscale, code)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype, reduction=True))
    np.testing.assert_array_equal(i_c[0], i_r[0])
    full = kb.call("likelihood_fwd_bwd", [np.empty((R, D), dtype), np.empty(R, dtype),
                                          np.empty(D, dtype), np.empty(logscale.shape, dtype)],
                   out.copy(), b, x, logscale, code, learn, 1.0)
    np.testing.assert_allclose(o_c[0], full[1], **tol(dtype, reduction=True))


from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


# the fixture only installs a backend: sharing it between examples is what is wanted
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(R=st.integers(1, 40), D=st.integers(1, 70), L=st.integers(1, 3),
       kind=st.sampled_from([LIK_BERNOULLI, LIK_GAUSSIAN]), seed=st.integers(0, 2**31))
def test_likelihood_any_shape(kb, R, D, L, kind, seed):
    """Random shapes: the fused loss and gradient agree with the reference (float32)."""
    rng = np.random.default_rng(seed)
    B = R
    out = rnd(rng, (L * B, D), "float32", 5.0)
    b, x = rnd(rng, D, "float32"), rng.uniform(0, 1, (B, D)).astype("float32")
    ls = rnd(rng, 1, "float32", 0.3)
    outs = [np.empty((L * B, D), "float32"), np.empty(L * B, "float32"),
            np.empty(D, "float32"), np.empty(1, "float32")]
    (o_r, _, _), (o_c, _, _) = kb.run("likelihood_fwd_bwd", outs, out, b, x, ls, kind,
                                      kind == LIK_GAUSSIAN, 1.0 / (L * B))
    for a, e in zip(o_c[:3] if kind == LIK_BERNOULLI else o_c, o_r):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------- importance weighting
def _iw_inputs(rng, B, K, Z, dtype):
    loss_rows = rng.uniform(20, 60, K * B).astype(dtype)
    z = rng.standard_normal((K * B, Z)).astype(dtype)
    eps = rng.standard_normal((K * B, Z)).astype(dtype)
    logvar = (rng.standard_normal((B, Z)) * 0.5).astype(dtype)
    return loss_rows, z, eps, logvar


def iw_tol(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,K,Z", [(1, 1, 1), (5, 3, 4), (41, 3, 37), (70, 5, 20)])
def test_iwae_fwd(any_kb, dtype, B, K, Z):
    """Against the reference, and the reference (any_kb numpy) against the formulas."""
    rng = np.random.default_rng(0)
    loss_rows, z, eps, logvar = _iw_inputs(rng, B, K, Z, dtype)
    loss_rows[0] = 1e4  # a log weight of about -1e4 must not break the logsumexp
    e = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731
    (o_r, _, _), (o_c, _, _) = any_kb.run("iwae_fwd", [e(K * B), e(K * B), e(B)], loss_rows, z,
                                          eps, logvar)
    for a, b in zip(o_c, o_r):
        np.testing.assert_allclose(a, b, **iw_tol(dtype))
    logw, wnorm, loss_b = (a.astype(np.float64) for a in o_c)
    # the formulas, written out: log w = log N(x|..) + log N(z; 0, I) - log N(z; mu, sigma)
    lr, zz, ee, lv = (a.astype(np.float64) for a in (loss_rows, z, eps, logvar))
    want = -lr - 0.5 * (zz ** 2).sum(1) + 0.5 * (ee ** 2).sum(1) + np.tile(0.5 * lv.sum(1), K)
    np.testing.assert_allclose(logw, want, rtol=1e-6 if dtype == "float32" else 1e-13)
    lw = want.reshape(K, B)
    np.testing.assert_allclose(wnorm.reshape(K, B).sum(0), 1.0,
                               rtol=1e-5 if dtype == "float32" else 1e-13)
    lse = np.logaddexp.reduce(lw, axis=0)
    np.testing.assert_allclose(loss_b, -(lse - np.log(K)),
                               rtol=1e-6 if dtype == "float32" else 1e-13)
    assert np.all(np.isfinite(loss_b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LIK_KINDS)
@pytest.mark.parametrize("R,B,D", [(12, 4, 33), (123, 41, 45)])
def test_likelihood_bwd_is_the_fused_gradient_weighted_per_row(any_kb, dtype, kind, R, B, D):
    """Uniform weights 1/R reproduce the fused kernel's gradient; other weights scale each
    row's gradient and the column sums follow."""
    rng = np.random.default_rng(1)
    out = (rng.standard_normal((R, D)) * 3).astype(dtype)
    b = rng.standard_normal(D).astype(dtype)
    x = rng.uniform(0, 1, (B, D)).astype(dtype)
    code = LIK_BERNOULLI if kind == "bernoulli" else LIK_GAUSSIAN
    learn = kind in ("learned", "per_pixel")
    ls = (rng.standard_normal(D if kind == "per_pixel" else 1) * 0.3).astype(dtype)
    e = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731
    fused = [e(R, D), e(R), e(D), e(ls.size)]
    biased = out.copy()
    ref.likelihood_fwd_bwd(*fused, biased, b, x, ls, code, learn, 1.0 / R)
    w = rng.uniform(0, 1, R).astype(dtype)
    t = iw_tol(dtype)
    g = any_kb.call("likelihood_bwd", [e(R, D), e(D), e(ls.size)], biased, x, ls, code, learn,
                    np.ones(R, dtype), 1.0 / R)
    np.testing.assert_allclose(g[0], fused[0], **t)
    # a column sum of R rows in another order: the reduction tolerance
    np.testing.assert_allclose(g[1], fused[2], **tol(dtype, reduction=True))
    if learn:
        np.testing.assert_allclose(g[2], fused[3], rtol=t["rtol"] * 10, atol=t["atol"] * 10)
    else:
        assert np.isnan(g[2]).all()  # not learned: never written
    gw = any_kb.call("likelihood_bwd", [e(R, D), e(D), e(ls.size)], biased, x, ls, code, learn,
                     w, 0.5)
    np.testing.assert_allclose(gw[0], fused[0] * (0.5 * R * w)[:, None], **t)
    np.testing.assert_allclose(gw[1], gw[0].sum(0), rtol=1e-4 if dtype == "float32" else 1e-12,
                               atol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dreg", [False, True])
@pytest.mark.parametrize("B,K,Z", [(1, 1, 1), (7, 3, 5), (41, 3, 37), (64, 5, 20)])
def test_reparam_iw_bwd(any_kb, dtype, dreg, B, K, Z):
    rng = np.random.default_rng(2)
    dz = (rng.standard_normal((K * B, Z)) * 0.1).astype(dtype)
    eps = rng.standard_normal((K * B, Z)).astype(dtype)
    head = rng.standard_normal((B, 2 * Z)).astype(dtype)
    head[0, Z] = 25.0  # past the clamp: no logvar gradient there
    if B > 1:
        head[-1, 2 * Z - 1] = -40.0  # and below it
    sigma = np.exp(0.5 * np.clip(head[:, Z:], *LV)).astype(dtype)
    z = (np.tile(head[:, :Z], (K, 1)) + np.tile(sigma, (K, 1)) * eps).astype(dtype)
    wn = rng.uniform(0, 1, (K, B))
    wnorm = (wn / wn.sum(0)).reshape(-1).astype(dtype)
    e = lambda *s: np.full(s, np.nan, dtype)  # noqa: E731
    (o_r, _, _), (o_c, _, _) = any_kb.run("reparam_iw_bwd", [e(B, 2 * Z), e(2 * Z)], dz, eps,
                                          z, sigma, head, wnorm, 1.0 / B, dreg, *LV)
    for a, b in zip(o_c, o_r):  # sums over K samples (and B rows for the bias)
        np.testing.assert_allclose(a, b, rtol=1e-4 if dtype == "float32" else 1e-11,
                                   atol=1e-5 if dtype == "float32" else 1e-12)
    assert o_c[0][0, Z] == 0.0


# ------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("L,B,Z,first", [(1, 1, 1, 0), (1, 5, 3, 7), (3, 37, 20, 5 << 34),
                                         (1, 500, 40, 3)])
def test_normal_eps_matches_reference(kb, dtype, L, B, Z, first):
    """The same counter-based draws as the reference.  float32 noise is the same bits on
    every backend (a polynomial Box-Muller, every operation rounded on its own).  float64
    noise takes log, sqrt and cos from each backend's maths library (NumPy's SIMD loops,
    Numba's, CUDA's), so it agrees to a few ulp, not to the bit: rtol 1e-12."""
    key, row0 = (0x1234, 0xABCDEF), 2 ** 33 + 5
    (o_r, _, _), (o_c, _, _) = kb.run("normal_eps", [np.full((L, B, Z), np.nan, dtype)], key,
                                      row0, first)
    if dtype == "float32":
        np.testing.assert_array_equal(o_c[0].view(np.int32), o_r[0].view(np.int32))
    else:
        np.testing.assert_allclose(o_c[0], o_r[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_eps_is_addressed_by_row_and_element(any_kb, dtype):
    """A block of rows and samples drawn on its own equals, bit for bit, the same block of a
    larger draw on the same backend: what makes batching, chunking and sharding invisible
    in the noise."""
    key, Z = (7, 9), 3
    big = any_kb.call("normal_eps", [np.full((10, 8, Z), np.nan, dtype)], key, 0, 0)[0]
    small = any_kb.call("normal_eps", [np.full((4, 3, Z), np.nan, dtype)], key, 2, 3 * Z)[0]
    np.testing.assert_array_equal(small, big[3:7, 2:5])  # rows 2..4, samples 3..6
    again = any_kb.call("normal_eps", [np.full((10, 8, Z), np.nan, dtype)], key, 0, 0)[0]
    np.testing.assert_array_equal(again, big)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normal_eps_is_standard_normal_and_counter_based(dtype):
    a = np.empty((1, 100, 2000), dtype)
    ref.normal_eps(a, (1, 2), 0, 0)
    b = np.empty((1, 100, 2000), dtype)
    ref.normal_eps(b, (1, 2), 100, 0)  # the next 100 rows
    c = np.empty((1, 100, 2000), dtype)
    ref.normal_eps(c, (1, 2), 0, 1 << 34)  # the same rows, the next step
    for v in (a, b, c):
        assert abs(v.mean()) < 0.01 and abs(v.std() - 1) < 0.01
        assert abs((v > 1.96).mean() - 0.025) < 0.002  # the tail, not just two moments
    assert abs(np.corrcoef(a.ravel(), c.ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    d = np.empty((1, 7, 2000), dtype)
    ref.normal_eps(d, (1, 2), 3, 0)
    np.testing.assert_array_equal(d, a[:, 3:10])  # a row's noise is its own, however batched
    assert (np.abs(a) > 4.5).mean() < 2e-5 and np.abs(a).max() > 4  # the tails, both ways


def test_float32_noise_is_the_float64_noise_rounded_nearly():
    """The float32 Box-Muller draws what the float64 one does from the same words: the
    same noise, not another.  To 2e-5 for all but a few draws in a million: the float32
    uniform keeps 24 bits, so a radius near 0 moves in steps (up to sqrt(2 * 2^-24) =
    3.5e-4; the last 129 words give radius 0)."""
    a = np.empty((2, 300, 50), np.float32)
    b = np.empty((2, 300, 50), np.float64)
    ref.normal_eps(a, (5, 6), 11, 1 << 34)
    ref.normal_eps(b, (5, 6), 11, 1 << 34)
    d = np.abs(a - b)
    assert d.max() < 4e-4 and np.quantile(d, 0.9999) < 2e-5
    w = np.array([2**32 - 129, 2**32 - 1, 0, 2**31], np.uint32)
    r0, r1 = ref.box_muller_f32(w, w[::-1])
    assert np.isfinite(r0).all() and np.isfinite(r1).all() and r0[1] == 0 and r1[1] == 0


# -------------------------------------------------------------------------------- data
@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("data_dtype", ["uint8", "float32", "float64"])
def test_gather_rows(kb, out_dtype, data_dtype):
    """A copy and one multiplication (correctly rounded): the same bits everywhere."""
    rng = np.random.default_rng(17)
    X = rng.uniform(0, 255, (50, 37)).astype(data_dtype)
    idx = rng.permutation(50)[:13].astype(np.int64)
    scale = 1 / 255 if data_dtype == "uint8" else 1.0
    (o_r, _, _), (o_c, _, _) = kb.run("gather_rows", [np.full((13, 37), np.nan, out_dtype)], X,
                                      idx, scale)
    np.testing.assert_array_equal(o_c[0], o_r[0])
    np.testing.assert_array_equal(o_r[0],
                                  X[idx].astype(out_dtype) * np.dtype(out_dtype).type(scale))


@pytest.mark.parametrize("out_dtype", DTYPES)
@pytest.mark.parametrize("data_dtype", ["uint8", "float32", "float64"])
def test_scatter_rows(kb, out_dtype, data_dtype):
    rng = np.random.default_rng(17)
    X = rng.uniform(0, 255, (40, 29)).astype(data_dtype)
    idx = rng.permutation(40)[:11]
    scale = 1 / 255 if data_dtype == "uint8" else 1.0
    want = X[idx].astype(out_dtype) * np.dtype(out_dtype).type(scale)
    where = np.argsort(idx, kind="stable")  # read X in order, write each row to its place
    (s_r, _, _), (s_c, _, _) = kb.run("scatter_rows", [np.full((11, 29), np.nan, out_dtype)],
                                      where, X, idx[where], scale)
    np.testing.assert_array_equal(s_r[0], want)
    np.testing.assert_array_equal(s_c[0], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_binarize_rows(kb, dtype):
    rng = np.random.default_rng(18)
    x = rng.uniform(0, 1, (9, 31)).astype(dtype)
    u = rng.random((9, 31)).astype(dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("binarize_rows", [x], u)
    np.testing.assert_array_equal(o_c[0], o_r[0])
    np.testing.assert_array_equal(o_r[0], (u < x).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_data(any_kb, dtype):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (33, 70)).astype(dtype)
    assert any_kb.mod.check_data(any_kb.put(x), 0.0, 1.0) == (0, 0)
    x[1, 2], x[3, 4], x[5, 6], x[7, 8] = np.nan, np.inf, -0.5, 1.5
    assert any_kb.mod.check_data(any_kb.put(x), 0.0, 1.0) == (2, 2)
    assert any_kb.mod.check_data(any_kb.put(x), -np.inf, np.inf) == (2, 0)


# ---------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.1), (True, 0.05)])
@pytest.mark.parametrize("step", [1, 7])
def test_adam_step(kb, decoupled, wd, step, dtype):
    rng = np.random.default_rng(6)
    P = 1001
    p, g = rnd(rng, P, dtype), rnd(rng, P, dtype)
    m, v = rnd(rng, P, dtype, 0.1), np.abs(rnd(rng, P, dtype, 0.1))
    m[:5] = 1e-35  # a float32 denormal's neighbourhood in the input: read alike everywhere
    args = (g, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled, step, 0.5)
    (o_r, _, _), (o_c, _, _) = kb.run("adam_step", [p, m, v], *args)
    for name, a, b in zip("pmv", o_c, o_r):
        np.testing.assert_allclose(a, b, err_msg=name, **tol(dtype, scale=np.abs(b).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
@pytest.mark.parametrize("step", [1, 3, 4])
def test_sgd_step(kb, momentum, nesterov, step, dtype):
    rng = np.random.default_rng(7)
    P = 999
    p, g, buf = rnd(rng, P, dtype), rnd(rng, P, dtype), rnd(rng, P, dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("sgd_step", [p, buf], g, 0.01, momentum, nesterov, 1e-4,
                                      step, 1.0)
    for a, b in zip(o_c, o_r):
        np.testing.assert_allclose(a, b, **tol(dtype, scale=np.abs(b).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P", [1, 1001, 70_001])
def test_average_step(kb, P, dtype):
    skip_large_on_the_emulator(kb, P)
    rng = np.random.default_rng(9)
    avg, p = rnd(rng, P, dtype), rnd(rng, P, dtype)
    (o_r, _, _), (o_c, _, _) = kb.run("average_step", [avg], p, 1e-3)
    np.testing.assert_allclose(o_c[0], o_r[0], **tol(dtype, scale=np.abs(o_r[0]).max()))
    # the reference is the moving average's definition, in float64
    want = avg.astype(np.float64) + 1e-3 * (p.astype(np.float64) - avg)
    np.testing.assert_allclose(o_r[0], want, **tol(dtype, scale=np.abs(want).max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sq_norm(kb, dtype):
    g = np.random.default_rng(8).standard_normal(12345).astype(dtype)
    # accumulated in float64 by every backend: 12345 terms in another order, 1e-12
    assert kb.mod.sq_norm(kb.put(g)) == pytest.approx(ref.sq_norm(g), rel=1e-12)

#: (gradient size, clip norm): clipped, not clipped (scale exactly 1), a small gradient, a
#: zero gradient
CLIPS = [(12345, 3.0), (5001, 1e6), (70, 0.5), (1, 2.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,clip", CLIPS)
def test_clip_scale(kb, dtype, n, clip):
    """The norm and scale against reference.clip_scale, on buffers that start as the
    optimizer's do (scale 1, norm [0, skipped count])."""
    g = np.random.default_rng(n).standard_normal(n).astype(dtype) * 10
    if n == 1:
        g[:] = 0
    (o_ref, _, _), (o_b, _, _) = kb.run("clip_scale", [np.ones(1), np.array([0.0, 2.0])],
                                        g, clip)
    (scale, norm), (b_scale, b_norm) = o_ref, o_b
    np.testing.assert_allclose(b_norm, norm, rtol=1e-12, atol=0)
    np.testing.assert_allclose(b_scale, scale, rtol=1e-12, atol=0)
    assert norm[1] == 2.0  # a finite norm skips nothing
    assert (scale[0] == 1.0) == (clip >= norm[0] + 1e-6)
    assert scale[0] == min(1.0, clip / (norm[0] + 1e-6))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_scale_of_a_non_finite_gradient(any_kb, bad):
    """A non-finite norm: scale NaN (the update kernels then change nothing) and the
    skipped count goes up by one."""
    g = np.ones(300)
    g[17] = bad
    scale, norm = any_kb.call("clip_scale", [np.ones(1), np.array([0.0, 2.0])], g, 1.0)
    assert np.isnan(scale[0]) and norm[1] == 3.0, any_kb.name
    assert np.isnan(norm[0]) if np.isnan(bad) else np.isinf(norm[0])




def test_moments_of_zero_gradients_flush_instead_of_going_denormal(any_kb):
    """A dead unit's moments decay geometrically; below MOMENT_FLUSH they become exact zeros
    rather than float32 denormals (which slowed the whole step 3x).  From 1e-28, 300 steps
    of decay 0.9 would end at 2e-42, a denormal, without the flush (1500 steps from 1e-3
    would have underflowed to zero anyway); v (decay 0.999) stays normal."""
    P = 1003
    p, g = any_kb.put(np.zeros(P, np.float32)), any_kb.put(np.zeros(P, np.float32))
    m, v = any_kb.put(np.full(P, 1e-28, np.float32)), any_kb.put(np.full(P, 1e-28, np.float32))
    buf = any_kb.put(np.full(P, 1e-28, np.float32))
    assert 0 < 1e-28 * 0.9 ** 300 < np.finfo(np.float32).tiny  # what no flush would leave
    for s in range(2, 302):
        any_kb.mod.adam_step(p, m, v, g, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, s, 1.0)
        any_kb.mod.sgd_step(p, buf, g, 0.1, 0.9, False, 0.0, s, 1.0)
    m, v, buf = host(m), host(v), host(buf)
    tiny = np.finfo(np.float32).tiny
    for a in (m, v, buf):
        assert not np.any((a != 0) & (np.abs(a) < tiny))
    assert np.all(m == 0) and np.all(buf == 0) and np.all(v > 0)  # v decays slower: still normal


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("free_bits,weight", [(0.0, 0.0), (0.0, 3.0), (0.4, 5.0), (0.5, 7.0)])
def test_loss_stats(any_kb, dtype, free_bits, weight):
    """Accumulated in float64 by every backend: 256 terms in another order, rtol 1e-13."""
    rng = np.random.default_rng(12)
    rows = rng.uniform(50, 150, 256).astype(dtype)
    kl = rng.uniform(0, 20, 128).astype(dtype)
    kl_dim = rng.uniform(0, 1, 20).astype(dtype)
    none = np.empty(0, dtype)
    (o_r, _, _), (o_c, _, _) = any_kb.run("loss_stats", [np.zeros(3), np.array([1.0, -2.0, 0.5])],
                                          rows, kl, kl_dim, free_bits, 0.7, weight, none)
    np.testing.assert_allclose(o_c[0], o_r[0], rtol=1e-13)
    np.testing.assert_allclose(o_c[1], o_r[1], rtol=1e-13)
    recon, klm = rows.astype(np.float64).mean(), kl.astype(np.float64).mean()
    obj = np.maximum(kl_dim.astype(np.float64), free_bits).sum() if free_bits else klm
    np.testing.assert_allclose(o_c[0], [recon + 0.7 * obj, recon, klm], rtol=1e-13)
    np.testing.assert_allclose(o_c[1], np.array([1.0, -2.0, 0.5]) + weight * o_c[0],
                               rtol=1e-13)
    # weight 0 leaves the accumulator alone, even when the stats are not finite
    rows[3] = np.nan
    s, acc = any_kb.call("loss_stats", [np.zeros(3), np.zeros(3)], rows, kl, kl_dim, free_bits,
                         0.7, 0.0, none)
    assert np.isnan(s[0]) and (acc == 0).all()


# ----------------------------------------------------------------- the Numba maths itself
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
