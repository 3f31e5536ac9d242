import numpy as np
import pytest

import fastvae


def make_model(backend="numpy", dtype="float64", D=7, hidden=(5,), Z=3, **kw):
    """A small model whose every parameter can be finite-differenced quickly."""
    return fastvae.VAE(D, hidden=hidden, latent_dim=Z, dtype=dtype, backend=backend, seed=3, **kw)


def make_data(model, B=4, seed=0):
    """Data valid for the model's likelihood: pixels in (0, 1), fractional on purpose so the
    Bernoulli loss is a proper cross-entropy rather than only 0/1 targets."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.05, 0.95, size=(B, model.input_dim)).astype(model.dtype)


def make_eps(model, B, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((model.n_samples, B, model.latent_dim)).astype(model.dtype)


def interrupt_at(model, k):
    """Send this process SIGINT (a Ctrl-C) during the k-th training forward pass of model,
    as a user pressing Ctrl-C in the middle of a step would."""
    import signal

    calls = [0]
    orig = model.forward

    def forward(*args, **kw):
        if kw.get("grad", True):
            calls[0] += 1
            if calls[0] == k:
                signal.raise_signal(signal.SIGINT)
        return orig(*args, **kw)

    model.forward = forward
    return model


@pytest.fixture(autouse=True)
def _default_backend(monkeypatch):
    # every test starts from the documented default, whatever the environment says
    monkeypatch.delenv("FASTVAE_BACKEND", raising=False)
    fastvae.backends._default = None
    yield
    fastvae.backends._default = None


# ----------------------------------------------------------------- one suite, every backend
# The contract tests run once per backend: ``backend`` gives a model backend name
# ("numpy", "cpu" or "cuda"); for "cuda" the emulated device (tests/cuda_emu.py, the real
# kernels/*.cu compiled with g++) is installed for the test, and the real GPU runs the same
# test where there is one (marked ``gpu``, skipped elsewhere).
from cuda_helpers import dev, emu, emu_library, gpu_device, host  # noqa: E402,F401  (fixtures)

# The one list of backends every test module parametrizes over: the reference first, then
# the backends held against it.
BACKEND_PARAMS = ["numpy", "cpu", "cuda", pytest.param("cuda-gpu", marks=pytest.mark.gpu)]
DEVICE_BACKENDS = BACKEND_PARAMS[1:]


def install_backend(request, name):
    """Make ``name`` ("numpy", "cpu", "cuda" = emulated device, "cuda-gpu" = the real one)
    usable by this test; returns the model backend name."""
    if name == "cuda":
        request.getfixturevalue("emu")
    elif name == "cuda-gpu":
        request.getfixturevalue("gpu_device")
    return "cuda" if name.startswith("cuda") else name


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """A model backend for the shared contract tests: numpy, cpu, emulated cuda, GPU."""
    return install_backend(request, request.param)
