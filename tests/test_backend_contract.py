"""The model on every backend against the reference backend, step by step: a whole training
step (loss, per-row terms, every gradient), the importance-weighted estimate, and the noise
(reproducible, the same for a row however the batch is split, the reference's on every
backend).  Backends: cpu, cuda on the emulated device, cuda on a GPU (``-m gpu``).

Tolerances: float64 rtol 1e-10 (the same formulas; summation order and BLAS kernels
differ); float32 rtol 2e-4 (a whole step: float32 sums of a few hundred terms through four
layers and their gradients); gradients relative to each tensor's largest entry (an entry
near zero is a cancellation whose own relative error means nothing).
"""
from __future__ import annotations

import numpy as np
import pytest

import fastvae
from fastvae.backends import reference as R

from conftest import DEVICE_BACKENDS, host, make_data
from tolerances import assert_close


CONFIGS = [
    dict(),
    dict(hidden=(9, 6), activation="tanh", n_samples=3, free_bits=0.05),
    dict(likelihood="gaussian", obs_scale="learned", activation="elu"),
    dict(likelihood="gaussian", obs_scale="per_pixel", activation="softplus", beta=0.5),
    dict(objective="iwae", n_samples=3, hidden=(9, 6)),
    dict(objective="iwae-dreg", n_samples=2, likelihood="gaussian", obs_scale="learned"),
]


def pair(backend, dtype, cfg=None, **kw):
    cfg = dict(cfg or {}, **kw)
    cfg.setdefault("hidden", (33,))
    args = dict(input_dim=37, latent_dim=5, dtype=dtype, seed=4, **cfg)
    return fastvae.VAE(backend="numpy", **args), fastvae.VAE(backend=backend, **args)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-10), ("float32", 2e-4)])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["canonical", "deep-L3-freebits", "sigma-vae",
                                              "per-pixel", "iwae-K3", "dreg-K2-sigma"])
def test_training_step_matches_reference(backend, dtype, rtol, cfg):
    ref, other = pair(backend, dtype, cfg=cfg)
    x = make_data(ref, B=40)
    eps = np.random.default_rng(2).standard_normal((ref.n_samples, 40, 5)).astype(dtype)
    c_ref = ref.forward(x, eps)
    c_oth = other.forward(x, eps)
    assert float(c_oth.loss) == pytest.approx(c_ref.loss, rel=rtol)
    assert float(c_oth.recon_mean) == pytest.approx(c_ref.recon_mean, rel=rtol)
    assert float(c_oth.kl_mean) == pytest.approx(c_ref.kl_mean, rel=rtol)
    np.testing.assert_allclose(host(c_oth.recon), c_ref.recon, rtol=rtol)
    np.testing.assert_allclose(host(c_oth.kl), c_ref.kl, rtol=rtol, atol=rtol)
    g_ref, g_oth = ref.backward(c_ref), other.backward(c_oth)
    for name in g_ref:
        scale = np.abs(g_ref[name]).max() + 1e-30
        np.testing.assert_allclose(host(g_oth[name]) / scale, g_ref[name] / scale,
                                   rtol=0, atol=rtol * 10, err_msg=name)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS, indirect=True)
def test_log_likelihood_matches_reference(backend):
    """The importance-weighted estimate in batches of 5 rows against the reference's in one
    batch (other BLAS shapes too: the float64 tolerance, 1e-10)."""
    args = dict(input_dim=30, hidden=(20,), latent_dim=4, dtype="float64", seed=3)
    ref, other = fastvae.VAE(backend="numpy", **args), fastvae.VAE(backend=backend, **args)
    x = make_data(ref, B=11)
    np.testing.assert_allclose(host(other.log_likelihood(x, k=40, batch_size=5).per_row),
                               ref.log_likelihood(x, k=40).per_row, rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_noise_is_reproducible_and_independent_of_the_batch_split(backend, dtype):
    """Same seed, same draws; the counter moves on with each training pass; a row's noise
    is the same whether it is drawn in the whole batch or in a part of it (bit for bit, on
    one backend); and it is the reference's noise on every backend (to the cross-backend
    tolerance: the Box-Muller log/cos come from different maths libraries)."""
    a = fastvae.VAE(30, hidden=(20,), latent_dim=4, n_samples=2, backend=backend, seed=5,
                    dtype=dtype)
    b = fastvae.VAE(30, hidden=(20,), latent_dim=4, n_samples=2, backend=backend, seed=5,
                    dtype=dtype)
    x = make_data(a, B=8)
    e1 = host(a.forward(x).eps).copy()
    e2 = host(a.forward(x).eps).copy()
    np.testing.assert_array_equal(host(b.forward(x).eps), e1)  # same seed, same draws
    assert not np.allclose(e1, e2)                              # the counter moved on
    assert a.noise.counter == 2 and e1.shape == (2, 8, 4)
    # rows 3..7 of the first draw, drawn on their own: a split batch (MPI ranks, chunks)
    part = a.kernels.asarray(np.full((2, 5, 4), np.nan, dtype))
    split = fastvae.core.noise.Noise(a.noise.key, 0)
    split.draw(a.kernels, part, row0=3)
    np.testing.assert_array_equal(host(part), e1[:, 3:])
    want = np.empty((2, 8, 4), dtype)
    fastvae.core.noise.Noise(a.noise.key, 0).draw(R, want)
    assert_close(e1, want)


@pytest.mark.parametrize("bad", [np.nan, 1.7])
def test_estimates_refuse_bad_data_on_every_backend(backend, bad):
    """The input check of a GPU pass is only read with its loss, which the estimates never
    read: they check their data on the host, once, like fit."""
    m = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend=backend, seed=1)
    X = np.random.default_rng(0).uniform(0, 1, (20, 30)).astype(np.float32)
    X[3, 4] = bad
    for estimate in (lambda: m.elbo(X), lambda: m.log_likelihood(X, k=4)):
        with pytest.raises(ValueError, match="NaN or infinite|needs \\[0, 1\\]"):
            estimate()


def test_fit_reports_any_non_finite_gradient_norm_between_its_checks(backend):
    """One step of ten gets an infinite gradient (its loss stays finite): on the cpu fit
    raises at that step; on a GPU the update is skipped on the device, counted there, and
    the next check reports it (it looked only at the latest norm before)."""
    X = np.random.default_rng(0).uniform(0, 1, (320, 30))
    m = fastvae.VAE(30, hidden=(20,), latent_dim=4, backend=backend, dtype="float64", seed=1)
    calls, backward = [0], m.backward

    def bad(cache):
        g = backward(cache)
        calls[0] += 1
        if calls[0] == 3:
            g.flat[5] = np.inf
        return g

    m.backward = bad
    with pytest.raises(FloatingPointError, match="gradient norm"):
        m.fit(X, epochs=1, batch_size=32, progress=False, clip_norm=1.0)




@pytest.mark.parametrize("dtype,data_dtype", [("float64", "float32"), ("float32", "float64")])
def test_forward_takes_host_data_of_another_float_dtype(backend, dtype, data_dtype):
    """Data in another float dtype than the model's is converted, as fit converts it."""
    m = fastvae.VAE(30, hidden=(16,), latent_dim=4, backend=backend, dtype=dtype, seed=1)
    # float32 values: the same numbers in either dtype, so the losses must be the same bits
    x = np.random.default_rng(0).uniform(0.05, 0.95, (8, 30)).astype(np.float32)
    eps = np.random.default_rng(1).standard_normal((8, 4))
    want = float(m.forward(x.astype(dtype), eps).loss)
    assert float(m.forward(x.astype(data_dtype), eps).loss) == want
