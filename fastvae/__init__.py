"""fastvae: variational autoencoders with hand-written, fused forward and backward passes.

Nothing heavy is imported here: Numba and the kernels load when a model first needs them.
"""
from ._version import __version__
from .backend import get_backend_name, set_backend, set_tf32

_LAZY = {
    "VAE": ("fastvae.model", "VAE"),
    "Cache": ("fastvae.cache", "Cache"),
    "Adam": ("fastvae.optim", "Adam"),
    "AdamW": ("fastvae.optim", "AdamW"),
    "SGD": ("fastvae.optim", "SGD"),
    "load": ("fastvae.model", "load"),
    "TrainState": ("fastvae.state", "TrainState"),
    "Dataset": ("fastvae.data", "Dataset"),
    "StopTraining": ("fastvae.train", "StopTraining"),
    "SettingChangedWarning": ("fastvae.train", "SettingChangedWarning"),
}

__all__ = ["__version__", "set_backend", "set_tf32", "get_backend_name", *_LAZY]


def __getattr__(name):
    try:
        mod, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'fastvae' has no attribute {name!r}") from None
    import importlib
    value = getattr(importlib.import_module(mod), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
