"""A VAE's configuration, checked: the constructor's arguments turned into the names the
engine reads (sizes, codes, the column layout), each refused with an error naming it.

:class:`~fastvae.core.model.Engine` is a Spec with a backend, parameters and passes; a
Spec alone allocates nothing and needs no backend.
"""
from __future__ import annotations

import numpy as np

from ..backends.codes import ACT_ELU, ACT_LEAKY_RELU, likelihood_code
from .blocks import parse_blocks
from .columns import Columns, one_block
from .validate import (activation_config, boolean, int_tuple, nonneg_int, objective_config,
                       obs_scale_config, positive_int, real)


class Spec:
    """The checked configuration of a VAE (the arguments are those of
    :class:`fastvae.VAE`, without the backend and the precision, which need one)."""

    def __init__(self, input_dim=None, hidden=(400,), latent_dim=20, activation="relu",
                 likelihood="bernoulli", n_samples=1, beta=1.0, free_bits=0.0,
                 dtype="float32", seed=0, *, decoder_hidden=None,
                 obs_scale=1.0, activation_alpha=None, objective="elbo", n_conditions=0,
                 missing=None, encode_conditions=True, inject_conditions=False):
        blocks = parse_blocks(likelihood)
        self.n_conditions = nonneg_int(n_conditions, "n_conditions")
        self.encode_conditions = boolean(encode_conditions, "encode_conditions")
        self.inject_conditions = boolean(inject_conditions, "inject_conditions")
        if self.inject_conditions and not self.n_conditions:
            raise ValueError("inject_conditions=True feeds the conditions to every decoder "
                             "layer, but the model has none: build it with n_conditions=C")
        if missing is not None and missing != "mask":
            raise ValueError(f"missing must be None (NaN is an error) or 'mask' (NaN marks a "
                             f"missing cell), got {missing!r}")
        self.missing = missing
        if blocks is None:
            self.input_dim = positive_int(input_dim, "input_dim")
            self.lik_code = likelihood_code(likelihood)
        else:
            width = sum(b.n for b in blocks)
            if input_dim is not None and input_dim != width:
                raise ValueError(f"the likelihood's blocks cover {width} columns, but "
                                 f"input_dim={input_dim!r}; the block widths must add up to "
                                 "the data's width")
            if not (isinstance(obs_scale, (int, float)) and obs_scale == 1.0):
                raise ValueError("obs_scale applies to likelihood='gaussian'; a block model "
                                 "gives each Gaussian block its scale: Gaussian(n, scale=...)")
            self.input_dim = width
            self.lik_code = None
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.enc_hidden = int_tuple(hidden, "hidden")
        self.dec_hidden = (self.enc_hidden[::-1] if decoder_hidden is None
                           else int_tuple(decoder_hidden, "decoder_hidden"))
        self.n_samples = positive_int(n_samples, "n_samples")
        self.activation = activation
        self.act_code, self.act_alpha = activation_config(activation, activation_alpha)
        self.likelihood = likelihood if blocks is None else [b.config() for b in blocks]
        self.beta = real(beta, "beta", at_least=0)
        self.free_bits = real(free_bits, "free_bits", at_least=0)
        self.objective = objective_config(objective, self.beta, self.free_bits)
        self.kl_scale = 1.0  # multiplies beta during KL warm-up (set by fit, then restored)
        try:
            ok = np.dtype(dtype).name in ("float32", "float64")
        except TypeError:  # not a dtype at all ('bogus', 3, ...)
            ok = False
        if not ok or dtype is None:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(dtype)
        self.seed = nonneg_int(seed, "seed")
        if blocks is None:
            self.learn_scale, self.logscale_size, fixed = obs_scale_config(
                obs_scale, self.lik_code, self.input_dim)
            if self.n_conditions or self.missing:
                blocks = one_block(likelihood, self.input_dim, obs_scale)
        # (a plain float, so that the config is JSON whatever number type was given)
        self.obs_scale = obs_scale if isinstance(obs_scale, str) else float(obs_scale)
        #: the column layout of a block model (None: the one-likelihood kernels)
        self.columns = (None if blocks is None else
                        Columns(blocks, self.n_conditions, self.missing == "mask",
                                self.encode_conditions))
        if self.columns is not None:
            self.learn_scale = self.columns.n_logscale > 0
            self.logscale_size, fixed = self.columns.n_logscale, 0.0
        #: the fixed Gaussian log-scale (likelihood="gaussian" with a number obs_scale)
        self.fixed_logscale = fixed

    def config(self):
        """The constructor arguments that rebuild this model (without its backend)."""
        has_alpha = self.act_code in (ACT_LEAKY_RELU, ACT_ELU)
        return {"input_dim": self.input_dim, "hidden": list(self.enc_hidden),
                "latent_dim": self.latent_dim, "activation": self.activation,
                "likelihood": self.likelihood, "n_samples": self.n_samples,
                "beta": self.beta, "free_bits": self.free_bits, "dtype": self.dtype.name,
                "seed": self.seed, "decoder_hidden": list(self.dec_hidden),
                "obs_scale": self.obs_scale,
                "activation_alpha": self.act_alpha if has_alpha else None,
                "objective": self.objective, "n_conditions": self.n_conditions,
                "missing": self.missing, "encode_conditions": self.encode_conditions,
                "inject_conditions": self.inject_conditions,
                "precision": getattr(self, "precision", "full"),
                "bf16_rule": (list(self._bf16_rule) if getattr(self, "precision", "full") ==
                              "bf16" else None)}
