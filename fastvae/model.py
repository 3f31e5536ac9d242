"""The VAE: parameters in one flat buffer, forward and backward written out in mirrored order.

Read ``forward`` and ``backward`` side by side: backward calls the kernels of forward in
exactly the reverse order, and every buffer that backward reads was saved by forward for that
reason (see the comments marked SAVE).
"""
from __future__ import annotations

import math

import numpy as np

from . import backend as _backend
from .codes import (ACT_IDENTITY, ACT_SIGMOID, LIK_BERNOULLI, LIK_GAUSSIAN, activation_code,
                    likelihood_code)
from .params import build_layout, init_linear_, views
from .validate import check_batch, check_eps, check_latent, positive_int
from .workspace import Workspace, WorkspacePool

#: logvar is clamped to this range before exp (sigma from 3e-7 to 2.2e4); outside it the
#: gradient with respect to logvar is zero
LOGVAR_RANGE = (-30.0, 20.0)


class Cache:
    """What one forward pass saved for backward; returned by :meth:`VAE.forward`.

    The arrays live in the model's workspace and are overwritten by the next forward pass
    on a batch of the same shape: copy what you want to keep.  ``backward`` refuses a
    stale cache.  Shapes (B batch rows, L samples, Z latent, D data):

    x (B, D); mu, logvar, sigma (B, Z) [logvar clamped]; eps, z (L, B, Z);
    out (L, B, D) decoder logits (Bernoulli) or means (Gaussian);
    recon (B,) -log p(x|z) averaged over the L samples; kl (B,) KL(q(z|x) || p(z));
    loss: the training objective (beta, free bits applied), a float;
    neg_elbo: the plain negative ELBO (recon + kl) averaged over the batch, a float;
    recon_mean, kl_mean: its two terms, floats.

    On the cuda backend the four numbers stay on the GPU until one of them is first read
    (reading waits for the step to finish); read them before the next forward pass of the
    same shape.  On the CPU backends they are read at once.
    """

    __slots__ = ("x", "mu", "logvar", "sigma", "eps", "z", "out", "recon", "kl", "_stats",
                 "_values", "_ws", "_generation", "_bk")

    def __init__(self, ws, x, recon, bk):
        L, B = ws.L, ws.B
        self.x = x
        self.mu, self.logvar, self.sigma = ws.mu, ws.logvar, ws.sigma
        self.eps = ws.eps.reshape(L, B, -1)
        self.z = ws.z.reshape(L, B, -1)
        self.out = ws.out.reshape(L, B, -1)
        self.recon, self.kl = recon, ws.kl
        self._stats, self._values, self._bk = ws.stats, None, bk
        self._ws, self._generation = ws, ws.generation

    @property
    def stale(self):
        """True once a later forward pass has overwritten this cache's buffers."""
        return self._ws.generation != self._generation

    def _read(self):
        """(loss, recon_mean, kl_mean) as Python floats, fetched once."""
        if self._values is None:
            if self.stale:
                raise RuntimeError(
                    "this cache's loss was overwritten by a later forward pass before it was "
                    "read; read cache.loss (or recon_mean, kl_mean) before the next forward "
                    "pass of the same batch shape")
            self._values = tuple(float(v) for v in self._bk.to_numpy(self._stats))
        return self._values

    @property
    def loss(self):
        return self._read()[0]

    @property
    def recon_mean(self):
        return self._read()[1]

    @property
    def kl_mean(self):
        return self._read()[2]

    @property
    def neg_elbo(self):
        v = self._read()
        return v[1] + v[2]


class Grads(dict):
    """Gradient tensors by parameter name (views into ``flat``, overwritten by the next
    backward pass).  ``flat`` is the whole gradient buffer, laid out like the parameters."""

    def __init__(self, named, flat):
        super().__init__(named)
        self.flat = flat


