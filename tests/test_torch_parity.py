"""The hand-written loss and gradients against PyTorch autograd on identical weights and eps,
on every backend (numpy, cpu, cuda on the emulated device, and the GPU with ``-m gpu``).

Tolerances: float64 rtol 1e-10 (both sides compute the same formulas; differences are
summation order only); float32 rtol 2e-4 with atol 2e-5 relative to the largest entry of
each tensor (float32 sums of a few hundred terms, and fastvae's polynomial exp/log1p).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch_ref import loss_and_grads  # noqa: E402

from conftest import (BACKEND_PARAMS, DEVICE_BACKENDS, host, make_data, make_eps,  # noqa: E402
                      make_model)

CASES = [
    dict(activation="relu"),
    dict(activation="leaky_relu", n_samples=3),
    dict(activation="tanh", beta=2.0),
    dict(activation="sigmoid", likelihood="gaussian", obs_scale=0.5),
    dict(activation="elu", likelihood="gaussian", obs_scale="learned", n_samples=2),
    dict(activation="softplus", likelihood="gaussian", obs_scale="per_pixel"),
    dict(activation="relu", free_bits=0.05, n_samples=3),
]


def _compare(model, x, eps, rtol, atol_frac):
    loss, grads = model.loss_and_grad(x, eps)
    loss, grads = float(loss), {k: host(v) for k, v in grads.items()}
    t_loss, t_grads = loss_and_grads(model, x, eps)
    assert loss == pytest.approx(t_loss, rel=rtol)
    assert set(grads) == set(t_grads)
    for k, g in grads.items():
        t = t_grads[k]
        scale = max(np.abs(t).max(), 1e-12)
        np.testing.assert_allclose(g, t, rtol=rtol, atol=atol_frac * scale, err_msg=k)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_float64_tight(backend, case):
    model = make_model(backend=backend, D=13, hidden=(9, 6), Z=4, **case)
    x = make_data(model, B=5)
    _compare(model, x, make_eps(model, 5), rtol=1e-10, atol_frac=1e-12)


@pytest.mark.parametrize("backend", BACKEND_PARAMS, indirect=True)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_float32_loose(backend, case):
    model = make_model(backend=backend, dtype="float32", D=33, hidden=(17,), Z=5, **case)
    x = make_data(model, B=9)
    _compare(model, x, make_eps(model, 9), rtol=2e-4, atol_frac=2e-5)


@pytest.mark.parametrize("backend", DEVICE_BACKENDS, indirect=True)
def test_canonical_model_float32(backend):
    """The benchmark's model (784-400-20-400-784, ReLU, Bernoulli) at batch 64."""
    model = make_model(backend=backend, dtype="float32", D=784, hidden=(400,), Z=20)
    x = make_data(model, B=64)
    _compare(model, x, make_eps(model, 64), rtol=2e-4, atol_frac=2e-5)
