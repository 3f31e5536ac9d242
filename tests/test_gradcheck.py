"""Central finite differences (float64) against the hand-written backward, on every
backend: the reference, cpu, cuda on the emulated device (and on a GPU, ``-m gpu``).

Every element of every parameter tensor is perturbed, for every activation, likelihood,
n_samples in {1, 3}, and beta / free-bits setting, and at the edges: logvar outside the
clamp range, learned Gaussian scales at their floor.  Tolerance: |fd - analytic| <=
1e-6 + 1e-5 * |analytic| with step h = 1e-6 (the truncation error of a central difference is
O(h^2 * f''') ~ 1e-12, rounding ~ 1e-16 / h ~ 1e-10, so the bound has ample room yet fails
on any real mistake, which shows up at the size of the gradient itself).

On the cuda backend (the emulated device runs one fiber per CUDA thread, ~20-40 ms a forward
pass) each test checks a few elements of every tensor (first, last and two in between) and
the grid of settings is covered by a diagonal: every activation, likelihood, n_samples and
beta / free-bits value at least once.  The cuda backward is also held against the reference
element by element (test_backend_contract.py), so its every element is covered there.
"""

import numpy as np
import pytest

from fastvae.backends.codes import LOGSCALE_FLOOR, LOGVAR_RANGE

from conftest import BACKEND_PARAMS, host, make_data, make_eps, make_model

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "elu", "softplus"]
LIKELIHOODS = [("bernoulli", 1.0), ("gaussian", 0.7), ("gaussian", "learned"),
               ("gaussian", "per_pixel")]
H = 1e-6


def _free_bits_between(model, x, eps):
    """A free-bits floor that lies between two per-dimension KLs, away from both, so that
    some dimensions are active and some are not and the objective is smooth nearby."""
    kd = np.sort(host(model.forward(x, eps).workspace.kl_dim))
    return float(0.5 * (kd[0] + kd[1]))


