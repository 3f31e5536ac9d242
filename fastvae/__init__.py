"""fastvae: variational autoencoders with hand-written, fused forward and backward passes.

Nothing heavy is imported here: Numba and the kernels load when a model first needs them.
"""
from .version import __version__
from .backends import get_backend_name, set_backend, set_tf32

_LAZY = {
    "VAE": ("fastvae.vae", "VAE"),
    "Cache": ("fastvae.core.cache", "Cache"),
    "Adam": ("fastvae.training.optim", "Adam"),
    "AdamW": ("fastvae.training.optim", "AdamW"),
    "SGD": ("fastvae.training.optim", "SGD"),
    "load": ("fastvae.vae", "load"),
    "TrainState": ("fastvae.training.state", "TrainState"),
    "Dataset": ("fastvae.io.dataset", "Dataset"),
    "StopTraining": ("fastvae.training.loop", "StopTraining"),
    "EarlyStopping": ("fastvae.training.stopping", "EarlyStopping"),
    "SettingChangedWarning": ("fastvae.training.fit", "SettingChangedWarning"),
    "ShardThreadsWarning": ("fastvae.training.shards", "ShardThreadsWarning"),
    # the likelihood's column blocks: VAE(likelihood=[Gaussian(3), Categorical([4, 2]), ...])
    **{name: ("fastvae.core.blocks", name) for name in
       ("Gaussian", "Bernoulli", "Categorical", "Poisson", "NegBinomial", "ZINB")},
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
