"""Inference with a trained model: the posterior of inputs, decoding, sampling.

These are the methods of :class:`fastvae.VAE` that only run the network forward (no
gradients, no training noise): kept here so that ``model.py`` holds the engine (parameters,
the explicit passes and their workspaces).
"""
from __future__ import annotations

import functools

import numpy as np

from ..backends.codes import ACT_IDENTITY, ACT_SIGMOID, LIK_BERNOULLI, LOGVAR_RANGE
from .columns import Readout
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
    def encode(self, x, sample=False, seed=None, *, conditions=None):
        """The posterior q(z|x) of x (B, D) (with its ``conditions`` (B, C) for a model that
        has them; an exposure is not needed: the encoder does not read it).

        sample=False: (mu, logvar), each (B, Z), as new arrays (logvar clamped to
        LOGVAR_RANGE).  sample=True: one draw z = mu + sigma * eps, (B, Z), with eps from
        its own generator (``seed``: None for fresh entropy, an int, or a NumPy Generator),
        never the training noise.
        """
        return self.encode_rows(self._encoder_rows(x, conditions), sample, seed)

    @on_device
    def encode_rows(self, x, sample=False, seed=None):
        """:meth:`encode` of the model's data rows x (B, row_width) (for a block model
        ``[x | conditions | exposure]``, :meth:`compose`'s output; otherwise x itself)."""
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

    def _encoder_rows(self, x, conditions):
        """The data rows the encoder reads for x and its conditions (an exposure column,
        which it does not read, filled with 1)."""
        cl = self.columns
        if cl is None or not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
            return self.compose(x, conditions)
        n = np.shape(x)[0] if np.ndim(x) == 2 else 0
        return self.compose(x, conditions, np.ones(n) if cl.E else None)

    @on_device
    def decode(self, z, *, conditions=None, exposure=None, shift=None):
        """Decoder mean for latent codes z (N, Z): pixel probabilities (Bernoulli) or means
        (Gaussian), (N, D), as a new array.  A block model takes the rows' ``conditions``
        (N, C) (decoding the same z under another condition is the counterfactual) and
        optional ``exposure`` (N,) (default 1), and returns (N, P): each column's mean, a
        categorical column's K class probabilities (:meth:`Readout.means
        <fastvae.core.columns.Readout.means>`).  ``shift`` (P,): added to the output layer's
        bias for this call only (a block model; a table model's sampling calibration)."""
        z = check_latent(z, self)
        ws = self.workspaces.get(z.shape[0], 1, False)
        ws.generation += 1
        if self.columns is not None:
            return self._decode_blocks(ws, z, conditions, exposure, shift)
        if shift is not None:
            raise ValueError("shift is for block models")
        self._decoder_forward(ws, z)
        final = ACT_SIGMOID if self.lik_code == LIK_BERNOULLI else ACT_IDENTITY
        self.kernels.bias_act_fwd(ws.out, self._params["dec.out.b"], final, 0.0)
        return ws.out.copy()

    def _decode_blocks(self, ws, z, conditions, exposure, shift=None):
        cl, xp = self.columns, self.kernels.xp
        N = z.shape[0]
        if (conditions is None) != (cl.C == 0):
            raise ValueError(f"this model has n_conditions={cl.C}: pass conditions= of shape "
                             f"({N}, {cl.C})" if cl.C else
                             "conditions given, but the model was built with n_conditions=0")
        cond = None
        if cl.C:
            c = np.asarray(self.kernels.to_numpy(conditions) if hasattr(conditions, "get")
                           else conditions, dtype=np.float64)
            if c.shape != (N, cl.C) or not np.isfinite(c).all():
                raise ValueError(f"conditions must be finite, of shape ({N}, {cl.C}); got "
                                 f"shape {c.shape}")
            cond = self.kernels.asarray(np.ascontiguousarray(c, dtype=self.dtype))
        logex = None
        if exposure is not None:
            e = np.asarray(exposure, dtype=np.float64).reshape(-1)
            if e.shape != (N,) or not (np.isfinite(e) & (e > 0)).all():
                raise ValueError(f"exposure must be {N} finite values > 0")
            logex = self.kernels.asarray(np.log(e).astype(self.dtype))
        self._decoder_forward(ws, z, cond, self.tables["cond_only"])
        b = self._params["dec.out.b"]
        if shift is not None:
            sh = np.asarray(shift, dtype=np.float64).reshape(-1)
            if sh.shape != (cl.P,) or not np.isfinite(sh).all():
                raise ValueError(f"shift must be {cl.P} finite values")
            b = b + self.kernels.asarray(sh.astype(self.dtype))
        self.kernels.bias_act_fwd(ws.out, b, ACT_IDENTITY, 0.0)
        return Readout(cl).means(ws.out, logex, xp)

    @on_device
    def sample(self, n, seed=None, mean=True, *, conditions=None, exposure=None):
        """n draws from the model: z ~ N(0, I), then the decoder.

        mean=True returns the decoder mean (pixel probabilities or Gaussian means);
        mean=False a draw from p(x|z) (0/1 pixels, or mean + sigma * noise with the
        observation scale).  Returns an (n, D) array.  The noise comes from its own
        generator (``seed``: None for fresh entropy, an int for a reproducible draw, or a
        NumPy Generator), never from the training noise, so sampling during training does
        not change the run.

        A block model returns (n, D) values per data column (categorical columns as codes,
        counts as integers): with mean=True each column's mean (a categorical column's most
        probable code), else a draw; it takes the rows' ``conditions`` (n, C) and
        ``exposure`` (n,) (default 1) as :meth:`decode` does.
        """
        n = positive_int(n, "n")
        mean = boolean(mean, "mean")
        rng = generator(seed)
        xp = self.kernels.xp
        z = rng.standard_normal((n, self.latent_dim)).astype(self.dtype)
        if self.columns is not None:
            return self._sample_blocks(z, rng, mean, conditions, exposure)
        m = self.decode(z)
        if mean:
            return m
        if self.lik_code == LIK_BERNOULLI:
            u = self.kernels.asarray(rng.random((n, self.input_dim), dtype=self.dtype))
            return (u < m).astype(self.dtype)
        noise = rng.standard_normal((n, self.input_dim)).astype(self.dtype)
        scale = np.exp(self.obs_logscale()).astype(self.dtype)
        return m + xp.asarray(scale * noise)

    @on_device
    def decode_values(self, z, mean=True, seed=None, *, conditions=None, exposure=None,
                      shift=None):
        """A block model's values per data column (N, D) for latent codes z (N, Z), as
        :meth:`sample` gives them for z ~ N(0, I): with mean=True each column's mean (a
        categorical column's most probable code), else a draw from p(x|z) (``seed``: None,
        an int or a NumPy Generator).  Encode rows first to impute or reconstruct them.
        ``shift``: as in :meth:`decode`."""
        if self.columns is None:
            raise ValueError("decode_values is for block models (a list likelihood, "
                             "conditions or missing cells); use decode or sample")
        z = check_latent(z, self)
        return self._sample_blocks(z, generator(seed), boolean(mean, "mean"), conditions,
                                   exposure, shift)

    def _sample_blocks(self, z, rng, mean, conditions, exposure, shift=None):
        cl = self.columns
        m = self.kernels.to_numpy(self.decode(z, conditions=conditions, exposure=exposure,
                                              shift=shift))
        groups = np.zeros(len(z), dtype=np.int64)
        if cl.grouped:
            groups = np.argmax(np.asarray(conditions), axis=1)
        out = Readout(cl).draw(m.astype(np.float64), self.aux_values(), groups, rng, mean)
        return self.kernels.asarray(out.astype(self.dtype))

    def reconstruct(self, x, *, conditions=None, exposure=None):
        """Decoder mean at z = mu(x) (no sampling): an (B, D) array ((B, P) for a block
        model, as :meth:`decode`)."""
        mu, _ = self.encode(x, conditions=conditions)
        if self.columns is None:
            return self.decode(mu)
        return self.decode(mu, conditions=conditions, exposure=exposure)
