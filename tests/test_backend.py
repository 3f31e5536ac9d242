"""The one backend switch: names, the environment variable, and errors that say what to do."""
import numpy as np
import pytest

import fastvae
from fastvae import backends as backend

from tolerances import RTOL


def test_default_is_auto_and_auto_is_cpu_without_gpu():
    assert fastvae.get_backend_name() == "auto"
    if backend.cuda_status() is not None:
        assert backend.resolve() == "cpu"


def test_set_backend_and_model_override():
    fastvae.set_backend("numpy")
    assert fastvae.VAE(4, hidden=(3,), latent_dim=2).backend == "numpy"
    assert fastvae.VAE(4, hidden=(3,), latent_dim=2, backend="cpu").backend == "cpu"


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTVAE_BACKEND", "numpy")
    assert fastvae.VAE(4, hidden=(3,), latent_dim=2).backend == "numpy"
    monkeypatch.setenv("FASTVAE_BACKEND", "tpu")
    with pytest.raises(ValueError, match=r"unknown backend 'tpu' \(environment variable "
                                         r"FASTVAE_BACKEND\); choose one of"):
        fastvae.VAE(4)


def test_unknown_name():
    with pytest.raises(ValueError, match="choose one of: numpy, cpu, cuda, auto"):
        fastvae.set_backend("metal")


def test_cuda_without_cupy_or_gpu_says_what_is_missing():
    problem = backend.cuda_status()
    if problem is None:
        pytest.skip("this machine can run the cuda backend")
    assert ("needs CuPy" in problem and "pip install fastvae[cuda12]" in problem) or \
        "needs an NVIDIA GPU" in problem
    with pytest.raises(RuntimeError, match="the cuda backend needs"):
        fastvae.set_backend("cuda")
    with pytest.raises(RuntimeError, match="the cuda backend needs"):
        fastvae.VAE(4, backend="cuda")


def test_auto_without_driver_never_imports_cupy(monkeypatch):
    """Where the NVIDIA driver's library does not load, "auto" is "cpu" without importing
    CuPy (0.6 s), and an explicit "cuda" says the driver is what is missing."""
    import sys
    monkeypatch.setattr(backend, "_DRIVER", ("libfastvae-no-such-driver.so.1",))
    backend.nvidia_driver.cache_clear()
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: object())
    try:
        assert backend.resolve("auto") == "cpu"
        assert "cupy" not in sys.modules
        with pytest.raises(RuntimeError, match=r"needs an NVIDIA GPU, but this machine has "
                                               r"no NVIDIA driver \(libfastvae-no-such"):
            backend.resolve("cuda")
    finally:
        backend.nvidia_driver.cache_clear()


def test_missing_cupy_is_named_without_importing(monkeypatch):
    monkeypatch.setattr(backend.importlib.util, "find_spec",
                        lambda name: None if name == "cupy" else object())
    problem = backend.cuda_status()
    assert problem.startswith("the cuda backend needs CuPy, which could not be imported "
                              "(ModuleNotFoundError") and "fastvae[cuda12]" in problem


def test_import_is_light():
    """`import fastvae` must not import numba (cold start for embedded use)."""
    import subprocess
    import sys
    code = "import sys, fastvae; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_numpy_and_cpu_give_same_numbers_for_same_seed():
    a = fastvae.VAE(10, hidden=(6,), latent_dim=2, backend="numpy", dtype="float64")
    b = fastvae.VAE(10, hidden=(6,), latent_dim=2, backend="cpu", dtype="float64")
    # exact: the initial parameters come from NumPy's generator on every backend, no kernel
    assert np.array_equal(a.flat_params, b.flat_params)
    x = np.random.default_rng(0).random((3, 10))
    # computed: float64 to the cross-backend tolerance (tests/tolerances.py)
    assert a.forward(x).loss == pytest.approx(b.forward(x).loss, rel=RTOL["float64"])
