"""The one backend switch.

Every model asks this module for its kernels; nothing else in fastvae decides which
implementation runs.  Names:

- ``"numpy"``: plain NumPy, the readable reference and test oracle (``backends/reference.py``);
- ``"cpu"``: Numba kernels with the same names and contracts (``backends/cpu/``, one module per kernels/*.cu file);
- ``"cuda"``: CuPy and the CUDA C kernels in ``kernels/`` (needs CuPy and an NVIDIA GPU);
- ``"auto"``: ``"cuda"`` when CuPy sees a GPU, else ``"cpu"``.

The process-wide default comes from :func:`set_backend`, else the ``FASTVAE_BACKEND``
environment variable, else ``"auto"``.  A model's ``backend=`` argument overrides both.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
import os
import sys

from .tf32 import set_tf32, tf32_enabled  # noqa: F401  (part of the switch's API)

CHOICES = ("numpy", "cpu", "cuda", "auto")
ENV_VAR = "FASTVAE_BACKEND"

_default: str | None = None


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says what is missing."""


def _check_name(name, where):
    ok = isinstance(name, str) and (name.lower() in CHOICES or split(name)[1] is not None)
    if not ok:
        raise ValueError(
            f"unknown backend {name!r} ({where}); choose one of: {', '.join(CHOICES)} "
            "(cuda:N for GPU N)"
        )
    return name.lower()


def split(name):
    """'cuda:1' -> ('cuda', 1); any other name -> (name, None)."""
    if isinstance(name, str) and name.lower().startswith("cuda:"):
        rest = name[5:]
        if rest.isdigit():
            return "cuda", int(rest)
    return name, None


def set_backend(name: str) -> None:
    """Set the process-wide default backend (``"numpy" | "cpu" | "cuda" | "auto"``).

    The name is checked now, and for ``"cuda"`` so is the presence of CuPy and a GPU,
    so that a bad choice fails here rather than at the first model.
    """
    global _default
    name = _check_name(name, "set_backend")
    if name == "cuda":
        cuda_status(raise_if_missing=True)
    _default = name


def get_backend_name() -> str:
    """The default backend's name as requested (may be ``"auto"``)."""
    if _default is not None:
        return _default
    env = os.environ.get(ENV_VAR)
    if env:
        return _check_name(env, f"environment variable {ENV_VAR}")
    return "auto"


#: what cuda_status says when CuPy cannot be imported ({}: the import's error)
_NO_CUPY = ("the cuda backend needs CuPy, which could not be imported ({}); install it with "
            "`pip install fastvae[cuda12]` or `pip install fastvae[cuda13]` to match your "
            "CUDA driver")
#: the NVIDIA driver's library, by platform: CuPy needs it to see any GPU
_DRIVER = {"win32": ("nvcuda.dll",), "darwin": ()}.get(sys.platform,
                                                       ("libcuda.so.1", "libcuda.so"))


@functools.lru_cache(maxsize=None)
def nvidia_driver() -> str | None:
    """None when the NVIDIA driver's library loads, else what is missing.  A few
    milliseconds, where importing CuPy takes 0.6 s: on the machines with no GPU (most of
    them) "auto" learns it from this alone."""
    for lib in _DRIVER:
        try:
            ctypes.CDLL(lib)
        except OSError:
            continue
        return None
    return f"{' or '.join(_DRIVER) or 'a CUDA driver'} not found"


def cuda_status(raise_if_missing: bool = False) -> str | None:
    """Return None when the cuda backend can run, else a sentence saying what is missing.

    With ``raise_if_missing`` the sentence is raised as :class:`BackendUnavailable`
    (a RuntimeError).  CuPy is imported only where it is installed and the NVIDIA driver's
    library loads (:func:`nvidia_driver`).
    """
    problem = None
    if importlib.util.find_spec("cupy") is None:
        problem = _NO_CUPY.format("ModuleNotFoundError: No module named 'cupy'")
    elif (driver := nvidia_driver()) is not None:
        problem = ("the cuda backend needs an NVIDIA GPU, but this machine has no NVIDIA "
                   f"driver ({driver}); use backend='cpu' on this machine")
    else:
        try:
            import cupy  # (optional: imported only here and in backends/cuda/)
        except Exception as exc:  # ImportError, or a CuPy that fails to load its libraries
            problem = _NO_CUPY.format(f"{type(exc).__name__}: {exc}")
        else:
            try:
                n = cupy.cuda.runtime.getDeviceCount()
            except Exception as exc:
                n, detail = 0, f" ({type(exc).__name__}: {exc})"
            else:
                detail = ""
            if n == 0:
                problem = ("the cuda backend needs an NVIDIA GPU, but CuPy is installed and "
                           f"sees none{detail}; use backend='cpu' on this machine")
    if problem and raise_if_missing:
        raise BackendUnavailable(problem)
    return problem


def resolve(name: str | None = None) -> str:
    """Turn a requested name (or None for the default) into a concrete backend name."""
    name = get_backend_name() if name is None else _check_name(name, "backend=")
    if name == "auto":
        return "cuda" if cuda_status() is None else "cpu"
    base, index = split(name)
    if base == "cuda":
        cuda_status(raise_if_missing=True)
        if index is not None:
            from . import cuda
            n = cuda.device().xp.cuda.runtime.getDeviceCount()
            if index >= n:
                raise BackendUnavailable(f"backend {name!r}: this machine has {n} GPU(s), "
                                         f"numbered 0 to {n - 1}")
    return name


_MODULES = {"numpy": "fastvae.backends.reference", "cpu": "fastvae.backends.cpu",
            "cuda": "fastvae.backends.cuda"}


def get(name: str | None = None):
    """Return the kernel module for ``name`` (resolved as in :func:`resolve`).

    Modules are imported on first use, so ``import fastvae`` stays light.
    """
    return importlib.import_module(_MODULES[split(resolve(name))[0]])


def host(kernels):
    """The host kernels that gather, scatter and binarize data rows for a model running on
    ``kernels`` (a module :func:`get` returned): the numpy backend's own, so that backend
    stays free of Numba, else the cpu backend's (a GPU model's host batches included)."""
    return kernels if kernels.NAME == "numpy" else get("cpu")


def gpu_count():
    """The number of GPUs the cuda backend sees (call it where :func:`resolve` gave
    "cuda")."""
    from . import cuda
    return cuda.device().xp.cuda.runtime.getDeviceCount()