class VAE:
    """A fully connected VAE with explicit, hand-written forward and backward passes.

    Parameters
    ----------
    input_dim : int        D, the number of pixels / features per datapoint.
    hidden : tuple of int  encoder hidden widths (the decoder mirrors them unless
                           ``decoder_hidden`` is given).
    latent_dim : int       Z.
    activation : str       relu | leaky_relu | tanh | sigmoid | elu | softplus.
    likelihood : str       "bernoulli" (decoder outputs logits; data in [0, 1]) or
                           "gaussian" (decoder outputs means).
    n_samples : int        L latent samples per datapoint; the reconstruction term is
                           their mean.
    beta : float           weight of the KL term.  free_bits : float, per-dimension floor
                           (in nats) on the batch-mean KL.
    dtype : str            "float32" or "float64".
    seed : int             seeds initialisation and the noise eps, reproducibly.
    backend : str or None  "numpy" | "cpu" | "cuda" | "auto"; None uses the default
                           (see :mod:`fastvae.backend`).
    decoder_hidden : tuple of int or None
    obs_scale : float | "learned" | "per_pixel"
                           Gaussian only: a fixed observation standard deviation, one
                           learned log-scale shared by all pixels (the sigma-VAE), or one
                           per pixel.  Learned scales are the parameter ``dec.logscale``.
    activation_alpha : float or None
                           leaky_relu slope (default 0.01) or ELU scale (default 1.0).
    """

    def __init__(self, input_dim, hidden=(400,), latent_dim=20, activation="relu",
                 likelihood="bernoulli", n_samples=1, beta=1.0, free_bits=0.0,
                 dtype="float32", seed=0, backend=None, *, decoder_hidden=None,
                 obs_scale=1.0, activation_alpha=None):
        self.input_dim = positive_int(input_dim, "input_dim")
        self.latent_dim = positive_int(latent_dim, "latent_dim")
        self.enc_hidden = tuple(positive_int(n, "hidden width") for n in _as_tuple(hidden))
        dec = self.enc_hidden[::-1] if decoder_hidden is None else _as_tuple(decoder_hidden)
        self.dec_hidden = tuple(positive_int(n, "decoder_hidden width") for n in dec)
        self.n_samples = positive_int(n_samples, "n_samples")
        self.activation = activation
        self._act, alpha = activation_code(activation)
        self._alpha = float(alpha if activation_alpha is None else activation_alpha)
        self.likelihood = likelihood
        self._lik = likelihood_code(likelihood)
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.kl_scale = 1.0  # multiplies beta during KL warm-up (set by fit, then restored)
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
        if not (math.isfinite(self.free_bits) and self.free_bits >= 0):
            raise ValueError(f"free_bits must be a finite number >= 0, got {free_bits!r}")
        if str(dtype) not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = np.dtype(str(dtype))
        self.seed = int(seed)
        self.obs_scale = obs_scale
        self._learn_scale, logscale_size, fixed = _parse_obs_scale(obs_scale, self._lik,
                                                                   self.input_dim)
        self.backend = _backend.resolve(backend)
        self._bk = _backend.get(self.backend)
        xp = self._bk.xp

        self._entries, size = build_layout(self.input_dim, self.enc_hidden, self.latent_dim,
                                           self.dec_hidden, logscale_size,
                                           self.dtype.itemsize)
        init_rng, noise_rng = np.random.SeedSequence(self.seed).spawn(2)
        # the device's noise: Philox keyed by the seed, one counter value per draw
        self._noise_key = tuple(int(k) for k in noise_rng.generate_state(2, np.uint32))
        self._noise_counter = 0
        host = np.zeros(size, dtype=self.dtype)
        init_linear_(views(host, self._entries), self._entries,
                     np.random.Generator(np.random.PCG64(init_rng)))
        self.flat_params = self._bk.asarray(host)
        self.flat_grads = xp.zeros(size, dtype=self.dtype)
        self._params = views(self.flat_params, self._entries)
        self._grads = Grads(views(self.flat_grads, self._entries), self.flat_grads)
        self._fixed_logscale = xp.full(1, fixed, dtype=self.dtype)
        self._dlogscale_sink = xp.zeros(1, dtype=self.dtype)  # unused output when not learned
        self.rng = np.random.Generator(np.random.PCG64(noise_rng))
        self._pool = WorkspacePool(self._new_workspace)
        # training state that outlives one fit() call and goes into checkpoints
        self.optimizer = None   # the optimizer fit() uses and continues
        self.history = []       # one dict per completed epoch (see fastvae.train.fit)
        self._train_state = None
        self.metadata = {}      # free-form JSON-able notes saved with checkpoints (data, image shape)

    def config(self):
        """The constructor arguments that rebuild this model (without its backend)."""
        return {"input_dim": self.input_dim, "hidden": list(self.enc_hidden),
                "latent_dim": self.latent_dim, "activation": self.activation,
                "likelihood": self.likelihood, "n_samples": self.n_samples,
                "beta": self.beta, "free_bits": self.free_bits, "dtype": self.dtype.name,
                "seed": self.seed, "decoder_hidden": list(self.dec_hidden),
                "obs_scale": self.obs_scale, "activation_alpha": self._alpha}

    # ----------------------------------------------------------------- structure
    def parameters(self):
        """OrderedDict name -> parameter view (see the class docstring for the names).

        Writing into a view writes the model's parameters.
        """
        return self._params

    @property
    def n_parameters(self):
        return sum(v.size for v in self._params.values())

    def _new_workspace(self, B, L):
        try:
            return Workspace(self._bk.xp, self.dtype, B, L, self.enc_hidden, self.latent_dim,
                             self.dec_hidden, self.input_dim)
        except MemoryError as exc:  # CuPy's OutOfMemoryError is a MemoryError too
            where = "GPU" if self._bk.DEVICE else "host"
            per_row = (2 * sum(self.enc_hidden) + 3 * L * sum(self.dec_hidden)
                       + 3 * L * self.input_dim + 10 * L * self.latent_dim)
            need = per_row * B * self.dtype.itemsize / 2 ** 20
            hint = f"; try batch_size={max(1, B // 2)} or smaller" if B > 1 else ""
            raise MemoryError(
                f"out of {where} memory for the activations of batch size {B} with "
                f"n_samples={L} (about {need:,.0f} MiB){hint}") from exc

    def _layers(self, side):
        """[(W, b, gW, gb)] of the hidden layers of 'enc' or 'dec', in forward order."""
        n = len(self.enc_hidden if side == "enc" else self.dec_hidden)
        p, g = self._params, self._grads
        return [(p[f"{side}.{i}.W"], p[f"{side}.{i}.b"], g[f"{side}.{i}.W"], g[f"{side}.{i}.b"])
                for i in range(n)]

    @property
    def _logscale(self):
        return self._params["dec.logscale"] if self._learn_scale else self._fixed_logscale

    # ------------------------------------------------------------------- forward
    def forward(self, x, eps=None, *, n_samples=None, rng=None, validate=True, _acc=None):
        """Run the encoder, the sampling step, the decoder and the fused loss.

        x : (B, D) array of the model's dtype (other float dtypes are converted, which
            copies; integer dtypes are refused).  eps : (L, B, Z), or (B, Z) when L = 1,
            standard normal noise; drawn from ``rng`` (default: the model's generator,
            ``model.rng``) when None.  Either way it is saved in the cache: it is what
            carries the gradient through the sample.  n_samples : L for this pass
            (default ``model.n_samples``).  validate=False skips the NaN/range scan of x
            (for data already checked, as ``fit`` does).  ``_acc`` = (acc, weight): fit's
            running sums, acc (3,) float64 += weight * [loss, recon, kl], on the device.
        Returns a :class:`Cache`.  The loss gradient with respect to the decoder output is
        computed here too (one fused pass) and kept for :meth:`backward`.
        """
        bk = self._bk
        x = check_batch(x, self, validate)
        L = self.n_samples if n_samples is None else positive_int(n_samples, "n_samples")
        B, Z = x.shape[0], self.latent_dim
        ws = self._pool.get(B, L)
        ws.generation += 1
        if eps is None:
            self._draw_normal(ws.eps, rng)
        else:
            ws.eps[...] = check_eps(eps, L, B, Z, self._bk.xp)
        p, act, alpha = self._params, self._act, self._alpha
        self._encoder_forward(ws, x)
        # SAVE eps, sigma, mu and the raw logvar (in head): the sample path and the clamp
        bk.reparam_kl_fwd(ws.mu, ws.logvar, ws.sigma, ws.z, ws.kl, ws.kl_dim, ws.head,
                          p["enc.head.b"], ws.eps, *LOGVAR_RANGE)
        g = ws.z
        for (W, b, _, _), gj in zip(self._layers("dec"), ws.g):
            bk.matmul(gj, g, W)
            bk.bias_act_fwd(gj, b, act, alpha)  # SAVE gj
            g = gj
        bk.matmul(ws.out, g, p["dec.out.W"])
        gr = self._grads
        dls = gr["dec.logscale"] if self._learn_scale else self._dlogscale_sink
        # SAVE dout: the loss gradient is computed with the loss, backward starts from it
        bk.likelihood_fwd_bwd(ws.dout, ws.loss_rows, gr["dec.out.b"], dls, ws.out,
                              p["dec.out.b"], x, self._logscale, self._lik,
                              self._learn_scale, 1.0 / (B * L))
        recon = ws.loss_rows
        if L > 1:
            recon = ws.recon
            bk.xp.mean(ws.loss_rows.reshape(L, B), axis=0, out=recon)
        acc, weight = (ws.stats, 0.0) if _acc is None else _acc
        bk.loss_stats(ws.stats, acc, ws.loss_rows, ws.kl, ws.kl_dim, self.free_bits,
                      self.beta * self.kl_scale, weight)
        cache = Cache(ws, x, recon, bk)
        if not bk.DEVICE:
            cache._read()  # free on the host; on a GPU it would wait for the step
        return cache

    def _encoder_forward(self, ws, x):
        """Hidden layers into ws.h, then the head product (bias not yet added) into ws.head."""
        bk, h = self._bk, x
        for (W, b, _, _), hi in zip(self._layers("enc"), ws.h):
            bk.matmul(hi, h, W)
            bk.bias_act_fwd(hi, b, self._act, self._alpha)  # SAVE hi: act' is read off it
            h = hi
        bk.matmul(ws.head, h, self._params["enc.head.W"])

    def _draw_normal(self, out, rng=None):
        """Fill ``out`` with standard normal noise from ``rng`` (default: the model's own).

        On the CPU backends the model's own noise is ``model.rng`` (NumPy); on the GPU it is
        drawn on the device (Philox keyed by the seed, ``_noise_counter`` counting draws),
        so a training step never waits for a host-to-device copy.  An explicit ``rng`` is
        always a NumPy generator, drawn on the host.
        """
        if rng is None and self._bk.DEVICE:
            self._bk.normal_fill(out, self._noise_key, self._noise_counter)
            self._noise_counter += 1
            return
        rng = self.rng if rng is None else rng
        if isinstance(out, np.ndarray):
            rng.standard_normal(out=out, dtype=out.dtype)
        else:
            out[...] = self._bk.asarray(rng.standard_normal(out.shape, dtype=out.dtype))

    # ------------------------------------------------------------------ backward
    def backward(self, cache):
        """Gradients of ``cache.loss`` for every parameter, written into the flat gradient
        buffer.  Returns :class:`Grads` (views, overwritten by the next backward)."""
        if not isinstance(cache, Cache):
            raise TypeError(f"backward expects the Cache returned by forward, got {type(cache).__name__}")
        if cache.stale:
            raise RuntimeError("this cache is stale: a later forward pass on a batch of the same "
                               "shape overwrote its buffers; call backward before the next forward")
        bk, ws, p, gr = self._bk, cache._ws, self._params, self._grads
        act, alpha = self._act, self._alpha
        B = ws.B
        # dec.out.b and dec.logscale gradients were written by likelihood_fwd_bwd in forward
        dec = self._layers("dec")
        g_in = [ws.z] + ws.g  # the input of each decoder product
        bk.matmul(gr["dec.out.W"], g_in[-1], ws.dout, trans_a=True)
        d = ws.dout
        Wnext = p["dec.out.W"]
        for j in range(len(dec) - 1, -1, -1):
            W, b, gW, gb = dec[j]
            pre = ws.scratch(*ws.dg[j].shape)
            bk.matmul(pre, d, Wnext, trans_b=True)
            bk.act_bias_bwd(ws.dg[j], gb, pre, ws.g[j], act, alpha)
            bk.matmul(gW, g_in[j], ws.dg[j], trans_a=True)
            d, Wnext = ws.dg[j], W
        bk.matmul(ws.dz, d, Wnext, trans_b=True)
        kl_weight = self.beta * self.kl_scale / B
        bk.reparam_kl_bwd(ws.dhead, gr["enc.head.b"], ws.dz, ws.eps, ws.mu, ws.sigma, ws.head,
                          ws.kl_dim, kl_weight, self.free_bits, *LOGVAR_RANGE)
        enc = self._layers("enc")
        h_in = [cache.x] + ws.h
        bk.matmul(gr["enc.head.W"], h_in[-1], ws.dhead, trans_a=True)
        d, Wnext = ws.dhead, p["enc.head.W"]
        for i in range(len(enc) - 1, -1, -1):
            W, b, gW, gb = enc[i]
            pre = ws.scratch(*ws.dh[i].shape)
            bk.matmul(pre, d, Wnext, trans_b=True)
            bk.act_bias_bwd(ws.dh[i], gb, pre, ws.h[i], act, alpha)
            bk.matmul(gW, h_in[i], ws.dh[i], trans_a=True)
            d, Wnext = ws.dh[i], W
        return self._grads

    def loss_and_grad(self, x, eps=None):
        """(loss, grads) for one batch: :meth:`forward` then :meth:`backward`."""
        cache = self.forward(x, eps)
        return cache.loss, self.backward(cache)

    def train_step(self, x, opt):
        """One optimisation step on batch x (B, D) with optimizer ``opt``; returns the loss."""
        cache = self.forward(x)
        opt.step(self.backward(cache))
        return cache.loss

    # ---------------------------------------------------------------- inference
    def encode(self, x):
        """(mu, logvar) of q(z|x), each (B, Z), as new arrays (logvar clamped)."""
        x = check_batch(x, self, True, check_range=False)
        ws = self._pool.get(x.shape[0], 1)
        ws.generation += 1
        self._encoder_forward(ws, x)
        ws.head += self._params["enc.head.b"]
        Z = self.latent_dim
        return ws.head[:, :Z].copy(), self._bk.xp.clip(ws.head[:, Z:], *LOGVAR_RANGE)

    def decode(self, z):
        """Decoder mean for latent codes z (N, Z): pixel probabilities (Bernoulli) or means
        (Gaussian), (N, D), as a new array."""
        bk = self._bk
        z = check_latent(z, self)
        h = z
        for W, b, _, _ in self._layers("dec"):
            y = bk.xp.empty((h.shape[0], W.shape[1]), dtype=self.dtype)
            bk.matmul(y, h, W)
            bk.bias_act_fwd(y, b, self._act, self._alpha)
            h = y
        out = bk.xp.empty((h.shape[0], self.input_dim), dtype=self.dtype)
        bk.matmul(out, h, self._params["dec.out.W"])
        final = ACT_SIGMOID if self._lik == LIK_BERNOULLI else ACT_IDENTITY
        bk.bias_act_fwd(out, self._params["dec.out.b"], final, 0.0)
        return out

    def sample(self, n):
        """n draws of the decoder mean at z ~ N(0, I): an (n, D) array."""
        n = positive_int(n, "n")
        z = self._bk.xp.empty((n, self.latent_dim), dtype=self.dtype)
        self._draw_normal(z)
        return self.decode(z)

    def reconstruct(self, x):
        """Decoder mean at z = mu(x) (no sampling): an (B, D) array."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    # ----------------------------------------------------------- training, files
    def fit(self, X, epochs=1, batch_size=128, optimizer="adam", lr=1e-3, val=None,
            kl_warmup=0, shuffle=True, callbacks=(), progress=True, checkpoint=None,
            **kw):
        """Train on X for ``epochs`` more epochs; see :func:`fastvae.train.fit`."""
        from .train import fit
        return fit(self, X, epochs, batch_size, optimizer, lr, val, kl_warmup, shuffle,
                   callbacks, progress, checkpoint, **kw)

    def elbo(self, X, n_samples=1, batch_size=1000, seed=0):
        """The ELBO of dataset X, estimated with ``n_samples`` draws of z per datapoint;
        see :func:`fastvae.train.elbo`."""
        from .train import elbo
        return elbo(self, X, n_samples, batch_size, seed)

    def save(self, path):
        """Write a checkpoint (atomically); see :func:`fastvae.io.save`."""
        from .io import save
        return save(self, path)

    def __repr__(self):
        sizes = "-".join(map(str, (self.input_dim, *self.enc_hidden, self.latent_dim,
                                   *self.dec_hidden, self.input_dim)))
        return (f"VAE({sizes}, activation={self.activation!r}, likelihood={self.likelihood!r}, "
                f"n_samples={self.n_samples}, beta={self.beta}, dtype={self.dtype.name!r}, "
                f"backend={self.backend!r}, parameters={self.n_parameters})")


def _as_tuple(v):
    if isinstance(v, (int, np.integer)):
        return (int(v),)
    return tuple(v)


def _parse_obs_scale(obs_scale, lik, D):
    """-> (learn_scale, logscale parameter size (0 if none), fixed log-scale value)."""
    if obs_scale == "learned":
        learned, size = True, 1
    elif obs_scale == "per_pixel":
        learned, size = True, D
    else:
        try:
            s = float(obs_scale)
        except (TypeError, ValueError):
            raise ValueError("obs_scale must be a positive number, 'learned' or 'per_pixel', "
                             f"got {obs_scale!r}") from None
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"obs_scale must be a positive finite number, got {obs_scale!r}")
        return False, 0, math.log(s)
    if lik != LIK_GAUSSIAN:
        raise ValueError(f"obs_scale={obs_scale!r} needs likelihood='gaussian'")
    return learned, size, 0.0