def _elements(n, device):
    """Which elements of a tensor of n to perturb: all, or on a device a few."""
    if not device or n <= 4:
        return np.arange(n)
    return np.unique([0, n // 3, (2 * n) // 3, n - 1])


def _fd_check(model, x, eps, atol=1e-6):
    grads = {k: host(v).copy() for k, v in model.loss_and_grad(x, eps)[1].items()}
    device = model.backend == "cuda"
    for name, p in model.parameters().items():
        flat_p = p.reshape(-1)
        idx = _elements(flat_p.size, device)
        fd = np.empty(idx.size)
        for j, i in enumerate(idx):
            old = float(flat_p[i])
            flat_p[i] = old + H
            up = float(model.forward(x, eps).loss)
            flat_p[i] = old - H
            down = float(model.forward(x, eps).loss)
            flat_p[i] = old
            fd[j] = (up - down) / (2 * H)
        np.testing.assert_allclose(grads[name].reshape(-1)[idx], fd, rtol=1e-5, atol=atol,
                                   err_msg=f"parameter {name}")


def _cases(grid):
    """Every case on numpy and cpu; on cuda (emulated, and the GPU) a diagonal of the grid
    that takes every value of every setting at least once."""
    import itertools
    full = list(itertools.product(*grid))
    n = max(len(g) for g in grid)
    diagonal = [tuple(g[i % len(g)] for g in grid) for i in range(n)]
    def name(b, c):
        return "-".join([b] + ["-".join(map(str, v)) if isinstance(v, tuple) else str(v)
                               for v in c])

    out = [pytest.param(b, *c, id=name(b, c)) for b in ("numpy", "cpu") for c in full]
    out += [pytest.param("cuda", *c, id=name("cuda", c)) for c in diagonal]
    out += [pytest.param("cuda-gpu", *c, marks=pytest.mark.gpu, id=name("cuda-gpu", c))
            for c in diagonal]
    return out


@pytest.mark.parametrize("backend,activation,lik,n_samples,beta_free_bits", _cases(
    [ACTIVATIONS, LIKELIHOODS, [1, 3], [(1.0, 0.0), (2.5, "between")]]), indirect=["backend"])
def test_finite_differences(backend, activation, lik, n_samples, beta_free_bits):
    beta, free_bits = beta_free_bits
    model = make_model(backend=backend, activation=activation, likelihood=lik[0],
                       obs_scale=lik[1], n_samples=n_samples, hidden=(5, 4), beta=beta)
    x = make_data(model)
    if lik[0] == "gaussian":
        x = x * 3 - 1  # Gaussian data need not lie in [0, 1]
    eps = make_eps(model, len(x))
    if free_bits == "between":
        model.free_bits = _free_bits_between(model, x, eps)
    _fd_check(model, x, eps)


@pytest.mark.parametrize("backend,beta_free_bits,n_samples", _cases(
    [[(0.0, 0.0), (2.5, 0.0), (1.0, "between"), (0.5, "between")], [1, 3]]),
    indirect=["backend"])
def test_finite_differences_beta_free_bits(backend, beta_free_bits, n_samples):
    beta, free_bits = beta_free_bits
    model = make_model(backend=backend, beta=beta, n_samples=n_samples, activation="tanh")
    x = make_data(model)
    eps = make_eps(model, len(x))
    if free_bits == "between":
        model.free_bits = _free_bits_between(model, x, eps)
        assert model.free_bits > 0
    _fd_check(model, x, eps)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
def test_logvar_outside_the_clamp_keeps_the_kl_pull(backend):
    """Outside the logvar range the clamp cuts the sample path; the KL term goes on with its
    slope at the edge, so its gradient still pulls logvar back.  Finite differences agree."""
    lo, hi = LOGVAR_RANGE
    model = make_model(backend=backend, activation="tanh", beta=1.5)
    Z = model.latent_dim
    hb = model.parameters()["enc.head.b"]
    hb[Z] = lo - 15.0  # logvar of dimension 0 far below the range, for every row
    x = make_data(model)
    eps = make_eps(model, len(x))
    g = {k: host(v) for k, v in model.loss_and_grad(x, eps)[1].items()}
    # the mean over rows of beta * 0.5 expm1(lo): only the KL's pull is left
    assert g["enc.head.b"][Z] == pytest.approx(1.5 * 0.5 * np.expm1(lo), rel=1e-12)
    assert np.all(g["enc.head.b"][Z + 1:] != 0.0)
    _fd_check(model, x, eps)
    # above the range the KL is huge (2.4e8 per row at the edge): check its slope alone,
    # where the loss is linear in the bias (a wide step loses no precision)
    hb[Z] = 0.0
    hb[Z + 1] = hi + 0.5
    g = {k: host(v) for k, v in model.loss_and_grad(x, eps)[1].items()}
    assert g["enc.head.b"][Z + 1] == pytest.approx(1.5 * 0.5 * np.expm1(hi), rel=1e-10)
    h = 1e-2
    hb[Z + 1] = hi + 0.5 + h
    up = float(model.forward(x, eps).loss)
    hb[Z + 1] = hi + 0.5 - h
    down = float(model.forward(x, eps).loss)
    assert (up - down) / (2 * h) == pytest.approx(g["enc.head.b"][Z + 1], rel=1e-8)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("obs_scale", ["learned", "per_pixel"])
def test_learned_scale_at_its_floor(backend, obs_scale):
    """A learned log-scale far below its soft floor: the scale in use sits at the floor, its
    gradient (through the floor's sigmoid) is small but exact.  The loss is ~1e5 here, so
    the finite differences carry ~1e-5 of rounding: the tolerance scales with the loss."""
    model = make_model(backend=backend, activation="tanh", likelihood="gaussian",
                       obs_scale=obs_scale)
    model.parameters()["dec.logscale"][...] = LOGSCALE_FLOOR - 3.0
    ls = host(model.obs_logscale())
    assert np.all((ls > LOGSCALE_FLOOR) & (ls < LOGSCALE_FLOOR + 0.05))
    x = make_data(model) * 3 - 1
    eps = make_eps(model, len(x))
    loss = float(model.forward(x, eps).loss)
    assert loss > 1e4
    _fd_check(model, x, eps, atol=1e-10 * loss)
