"""precision="bf16": the rounding, the products on every backend, the model's gradients
against autograd with the same rounding, the errors, and checkpoints (float32 masters)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fastvae
from fastvae import VAE
from fastvae.backends import cpu as CPU
from fastvae.backends import cuda as C
from fastvae.backends import reference as R
from fastvae.backends.cpu import onednn
from fastvae.backends.reference_bf16 import widen

import torch_ref
from cuda_helpers import emu, emu_library  # noqa: F401  (fixtures)

CPU_BF16 = CPU.bf16_support()
#: every product on bf16 operands, however small (the tests' models are small)
ALL = (0, 0)
needs_cpu_bf16 = pytest.mark.skipif(CPU_BF16 is not None, reason=str(CPU_BF16))


def special_and_random(n=20000, seed=0):
    """float32 values over the whole range, with the cases rounding gets wrong: ties (even
    and odd), values just past a tie, the largest finite values, subnormals, signed zeros,
    infinities and NaNs with payloads."""
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2 ** 16, 64, dtype=np.uint32) << 16) | np.uint32(0x8000)
    near = np.concatenate([ties + 1, ties - 1])
    special = np.array([0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x00000001, 0x80008000,
                        0x00018000, 0x0, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                        0x7F800001, 0xFFFFFFFF, 0x7FFF8000, 0x3F808000, 0x3F818000],
                       dtype=np.uint32)
    return np.concatenate([bits, ties, near, special]).view(np.float32)


def torch_bits(x):
    return torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def test_rounding_is_nearest_even_as_torch_does_it_and_nan_stays_nan():
    x = special_and_random()
    got = np.empty(x.shape, np.uint16)
    R.to_bf16(got, x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], torch_bits(x)[~nan])
    back = widen(got)
    assert np.isnan(back[nan]).all() and not np.isnan(back[~nan]).any()
    assert (np.signbit(back[nan]) == np.signbit(x[nan])).all()
    # ties go to the even neighbour (the tie above the largest bf16, 0x7F7F, to infinity)
    one = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.39e38, 3.3961776e38], np.float32)
    R.to_bf16(got[:4], one)
    np.testing.assert_array_equal(widen(got[:4]), np.array([1.0, 1 + 2 ** -6, 3.3895314e38, np.inf], np.float32))


def test_cpu_rounding_is_the_reference_bit_for_bit():
    x = special_and_random(seed=1).reshape(-1, 7)[:2000]
    want, got = np.empty(x.shape, np.uint16), np.ones(x.shape, np.uint16)
    R.to_bf16(want, x)
    CPU.to_bf16(got, x)
    np.testing.assert_array_equal(got, want)


def products(rng, M, K, N, trans_a, trans_b):
    a = rng.standard_normal((K, M) if trans_a else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N), dtype=np.float32)
    a16, b16 = np.empty(a.shape, np.uint16), np.empty(b.shape, np.uint16)
    R.to_bf16(a16, a)
    R.to_bf16(b16, b)
    A, B = widen(a16).astype(np.float64), widen(b16).astype(np.float64)
    exact = (A.T if trans_a else A) @ (B.T if trans_b else B)
    bound = (np.abs(A.T if trans_a else A) @ np.abs(B.T if trans_b else B)) * K * 2.0 ** -23
    unrounded = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    return a16, b16, exact, bound, unrounded


SHAPES = [(64, 300, 40, False, False), (33, 17, 65, True, False), (20, 128, 31, False, True),
          (1, 5, 1, True, True)]


@pytest.mark.parametrize("M,K,N,ta,tb", SHAPES)
def test_reference_product_is_the_exact_product_of_the_rounded_operands(M, K, N, ta, tb):
    a16, b16, exact, bound, unrounded = products(np.random.default_rng(2), M, K, N, ta, tb)
    out = np.empty((M, N), np.float32)
    R.matmul_bf16(out, a16, b16, ta, tb)
    assert (np.abs(out - exact) <= bound + 1e-30).all()


@needs_cpu_bf16
@pytest.mark.parametrize("M,K,N,ta,tb", SHAPES + [(512, 784, 400, False, False),
                                                  (784, 512, 400, True, False)])
def test_cpu_product_is_the_exact_product_of_the_rounded_operands(M, K, N, ta, tb):
    a16, b16, exact, bound, unrounded = products(np.random.default_rng(3), M, K, N, ta, tb)
    out = np.full((M, N), np.nan, np.float32)
    CPU.matmul_bf16(out, a16, b16, ta, tb)
    assert (np.abs(out - exact) <= bound + 1e-30).all()
    if K > 100:  # the operands really were rounded: far from the product of the originals
        assert np.abs(out - unrounded).max() > 20 * np.abs(out - exact).max()


def test_cpu_product_of_empty_shapes():
    out = np.ones((3, 4), np.float32)
    CPU.matmul_bf16(out, np.zeros((3, 0), np.uint16), np.zeros((0, 4), np.uint16))
    assert (out == 0).all()
    with pytest.raises(ValueError, match="do not agree"):
        CPU.matmul_bf16(out, np.zeros((3, 2), np.uint16), np.zeros((3, 4), np.uint16))


@pytest.mark.parametrize("where", ["numpy", "cpu", "emulated"])
@pytest.mark.parametrize("M,K,N,ta,tb", SHAPES + [(0, 3, 4, False, False),
                                                  (3, 0, 4, False, True)])
def test_a_bf16_models_float32_products_are_float32_products(where, M, K, N, ta, tb, request):
    """matmul_f32_beside_bf16 (the products the bf16 rule keeps in float32): the float32
    product of the operands as they are, within float32 summation error, on every backend
    (the cpu backend's runs on oneDNN, beside its bf16 products)."""
    if where == "cpu" and CPU_BF16 is not None:
        pytest.skip(CPU_BF16)
    bk = {"numpy": R, "cpu": CPU}.get(where)
    xp = np
    if where == "emulated":
        xp, bk = request.getfixturevalue("emu").xp, C
    rng = np.random.default_rng(9)
    a = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
    A, B = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
    exact, bound = A @ B, (np.abs(A) @ np.abs(B)) * max(K, 1) * 2.0 ** -22
    out = xp.asarray(np.full((M, N), np.nan, np.float32))
    bk.matmul_f32_beside_bf16(out, xp.asarray(a), xp.asarray(b), ta, tb)
    got = bk.to_numpy(out)
    assert (np.abs(got - exact) <= bound + 1e-30).all()
    if where == "cpu":
        with pytest.raises(ValueError, match="do not agree"):
            CPU.matmul_f32_beside_bf16(np.empty((3, 4), np.float32),
                                       np.zeros((3, 2), np.float32),
                                       np.zeros((3, 4), np.float32))
        with pytest.raises(TypeError, match="must be float32"):
            CPU.matmul_f32_beside_bf16(np.empty((3, 4), np.float32),
                                       np.zeros((3, 2)), np.zeros((2, 4)))
        with pytest.raises(TypeError, match="must be uint16"):
            CPU.matmul_bf16(np.empty((3, 4), np.float32), np.zeros((3, 2), np.float32),
                            np.zeros((2, 4), np.float32))


def test_cuda_rounding_and_product_on_the_emulated_device(emu):
    x = special_and_random(seed=4)[:5000]
    want = np.empty(x.shape, np.uint16)
    R.to_bf16(want, x)
    got = emu.xp.asarray(np.zeros(x.shape, np.uint16))
    C.to_bf16(got, emu.xp.asarray(x))
    np.testing.assert_array_equal(C.to_numpy(got), want)
    for M, K, N, ta, tb in SHAPES:
        a16, b16, exact, bound, _ = products(np.random.default_rng(5), M, K, N, ta, tb)
        out = emu.xp.asarray(np.full((M, N), np.nan, np.float32))
        n = emu.fake_cublas.gemms
        C.matmul_bf16(out, emu.xp.asarray(a16), emu.xp.asarray(b16), ta, tb)
        assert emu.fake_cublas.gemms == n + 1
        assert (np.abs(C.to_numpy(out) - exact) <= bound + 1e-30).all()


def test_cuda_refuses_bf16_below_compute_capability_8(emu, monkeypatch):
    assert C.bf16_support() is None
    monkeypatch.setattr(emu, "compute_capability", "75")
    with pytest.raises(RuntimeError, match="compute capability 8.0 or more.*7.5"):
        VAE(20, (8,), 2, backend="cuda", precision="bf16")


def batch(rng, B=24, D=30):
    return (rng.random((B, D)) < 0.4).astype(np.float32)


def grads_of(model, x, eps):
    loss, g = model.loss_and_grad(x, eps)
    return loss, {k: np.array(v.get() if hasattr(v, "get") else v, dtype=np.float64)
                  for k, v in g.items()}


@pytest.mark.parametrize("where", ["numpy", "cpu", "emulated"])
@pytest.mark.parametrize("arch", [dict(hidden=(40, 24), latent_dim=6),
                                  dict(hidden=(), latent_dim=5, activation="tanh")])
def test_gradients_are_autograds_with_the_same_rounding(where, arch, request):
    """Every product of forward and backward reads bf16 operands: the loss and every gradient
    match autograd on products of rounded operands far more closely than the full-precision
    model does (which shows the rounding is where the test says it is)."""
    if where == "cpu" and CPU_BF16 is not None:
        pytest.skip(CPU_BF16)
    backend = where
    if where == "emulated":
        request.getfixturevalue("emu")
        backend = "cuda"
    rng = np.random.default_rng(7)
    x = batch(rng)
    model = VAE(30, seed=3, backend=backend, precision="bf16", bf16_rule=ALL, **arch)
    eps = rng.standard_normal((24, model.latent_dim)).astype(np.float32)
    loss, got = grads_of(model, model.kernels.asarray(x), model.kernels.asarray(eps))
    want_loss, want = torch_ref.loss_and_grads(model, x, eps[None], bf16=True)
    full = VAE(30, seed=3, backend="numpy", **arch)
    _, plain = grads_of(full, x, eps)
    assert abs(loss - want_loss) <= 1e-5 * abs(want_loss)
    for k, w in want.items():
        err = np.abs(got[k] - w).max()
        scale = np.abs(w).max() + 1e-12
        assert err <= 2e-3 * scale, (k, err, scale)
        if "W" in k:
            assert np.abs(plain[k] - w).max() > 5 * err, k


@pytest.mark.parametrize("inject", [False, True])
def test_a_block_model_in_bf16_matches_the_reference_backend(inject):
    """Dense and categorical inputs, conditions and missing cells: the products with a
    weight's first rows (dense inputs, z's rows of [z | c], and with injected conditions
    h's rows of [h | c]) read the first rows of its shadow; the categorical rows stay a
    float32 gather."""
    from fastvae.core.blocks import Categorical, Gaussian
    rng = np.random.default_rng(11)
    N = 40
    X = np.column_stack([rng.standard_normal((N, 3)), rng.integers(0, 4, N)]).astype(np.float32)
    X[rng.random((N, 4)) < 0.1] = np.nan
    cond = np.eye(2, dtype=np.float32)[rng.integers(0, 2, N)]
    kw = dict(likelihood=[Gaussian(3), Categorical(4)], hidden=(16,), latent_dim=3,
              n_conditions=2, missing="mask", seed=2, inject_conditions=inject)
    rows = VAE(**kw).compose(X, conditions=cond)
    eps = rng.standard_normal((N, 3)).astype(np.float32)
    res = {}
    for be, prec in [("numpy", "bf16"), ("numpy", "full")] + (
            [("cpu", "bf16")] if CPU_BF16 is None else []):
        res[be, prec] = grads_of(VAE(backend=be, precision=prec, bf16_rule=ALL, **kw),
                                 rows, eps)
    (l0, g0), (lf, gf) = res["numpy", "bf16"], res["numpy", "full"]
    assert abs(l0 - lf) > 1e-7 * abs(lf)  # bf16 changes the numbers
    for key in [k for k in res if k[0] == "cpu"]:
        loss, g = res[key]
        assert abs(loss - l0) <= 1e-5 * abs(l0)
        for k in g0:
            assert np.abs(g[k] - g0[k]).max() <= 1e-4 * (np.abs(g0[k]).max() + 1e-12), k


def test_precision_errors_name_the_problem(monkeypatch):
    with pytest.raises(ValueError, match="precision must be 'full'.*or 'bf16'"):
        VAE(10, precision="fp16")
    with pytest.raises(ValueError, match="needs dtype='float32'"):
        VAE(10, dtype="float64", precision="bf16", backend="numpy")
    monkeypatch.setattr(onednn, "cpu_bf16_flags", lambda: set())
    with pytest.raises(RuntimeError, match="neither AVX512_BF16 nor AMX.*precision='full'"):
        VAE(10, backend="cpu", precision="bf16")


def test_a_missing_onednn_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setattr(onednn, "cpu_bf16_flags", lambda: {"avx512_bf16"})
    monkeypatch.setattr(onednn, "_state", {})
    monkeypatch.setenv(onednn.ENV_LIB, "/nonexistent/libdnnl.so.3")
    with pytest.raises(RuntimeError, match=r"needs oneDNN.*fastvae\[bf16\]"):
        VAE(10, backend="cpu", precision="bf16")


def test_bf16_checkpoints_resume_exactly_and_load_at_full_precision(tmp_path):
    backend = "cpu" if CPU_BF16 is None else "numpy"
    rng = np.random.default_rng(0)
    X = batch(rng, 96, 30)

    def fresh():
        return VAE(30, (16,), 4, seed=5, backend=backend, precision="bf16", bf16_rule=ALL)

    whole = fresh()
    whole.fit(X, epochs=3, batch_size=32, lr=3e-3, progress=False)
    half = fresh()
    half.fit(X, epochs=2, batch_size=32, lr=3e-3, progress=False)
    path = tmp_path / "m.npz"
    half.save(path)
    resumed = fastvae.load(path, backend=backend)
    assert resumed.precision == "bf16"
    resumed.fit(X, epochs=1, progress=False)
    for k, v in whole.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v)
    assert all(v.dtype == np.float32 for v in resumed.parameters().values())
    plain = fastvae.load(path, backend="numpy", precision="full")
    assert plain.precision == "full"
    for k, v in half.parameters().items():
        np.testing.assert_array_equal(plain.parameters()[k], v)
    # full-precision products of the same float32 masters: close, not equal
    a, b = half.elbo(X[:64], seed=1).neg_elbo, plain.elbo(X[:64], seed=1).neg_elbo
    assert a != b and abs(a - b) < 0.05 * abs(b)


