"""The light inference path: load(path, backend="numpy") then encode/decode imports neither
Numba nor CuPy, nor any optional extra (checked in a fresh process, where nothing was
imported before)."""
import json
import os
import subprocess
import sys

import numpy as np

import fastvae

_SCRIPT = r"""
import json, sys
# the kernels' compilers and the GPU, and the optional extras: none belongs on this path
HEAVY = ("numba", "llvmlite", "cupy", "onnx", "onnxruntime", "sklearn", "torch", "scipy")
import numpy as np
import fastvae
path, backend = sys.argv[1], sys.argv[2]
m = fastvae.load(path, backend=backend)
x = np.random.default_rng(0).random((5, m.input_dim)).astype(m.dtype)
mu, logvar = m.encode(x)
outs = [mu, logvar, m.decode(mu), m.encode(x, sample=True, seed=0), m.reconstruct(x),
        m.sample(3, seed=0)]
heavy = sorted(k for k in sys.modules if k.split(".")[0] in HEAVY
               or k in ("fastvae.backends.cpu", "fastvae.backends.cuda"))
print(json.dumps({"heavy": heavy, "mu": mu.tolist(), "x_hat": outs[2].tolist()}))
"""


def _run(path, backend):
    env = {k: v for k, v in os.environ.items() if k != "FASTVAE_BACKEND"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(path), backend],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_numpy_inference_imports_neither_numba_nor_cupy(tmp_path):
    # a trained checkpoint (optimizer moments, history) of a model trained on another backend
    model = fastvae.VAE(12, hidden=(8,), latent_dim=2, backend="numpy", seed=1)
    x = np.random.default_rng(2).random((40, 12)).astype(np.float32)
    model.fit(x, epochs=1, batch_size=20, progress=False)
    model.backend = "cpu"  # as saved by a run on the cpu backend (without starting Numba here)
    path = model.save(tmp_path / "m.npz")
    res = _run(path, "numpy")
    assert res["heavy"] == []
    # ... and it computed the model's numbers
    mu, _ = model.encode(np.random.default_rng(0).random((5, 12)).astype(np.float32))
    np.testing.assert_array_equal(np.array(res["mu"], np.float32), mu)


def test_the_check_sees_numba_when_it_is_imported(tmp_path):
    """The same script on the cpu backend: the check above would have caught Numba."""
    path = fastvae.VAE(12, hidden=(8,), latent_dim=2, backend="numpy").save(tmp_path / "m.npz")
    res = _run(path, "cpu")
    assert "numba" in res["heavy"] and "fastvae.backends.cpu" in res["heavy"]
