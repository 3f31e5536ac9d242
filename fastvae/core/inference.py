"""Inference with a trained model: the posterior of inputs, decoding, sampling.

These are the methods of :class:`fastvae.VAE` that only run the network forward (no
gradients, no training noise): kept here so that ``model.py`` holds the engine (parameters,
the explicit passes and their workspaces).
"""
from __future__ import annotations

import functools

import numpy as np

from .codes import ACT_IDENTITY, ACT_SIGMOID, LIK_BERNOULLI, LOGVAR_RANGE
from .validate import boolean, check_batch, check_latent, check_seed, generator, positive_int


def on_device(method):
    """Run ``method`` with the model's GPU current (see :meth:`VAE.on_device`); on the CPU
    backends it costs one attribute test."""
    @functools.wraps(method)
    def run(self, *args, **kw):
        if self.device_id is None:
            return method(self, *args, **kw)
        with self.kernels.xp.cuda.Device(self.device_id):
            return method(self, *args, **kw)
    return run


class Inference:
    """encode, decode, sample and reconstruct, for :class:`fastvae.VAE`."""

    @on_device
    def encode(self, x, sample=False, seed=None):
        """The posterior q(z|x) of x (B, D).

        sample=False: (mu, logvar), each (B, Z), as new arrays (logvar clamped to
        LOGVAR_RANGE).  sample=True: one draw z = mu + sigma * eps, (B, Z), with eps from
        its own generator (``seed``: None for fresh entropy, an int, or a NumPy Generator),
        never the training noise.
        """
        sample = boolean(sample, "sample")
        rng = generator(seed) if sample else check_seed(seed)
        x = check_batch(x, self, True, check_range=False)
        ws = self.workspaces.get(x.shape[0], 1, False)
        ws.generation += 1
        self._encoder_forward(ws, x)
        if sample:
            self.draw_normal(ws.eps.reshape(1, *ws.eps.shape), rng)
        else:
            ws.eps.fill(0)
        # the training pass's own kernel: the same bias, clamp and sigma as training
        self.kernels.reparam_kl_fwd(ws.mu, ws.logvar, ws.sigma, ws.z, ws.kl, ws.kl_dim, ws.head,
                                self._params["enc.head.b"], ws.eps, *LOGVAR_RANGE)
        if sample:
            return ws.z.copy()
        return ws.mu.copy(), ws.logvar.copy()

    @on_device
    def decode(self, z):
        """Decoder mean for latent codes z (N, Z): pixel probabilities (Bernoulli) or means
        (Gaussian), (N, D), as a new array."""
        z = check_latent(z, self)
        ws = self.workspaces.get(z.shape[0], 1, False)
        ws.generation += 1
        self._decoder_forward(ws, z)
        final = ACT_SIGMOID if self.lik_code == LIK_BERNOULLI else ACT_IDENTITY
        self.kernels.bias_act_fwd(ws.out, self._params["dec.out.b"], final, 0.0)
        return ws.out.copy()

    @on_device
    def sample(self, n, seed=None, mean=True):
        """n draws from the model: z ~ N(0, I), then the decoder.

        mean=True returns the decoder mean (pixel probabilities or Gaussian means);
        mean=False a draw from p(x|z) (0/1 pixels, or mean + sigma * noise with the
        observation scale).  Returns an (n, D) array.  The noise comes from its own
        generator (``seed``: None for fresh entropy, an int for a reproducible draw, or a
        NumPy Generator), never from the training noise, so sampling during training does
        not change the run.
        """
        n = positive_int(n, "n")
        mean = boolean(mean, "mean")
        rng = generator(seed)
        xp = self.kernels.xp
        z = rng.standard_normal((n, self.latent_dim)).astype(self.dtype)
        m = self.decode(z)
        if mean:
            return m
        if self.lik_code == LIK_BERNOULLI:
            u = self.kernels.asarray(rng.random((n, self.input_dim), dtype=self.dtype))
            return (u < m).astype(self.dtype)
        noise = rng.standard_normal((n, self.input_dim)).astype(self.dtype)
        scale = np.exp(self.obs_logscale()).astype(self.dtype)
        return m + xp.asarray(scale * noise)

    def reconstruct(self, x):
        """Decoder mean at z = mu(x) (no sampling): an (B, D) array."""
        mu, _ = self.encode(x)
        return self.decode(mu)
