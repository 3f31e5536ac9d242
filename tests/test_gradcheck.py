"""Central finite differences (float64, reference backend) against the hand-written backward.

Every element of every parameter tensor is perturbed, for every activation, likelihood,
n_samples in {1, 3}, and beta / free-bits setting.  Tolerance: |fd - analytic| <=
1e-6 + 1e-5 * |analytic| with step h = 1e-6 (the truncation error of a central difference is
O(h^2 * f''') ~ 1e-12, rounding ~ 1e-16 / h ~ 1e-10, so the bound has ample room yet fails
on any real mistake, which shows up at the size of the gradient itself).
"""

import numpy as np
import pytest

from conftest import make_data, make_eps, make_model

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "elu", "softplus"]
LIKELIHOODS = [("bernoulli", 1.0), ("gaussian", 0.7), ("gaussian", "learned"),
               ("gaussian", "per_pixel")]
H = 1e-6


def _free_bits_between(model, x, eps):
    """A free-bits floor that lies between two per-dimension KLs, away from both, so that
    some dimensions are active and some are not and the objective is smooth nearby."""
    kd = np.sort(model.forward(x, eps)._ws.kl_dim.copy())
    return float(0.5 * (kd[0] + kd[1]))


def _fd_check(model, x, eps):
    grads = {k: v.copy() for k, v in model.loss_and_grad(x, eps)[1].items()}
    for name, p in model.parameters().items():
        fd = np.empty_like(p)
        flat_p, flat_fd = p.reshape(-1), fd.reshape(-1)
        for i in range(flat_p.size):
            old = flat_p[i]
            flat_p[i] = old + H
            up = model.forward(x, eps).loss
            flat_p[i] = old - H
            down = model.forward(x, eps).loss
            flat_p[i] = old
            flat_fd[i] = (up - down) / (2 * H)
        np.testing.assert_allclose(grads[name], fd, rtol=1e-5, atol=1e-6,
                                   err_msg=f"parameter {name}")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("lik", LIKELIHOODS, ids=lambda l: f"{l[0]}-{l[1]}")
@pytest.mark.parametrize("n_samples", [1, 3])
@pytest.mark.parametrize("beta,free_bits", [(1.0, 0.0), (2.5, "between")])
def test_finite_differences(activation, lik, n_samples, beta, free_bits):
    model = make_model(activation=activation, likelihood=lik[0], obs_scale=lik[1],
                       n_samples=n_samples, hidden=(5, 4), beta=beta)
    x = make_data(model)
    if lik[0] == "gaussian":
        x = x * 3 - 1  # Gaussian data need not lie in [0, 1]
    eps = make_eps(model, len(x))
    if free_bits == "between":
        model.free_bits = _free_bits_between(model, x, eps)
    _fd_check(model, x, eps)


@pytest.mark.parametrize("beta,free_bits", [(0.0, 0.0), (2.5, 0.0), (1.0, "between"),
                                            (0.5, "between")])
@pytest.mark.parametrize("n_samples", [1, 3])
def test_finite_differences_beta_free_bits(beta, free_bits, n_samples):
    model = make_model(beta=beta, n_samples=n_samples, activation="tanh")
    x = make_data(model)
    eps = make_eps(model, len(x))
    if free_bits == "between":
        model.free_bits = _free_bits_between(model, x, eps)
        assert model.free_bits > 0
    _fd_check(model, x, eps)


def test_clamped_logvar_gets_zero_gradient():
    """Outside the documented logvar range the clamp cuts the gradient (and only there)."""
    model = make_model(activation="tanh")
    Z = model.latent_dim
    model.parameters()["enc.head.b"][Z] = -45.0  # logvar of dimension 0 far below -30
    x = make_data(model)
    eps = make_eps(model, len(x))
    _, g = model.loss_and_grad(x, eps)
    assert g["enc.head.b"][Z] == 0.0
    assert np.all(g["enc.head.W"][:, Z] == 0.0)
    assert np.all(g["enc.head.b"][Z + 1:] != 0.0)
    _fd_check(model, x, eps)