def test_a_bf16_checkpoint_where_bf16_cannot_run_says_how_to_load_it(tmp_path, monkeypatch):
    m = VAE(10, (4,), 2, backend="numpy", precision="bf16")
    m.save(tmp_path / "m.npz")
    monkeypatch.setattr(onednn, "cpu_bf16_flags", lambda: set())
    with pytest.raises(RuntimeError, match=r"m\.npz.*precision='full'"):
        fastvae.load(tmp_path / "m.npz", backend="cpu")
    assert fastvae.load(tmp_path / "m.npz", backend="cpu", precision="full").precision == "full"


def test_shadows_follow_the_weights_and_the_data_across_passes():
    """Steps, an evaluation pass between them, then a gradient on a new batch: every
    product reads the current weights and rows (autograd with the same rounding at the
    current parameters), never a shadow left from an earlier pass."""
    rng = np.random.default_rng(21)
    model = VAE(30, (24,), 4, seed=6, backend="numpy", precision="bf16", bf16_rule=ALL)
    opt = fastvae.Adam(model, lr=1e-2)
    for _ in range(3):
        model.train_step(batch(rng), opt)
    model.elbo(batch(rng, 40), seed=3)           # an evaluation pass of another shape
    cache = model.forward(batch(rng))            # a training forward, then an eval one
    model.forward(batch(rng), grad=False)
    model.backward(cache)
    opt.step()
    x = batch(rng)
    eps = rng.standard_normal((24, 4)).astype(np.float32)
    loss, got = grads_of(model, x, eps)
    want_loss, want = torch_ref.loss_and_grads(model, x, eps[None], bf16=True)
    assert abs(loss - want_loss) <= 1e-5 * abs(want_loss)
    for k, w in want.items():
        assert np.abs(got[k] - w).max() <= 2e-3 * (np.abs(w).max() + 1e-12), k


