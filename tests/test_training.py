"""Training behaviour: every backend tracks the reference, optimizers match torch.optim, several latent
samples average correctly, runs are deterministic, and a steady-state step allocates nothing."""
import tracemalloc

import numpy as np
import pytest

import fastvae
from fastvae.backends.cpu import pool
from fastvae.backends import reference as ref

from conftest import (BACKEND_PARAMS, DEVICE_BACKENDS, host, make_data, make_eps,
                      make_model)


def _train(backend, steps, dtype="float32", opt_cls=fastvae.Adam, **kw):
    model = fastvae.VAE(64, hidden=(48,), latent_dim=6, dtype=dtype, backend=backend, seed=11, **kw)
    rng = np.random.default_rng(12)
    data = (rng.random((256, 64)) < rng.random(64)).astype(dtype)  # binary, structured
    opt = opt_cls(model)
    losses = []
    for s in range(steps):
        x = data[(s * 32) % 256:(s * 32) % 256 + 32]
        losses.append(float(model.train_step(x, opt)))
    return model, np.array(losses)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS, indirect=True)
def test_backend_tracks_reference_over_100_adam_steps(backend):
    """Same seed, same noise, float32: loss curves agree to 1e-3 relative (float32 rounding
    differs, BLAS against BLAS or cuBLAS, and the runs drift apart slowly) and the
    parameters to 2e-3; float64: 1e-9."""
    ref_m, ref32 = _train("numpy", 100)
    m32, got32 = _train(backend, 100)
    np.testing.assert_allclose(got32, ref32, rtol=1e-3)
    assert got32[-10:].mean() < got32[:10].mean() - 5  # and it learned something
    np.testing.assert_allclose(host(m32.flat_params), ref_m.flat_params, atol=2e-3)
    _, ref64 = _train("numpy", 100, "float64")
    _, got64 = _train(backend, 100, "float64")
    np.testing.assert_allclose(got64, ref64, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_deterministic(backend):
    """Bit for bit: the same backend on the same machine makes the same calls."""
    m1, l1 = _train(backend, 20)
    m2, l2 = _train(backend, 20)
    assert np.array_equal(l1, l2)
    assert np.array_equal(host(m1.flat_params), host(m2.flat_params))


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=1e-2, weight_decay=0.01)),
                                     ("AdamW", dict(lr=1e-2, weight_decay=0.05)),
                                     ("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True,
                                                  weight_decay=1e-3))])
@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_optimizers_match_torch(name, kw, backend):
    """Five steps on fixed gradients: parameters equal torch.optim's to 1e-12 (float64)."""
    torch = pytest.importorskip("torch")
    model = make_model(backend=backend)
    rng = np.random.default_rng(3)
    tparams = [torch.tensor(host(v), requires_grad=True) for v in model.parameters().values()]
    topt = getattr(torch.optim, name)(tparams, **kw)
    opt = getattr(fastvae, name)(model, **kw)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in model.parameters().items()}
        for t, g in zip(tparams, grads.values()):
            t.grad = torch.tensor(g)
        topt.step()
        opt.step(grads)
    for t, (k, v) in zip(tparams, model.parameters().items()):
        np.testing.assert_allclose(host(v), t.detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=k)


