"""A model's whole state as (meta, arrays), and back: what a checkpoint file and a pickle hold.

``meta`` is JSON-able (the configuration, the backend, the noise position, free-form
metadata, the training state's settings and position); ``arrays`` are host arrays (the flat
parameters, the optimizer's moments).  :func:`fastvae.io.checkpoint.write` puts them in a
file; :func:`fastvae.load` reads one back.
"""
from __future__ import annotations

import numpy as np

from .state import TrainState


def snapshot(model):
    """(meta, arrays): everything ``model`` holds.  Run it with the model's GPU current."""
    backend = model.backend if model.device_id is None else f"cuda:{model.device_id}"
    meta = {"config": model.config(), "backend": backend,
            "noise": {"counter": model.noise.counter},
            "metadata": model.metadata, "train_state": None}
    arrays = {"params": np.ascontiguousarray(model.kernels.to_numpy(model.flat_params))}
    if model.train_state is not None:
        tmeta, tarrays = model.train_state.to_checkpoint()
        meta["train_state"] = tmeta
        arrays.update({f"train.{k}": v for k, v in tarrays.items()})
    return meta, arrays


def restore(model, meta, arrays):
    """Load parameters, noise position and training state from :func:`snapshot`'s output
    into ``model``, freshly built with the same configuration (its GPU current)."""
    params = arrays["params"]
    if params.shape != tuple(model.flat_params.shape) or params.dtype != model.dtype:
        raise ValueError(f"parameters have shape {params.shape} and dtype {params.dtype}; "
                         f"the configuration needs {tuple(model.flat_params.shape)} "
                         f"{model.dtype}")
    model.flat_params[...] = model.kernels.asarray(params)
    model.noise.give_back(int(meta["noise"]["counter"]))
    model.metadata = dict(meta.get("metadata") or {})
    if meta.get("train_state") is not None:
        tarrays = {k[6:]: v for k, v in arrays.items() if k.startswith("train.")}
        model.train_state = TrainState.from_checkpoint(model, meta["train_state"], tarrays)


def saved_config(meta):
    """The constructor arguments a checkpoint saved.  Files written before the Bernoulli
    likelihood refused a numeric obs_scale may hold one: it never had an effect, and loads
    as the default; a bf16 model saved before ``bf16_rule`` ran every product in bf16."""
    cfg = dict(meta["config"])
    if cfg.get("precision") == "bf16" and "bf16_rule" not in cfg:
        cfg["bf16_rule"] = [0, 0]  # (saved before the rule: every product ran in bf16)
    if cfg.get("likelihood", "bernoulli") != "gaussian" and not isinstance(
            cfg.get("obs_scale", 1.0), str):
        cfg["obs_scale"] = 1.0
    return cfg