def test_switching_precision_makes_every_shadow_stale():
    rng = np.random.default_rng(22)
    model = VAE(30, (24,), 4, seed=6, backend="numpy", precision="bf16", bf16_rule=ALL)
    cache = model.forward(batch(rng))
    assert cache.workspace.half_fresh  # the forward's operands have shadows
    model.precision = "full"
    assert not cache.workspace.half_fresh
    model.precision = "bf16"
    x = batch(rng)
    eps = rng.standard_normal((24, 4)).astype(np.float32)
    loss, got = grads_of(model, x, eps)
    fresh = VAE(30, (24,), 4, seed=6, backend="numpy", precision="bf16", bf16_rule=ALL)
    want_loss, want = grads_of(fresh, x, eps)
    assert loss == want_loss
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_a_bf16_model_pickles_and_continues_exactly():
    import pickle
    rng = np.random.default_rng(23)
    X = batch(rng, 96, 30)
    a = VAE(30, (16,), 4, seed=8, backend="numpy", precision="bf16", beta=0.5,
            activation="tanh", bf16_rule=ALL)
    a.fit(X, epochs=1, batch_size=32, lr=3e-3, progress=False)
    b = pickle.loads(pickle.dumps(a))
    assert b.precision == "bf16" and b.config() == a.config()
    for m in (a, b):
        m.fit(X, epochs=1, progress=False)
    for k, v in a.parameters().items():
        np.testing.assert_array_equal(b.parameters()[k], v)