def test_clip_by_global_norm_matches_torch():
    torch = pytest.importorskip("torch")
    model = make_model()
    rng = np.random.default_rng(4)
    grads = {k: 10 * rng.standard_normal(v.shape) for k, v in model.parameters().items()}
    tg = [torch.tensor(g) for g in grads.values()]
    norm = torch.nn.utils.get_total_norm(tg).item()
    opt = fastvae.SGD(model, lr=1.0, clip_norm=1.0)
    before = model.flat_params.copy()
    opt.step(grads)
    assert opt.last_grad_norm == pytest.approx(norm, rel=1e-12)
    step = before - model.flat_params
    assert np.sqrt((step ** 2).sum()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_several_samples_in_one_pass_equal_the_mean_of_separate_passes(backend):
    """L samples in one pass == the average of L one-sample gradients with the same eps."""
    many = make_model(backend=backend, n_samples=4, activation="tanh")
    x = make_data(many, B=5)
    eps = make_eps(many, 5)
    loss_many, g_many = many.loss_and_grad(x, eps)
    loss_many, g_many = float(loss_many), {k: host(v).copy() for k, v in g_many.items()}
    one = make_model(backend=backend, n_samples=1, activation="tanh")
    losses, sums = [], {k: 0 for k in g_many}
    for l in range(4):
        loss, g = one.loss_and_grad(x, eps[l])
        losses.append(float(loss))
        for k in sums:
            sums[k] = sums[k] + host(g[k])
    assert loss_many == pytest.approx(np.mean(losses), rel=1e-12)
    for k in g_many:
        np.testing.assert_allclose(g_many[k], sums[k] / 4, rtol=1e-10, atol=1e-14, err_msg=k)


def test_gradient_reaches_mu_and_sigma_through_saved_eps():
    """The learner's reference claims, on the kernel itself:
    dL/dmu = sum_l dL/dz_l + beta/B * mu and dL/dlogvar = 0.5 sigma sum_l dL/dz_l eps_l
    + beta/B * 0.5 (sigma^2 - 1).  With the KL weight at 0 only the sample path remains,
    with dz = 0 only the KL gradient."""
    rng = np.random.default_rng(0)
    B, Z, L = 3, 4, 2
    head = rng.standard_normal((B, 2 * Z))
    mu, lv, sg = np.empty((B, Z)), np.empty((B, Z)), np.empty((B, Z))
    z, kl, kld = np.empty((L * B, Z)), np.empty(B), np.empty(Z)
    eps = rng.standard_normal((L * B, Z))
    ref.reparam_kl_fwd(mu, lv, sg, z, kl, kld, head, np.zeros(2 * Z), eps, -30.0, 20.0)
    dz = rng.standard_normal((L * B, Z))
    dhead, dhb = np.empty((B, 2 * Z)), np.empty(2 * Z)
    ref.reparam_kl_bwd(dhead, dhb, dz, eps, mu, sg, head, kld, 0.0, 0.0, -30.0, 20.0)
    dz3, eps3 = dz.reshape(L, B, Z), eps.reshape(L, B, Z)
    np.testing.assert_allclose(dhead[:, :Z], dz3.sum(0))
    np.testing.assert_allclose(dhead[:, Z:], 0.5 * sg * (dz3 * eps3).sum(0))
    ref.reparam_kl_bwd(dhead, dhb, 0 * dz, eps, mu, sg, head, kld, 0.25, 0.0, -30.0, 20.0)
    np.testing.assert_allclose(dhead[:, :Z], 0.25 * mu)
    np.testing.assert_allclose(dhead[:, Z:], 0.25 * 0.5 * (sg ** 2 - 1))


class _KernelAllocations:
    """Wraps cpu kernels to count their calls and list the calls that allocated.

    Numba's runtime counts one allocation per array argument it unboxes, so each call must
    show exactly that many and no more: any array a kernel allocated inside would add to
    the count (tracemalloc does not see Numba's allocator).  The bookkeeping itself
    allocates nothing per clean call, so it does not show in tracemalloc's numbers."""

    def __init__(self, monkeypatch, names):
        from fastvae.backends import cpu
        from fastvae.backends.cpu import split
        self.calls = np.zeros(1, np.int64)
        self.offenders = []
        # one thread: Numba's allocation counter is global, so a chunk running on another
        # thread would count in this call's window (the chunks are the same for any count)
        monkeypatch.setitem(pool._pool, "n", 1)
        monkeypatch.setitem(pool._pool, "pool", None)
        serial = {n: m for m in (split._dense, split._lik, split._optim, split._reparam,
                                 split._data, split._blocks, split._bf16) for n in vars(m)}
        for name in names:
            if getattr(cpu, name) is getattr(split, name, None):
                # a kernel run on every core: its serial kernel, called once per chunk
                mod = serial[name]
                monkeypatch.setattr(mod, name, self._wrap(getattr(mod, name)))
            else:
                monkeypatch.setattr(cpu, name, self._wrap(getattr(cpu, name)))

    def _wrap(self, fn):
        from numba.core.runtime import rtsys

        def call(*args):
            before = rtsys.get_allocation_stats().alloc
            result = fn(*args)
            extra = rtsys.get_allocation_stats().alloc - before - sum(
                isinstance(a, np.ndarray) for a in args)
            self.calls += 1
            if extra:
                self.offenders.append((fn.__name__, extra))
            return result
        return call

    def clear(self):
        self.calls[...] = 0
        self.offenders.clear()


STEP_KERNELS = ("bias_act_fwd", "act_bias_bwd", "reparam_kl_fwd", "reparam_kl_bwd",
                "likelihood_fwd_bwd", "check_data", "adam_step")


def test_steady_state_step_allocates_nothing(monkeypatch):
    """After warm-up, a cpu training step allocates no arrays: NumPy buffers are traced by
    tracemalloc, Numba's by its runtime's counters."""
    from numba.core.runtime import _nrt_python
    extra = _KernelAllocations(monkeypatch, STEP_KERNELS)
    model = fastvae.VAE(784, backend="cpu", seed=0)
    x = np.random.default_rng(0).random((128, 784)).astype(np.float32)
    opt = fastvae.Adam(model)
    _nrt_python.memsys_enable_stats()
    try:
        for _ in range(3):
            model.train_step(x, opt)
        extra.clear()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(5):
            model.train_step(x, opt)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    finally:
        _nrt_python.memsys_disable_stats()
    smallest_buffer = 128 * 20 * 4  # the smallest activation array of this model
    assert peak < smallest_buffer, f"a training step allocated {peak} bytes"
    assert extra.calls[0] == 5 * 9  # every kernel call of the 9 in a step was seen
    assert extra.offenders == []


@pytest.mark.parametrize("data_kind", ["uint8", "memmap", "dynamic", "samples"])
def test_steady_state_fit_step_allocates_nothing(data_kind, monkeypatch, tmp_path):
    """fit itself, data path included: uint8 images gathered and scaled per batch, a
    memory-mapped .npy read in file order, dynamic binarization's draws; and with several
    latent samples per row (their mean).  Steps 10 to 30 of
    one epoch are measured (no epoch boundary, no validation inside)."""
    from numba.core.runtime import _nrt_python
    from fastvae import data
    rng = np.random.default_rng(0)
    # big enough for a (B,) float32 temporary (16 KB) to show above the kernels' chunk views
    B = 4096 if data_kind == "samples" else 64
    N = B * 31
    X = (rng.random((N, 784)) * 255).astype(np.uint8)
    fit_kw = {}
    if data_kind == "memmap":
        np.save(tmp_path / "x.npy", X)
        X, _ = data.load(tmp_path / "x.npy")
        assert isinstance(X.x, np.memmap)
    elif data_kind == "dynamic":
        fit_kw["binarize"] = "dynamic"
    kernels = STEP_KERNELS[:-2] + ("adam_step", {"memmap": "scatter_rows"}.get(data_kind,
                                                                               "gather_rows"))
    extra = _KernelAllocations(monkeypatch, kernels + (("binarize_rows",) if
                                                       data_kind == "dynamic" else ()))
    model = fastvae.VAE(784, hidden=(64,), latent_dim=8, backend="cpu", seed=0,
                        n_samples=3 if data_kind == "samples" else 1)
    calls, peak = [0], []
    forward = model.forward

    def measured(*a, **k):
        calls[0] += 1
        if calls[0] == 10:
            extra.clear()
            tracemalloc.start()
            peak.append(tracemalloc.get_traced_memory()[0])
        elif calls[0] == 30:
            peak[0] = tracemalloc.get_traced_memory()[1] - peak[0]
            tracemalloc.stop()
        return forward(*a, **k)

    model.forward = measured
    _nrt_python.memsys_enable_stats()
    try:
        model.fit(X, epochs=1, batch_size=B, progress=False, **fit_kw)
    finally:
        _nrt_python.memsys_disable_stats()
    # 20 steps: a few kB of Python objects at most (the views and argument tuples of the
    # kernels run in chunks, fastvae.backends.cpu.split), no (B, D) buffer (a uint8 batch
    # alone would be 50 KB, a float32 one 200 KB)
    assert peak[0] < 12288, f"20 fit steps allocated {peak[0]} bytes"
    assert extra.calls[0] >= 20 * 8 and extra.offenders == []


def test_encode_decode_sample_reconstruct_shapes():
    model = fastvae.VAE(30, hidden=(8,), latent_dim=3, backend="cpu")
    x = np.random.default_rng(0).random((5, 30)).astype(np.float32)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3)
    probs = model.decode(mu)
    assert probs.shape == (5, 30) and np.all((probs > 0) & (probs < 1))
    assert model.sample(7).shape == (7, 30)
    np.testing.assert_allclose(model.reconstruct(x), probs)
    cache = model.forward(x)
    np.testing.assert_allclose(cache.mu, mu, rtol=1e-6)