def test_bf16_goes_where_the_rule_says_it_pays():
    """The default rule (precision.BF16_RULE) reads shapes alone: a product of fewer
    multiply-adds, or summing fewer terms (a weight gradient over a small batch), runs in
    float32 on its float32 operands, and an operand only such products read gets no
    shadow.  A model whose products are all below it computes exactly what the full
    precision model does; one whose products are all above, what bf16_rule=(0, 0) does."""
    from fastvae.core.precision import BF16_RULE, Products
    rng = np.random.default_rng(31)
    x = batch(rng)
    eps = rng.standard_normal((24, 4)).astype(np.float32)
    small = VAE(30, (24,), 4, seed=6, backend="numpy", precision="bf16")
    assert small.config()["bf16_rule"] == list(BF16_RULE)
    full = VAE(30, (24,), 4, seed=6, backend="numpy")
    (l1, g1), (l2, g2) = grads_of(small, x, eps), grads_of(full, x, eps)
    assert l1 == l2 and all(np.array_equal(g1[k], g2[k]) for k in g2)
    assert not small.forward(x).workspace.half_fresh
    a = VAE(30, (24,), 4, seed=6, backend="numpy", precision="bf16", bf16_rule=(1, 1))
    b = VAE(30, (24,), 4, seed=6, backend="numpy", precision="bf16", bf16_rule=ALL)
    (la, ga), (lb, gb) = grads_of(a, x, eps), grads_of(b, x, eps)
    assert la == lb and all(np.array_equal(ga[k], gb[k]) for k in gb)
    rule = (24 * 24 * 30, 24)
    mm = Products(small.kernels, small._params, "bf16", rule)
    assert mm.pays(24, 24, 30) and not mm.pays(24, 24, 29)  # multiply-adds
    assert mm.pays(100, 100, 24) and not mm.pays(100, 100, 23)  # terms summed
    assert not Products(small.kernels, small._params, "full", rule).pays(10**4, 10**4, 10**4)


def test_the_bf16_rule_is_saved_with_the_run(tmp_path):
    """The rule travels with the model (save, load, pickle, resume), so a run resumed on
    another machine makes the same choices; a bf16 checkpoint from before the rule ran
    every product in bf16 and loads so; a bad rule is named."""
    import pickle
    from fastvae.training.snapshot import saved_config
    m = VAE(30, (16,), 4, seed=5, backend="numpy", precision="bf16", bf16_rule=(1000, 8))
    m.save(tmp_path / "m.npz")
    back = fastvae.load(tmp_path / "m.npz", backend="numpy")
    assert back.config()["bf16_rule"] == [1000, 8] and back._mm.rule == (1000, 8)
    assert pickle.loads(pickle.dumps(m))._mm.rule == (1000, 8)
    assert VAE(30, precision="full").config()["bf16_rule"] is None
    old = m.config()
    del old["bf16_rule"]
    assert saved_config({"config": old})["bf16_rule"] == [0, 0]
    for bad in [(1,), (-1, 2), ("a", 2), (1.5, 2), (float("inf"), 1)]:
        with pytest.raises(ValueError, match="bf16_rule must be"):
            VAE(30, backend="numpy", precision="bf16", bf16_rule=bad)
