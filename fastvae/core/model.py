"""The engine: parameters in one flat buffer, forward and backward written out in mirrored
order.

Read ``forward`` and ``backward`` side by side: backward calls the kernels of forward in
exactly the reverse order, and every buffer that backward reads was saved by forward for that
reason (see the comments marked SAVE).  Only backward writes gradients.

:class:`Engine` is the checked configuration (:class:`~fastvae.core.spec.Spec`), its
parameters (the layout of :mod:`fastvae.core.params`), the explicit passes and their
workspaces.  A training run's optimizer, settings, position and history live in one
:class:`~fastvae.training.state.TrainState` (``model.train_state``), which ``fit`` reads and
advances and a checkpoint saves whole; ``fit``, the estimates and the files are the public
:class:`fastvae.VAE`'s (:mod:`fastvae.vae`), a layer above.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np

from .. import backends as _backend
from ..backends.aligned import aligned_zeros
from ..backends.codes import LOGSCALE_FLOOR, LOGVAR_RANGE
from .cache import Cache, DeviceFloat, Grads
from .inference import Inference, on_device as _on_device
from .noise import Noise
from .params import initial_values, spec_layout, views
from .precision import Products, bf16_rule_config, precision_config
from .spec import Spec
from .step import ALONE
from .validate import (OBJECTIVES, boolean, check_batch, check_eps, choice, data_bounds,
                       positive_int)
from .workspace import Workspace, WorkspacePool


class Engine(Spec, Inference):
    """A fully connected VAE with explicit, hand-written forward and backward passes.

    Parameters
    ----------
    input_dim : int        D, the number of pixels / features per datapoint (for a list of
                           blocks it may be None: the blocks' columns add up to D).
    hidden : int or tuple of int
                           encoder hidden widths (the decoder mirrors them unless
                           ``decoder_hidden`` is given); () for none.
    latent_dim : int       Z.
    activation : str       relu | leaky_relu | tanh | sigmoid | elu | softplus.
    likelihood : str or list of blocks
                           "bernoulli" (decoder outputs logits; data in [0, 1]),
                           "gaussian" (decoder outputs means), or a list of column blocks
                           (:mod:`fastvae.core.blocks`: Gaussian, Bernoulli, Categorical,
                           Poisson, NegBinomial, ZINB) over consecutive columns of x.
    n_samples : int        L latent samples per datapoint; the reconstruction term is
                           their mean.
    beta : float >= 0      weight of the KL term.  free_bits : float >= 0, per-dimension
                           floor (in nats) on the batch-mean KL.
    dtype : str            "float32" or "float64".
    seed : int >= 0        seeds initialisation and the training noise eps, reproducibly.
    backend : str or None  "numpy" | "cpu" | "cuda" | "auto"; None uses the default
                           (see :mod:`fastvae.backends`).
    decoder_hidden : int or tuple of int, or None
    obs_scale : float > 0 | "learned" | "per_pixel"
                           Gaussian only: a fixed observation standard deviation, one
                           learned log-scale shared by all pixels (the sigma-VAE), or one
                           per pixel.  Learned scales are the parameter ``dec.logscale``
                           (raw; the log standard deviation is its soft floor at
                           LOGSCALE_FLOOR, see :meth:`obs_logscale`).
    activation_alpha : float > 0 or None
                           leaky_relu slope (default 0.01) or ELU scale (default 1.0); an
                           error for activations that have none.  It must be positive:
                           backward reads the derivative off the sign of the output.

    n_conditions : int >= 0
                           C condition columns (one-hot or numeric) that the encoder and the
                           decoder both read (a conditional VAE); the methods that take data
                           then take ``conditions=`` (N, C).
    encode_conditions : bool
                           False: only the decoder reads the conditions (scVI's default,
                           ``encode_covariates=False``): z must explain each row without
                           them, which pushes what the conditions explain, a batch effect,
                           out of the codes.  True (the default): both halves read them.
    inject_conditions : bool
                           True: every product of the decoder reads the conditions, not
                           only the first: each hidden layer's input and the output layer's
                           are [h | conditions] (scVI's ``inject_covariates`` does this for
                           its hidden layers).  Through the output layer a one-hot condition
                           shifts every output by a learned amount of its own (a batch's
                           log-fold change per gene), which the codes then need not carry.
                           Needs n_conditions > 0; default False.
    missing : None or "mask"
                           "mask": NaN cells of x are missing: the likelihood sums the
                           observed cells only, and the encoder reads the zero-filled row and
                           its observed mask.  None: NaN is an error.
    precision : "full" or "bf16"
                           "full" (the default): every product in the model's dtype.
                           "bf16": mixed precision, every matrix product of forward and
                           backward on bfloat16 operands with float32 sums (dtype float32;
                           the parameters, optimizer, elementwise kernels, loss and
                           checkpoints stay float32: see :mod:`fastvae.core.precision`).  It
                           needs a backend that runs bf16 products here: a GPU of compute
                           capability 8.0+, a CPU with AVX512_BF16 or AMX and ``pip install
                           'fastvae[bf16]'``, or the numpy backend (exact, slow emulation);
                           elsewhere it is an error that says what is missing.  bf16
                           goes where it pays: products smaller than ``bf16_rule`` run in
                           float32.
    bf16_rule : (min_macs, min_k) or None
                           A product takes bf16 operands when it has at least min_macs
                           multiply-adds and sums over at least min_k terms; None (the
                           default) is :data:`fastvae.core.precision.BF16_RULE`, (0, 0)
                           every product.  Shapes alone decide, so a resumed run makes the
                           same choices on any machine; saved with the model.

    Block models (a list likelihood, conditions or missing cells) run on the block kernels
    (:mod:`fastvae.backends.reference_blocks`); their data rows are ``[x | conditions |
    exposure]`` (:class:`fastvae.core.columns.Columns`), which the public methods compose
    from ``X, conditions=, exposure=``.  Their extra parameters: ``dec.logscale`` (learned
    Gaussian log-scales, raw) and ``dec.log_theta`` (negative binomial log inverse
    dispersions).

    A model pickles and deep-copies (parameters, noise position, training state; the backend
    by name), and ``pickle`` and :meth:`save` hold the same content.
    """

    def __init__(self, input_dim=None, hidden=(400,), latent_dim=20, activation="relu",
                 likelihood="bernoulli", n_samples=1, beta=1.0, free_bits=0.0,
                 dtype="float32", seed=0, backend=None, *, decoder_hidden=None,
                 obs_scale=1.0, activation_alpha=None, objective="elbo", n_conditions=0,
                 missing=None, encode_conditions=True, inject_conditions=False,
                 precision="full", bf16_rule=None):
        Spec.__init__(self, input_dim, hidden, latent_dim, activation, likelihood, n_samples,
                      beta, free_bits, dtype, seed, decoder_hidden=decoder_hidden,
                      obs_scale=obs_scale, activation_alpha=activation_alpha,
                      objective=objective, n_conditions=n_conditions, missing=missing,
                      encode_conditions=encode_conditions,
                      inject_conditions=inject_conditions)
        cl = self.columns
        self.backend, device_id = _backend.split(_backend.resolve(backend))
        self.kernels = _backend.get(self.backend)
        xp = self.kernels.xp
        #: the GPU this model lives on (cuda backend; "cuda:N" picks it, "cuda" takes the
        #: current one); None elsewhere.  Every pass makes it current (:meth:`on_device`).
        self.device_id = None
        if self.kernels.DEVICE:
            self.device_id = xp.cuda.Device().id if device_id is None else device_id
        with self.on_device():  # the parameters live on the model's GPU
            self._entries, size = spec_layout(self, self._injected())
            init_rng, noise_rng = np.random.SeedSequence(self.seed).spawn(2)
            # the training noise (Philox keyed by the seed; see core/noise.py), and the
            # stream a loss-only pass given neither eps nor rng draws from, so that
            # evaluating never changes what training draws (not saved: not the run's state)
            self.noise = Noise(noise_rng.generate_state(2, np.uint32))
            self.eval_noise = Noise(np.random.SeedSequence((self.seed, 0xE7A1)).generate_state(
                2, np.uint32))
            host = initial_values(self._entries, size, self.dtype, self.learn_scale,
                                  np.random.Generator(np.random.PCG64(init_rng)))
            self.flat_params = self.kernels.asarray(host)
            self.flat_grads = aligned_zeros(xp, size, self.dtype)
            self._params = views(self.flat_params, self._entries)
            self.grads = Grads(views(self.flat_grads, self._entries), self.flat_grads)
            self._fixed_logscale = xp.full(1, self.fixed_logscale, dtype=self.dtype)
            if cl is not None:  # the kernels' tables, and the fixed entries of the aux vector
                self.tables = {k: self.kernels.asarray(getattr(cl, k)) for k in (
                    "cols", "meta", "enc_src", "enc_mode", "cat_cols", "cat_rows",
                    "cond_cols")}
                self.tables["cond_only"] = self.kernels.asarray(np.arange(cl.C, dtype=np.int32))
                self._aux_fixed = self.kernels.asarray(cl.aux_fixed.astype(self.dtype))
            self.workspaces = WorkspacePool(self._new_workspace)
        self._bf16_rule = None if bf16_rule is None else bf16_rule_config(bf16_rule, "bf16")
        self.precision = precision
        #: the training run's state (optimizer, settings, position, history); None until
        #: the first fit.  See :class:`fastvae.training.state.TrainState`.
        self.train_state = None
        self.metadata = {}      # free-form JSON-able notes saved with checkpoints (data, image shape)

    def on_device(self):
        """A context in which this model's GPU is CuPy's current one (cuda backend; on the
        CPU it does nothing).  Every pass enters it, so models on different GPUs can be used
        side by side; code that launches its own CuPy work on the model's arrays can too."""
        if self.device_id is None:
            return contextlib.nullcontext()
        return self.kernels.xp.cuda.Device(self.device_id)

    @property
    def precision(self):
        """'full' or 'bf16' (see the class docstring); settable, e.g. to evaluate a model
        trained in bf16 at full precision on a machine without bf16 units."""
        return self._precision

    @precision.setter
    def precision(self, value):
        self._precision = precision_config(value, self.dtype, self.kernels)
        if value == "bf16":
            self._bf16_rule = bf16_rule_config(self._bf16_rule, value)
        #: the passes' matrix products (fastvae.core.precision)
        self._mm = Products(self.kernels, self._params, self._precision, self._bf16_rule)
        for ws in self.workspaces.values():  # shadows made before the switch are stale
            ws.half_fresh.clear()

    @property
    def optimizer(self):
        """The optimizer of the training run (``train_state.optimizer``), or None."""
        return None if self.train_state is None else self.train_state.optimizer

    @property
    def history(self):
        """One dict per completed epoch of the training run (``train_state.history``)."""
        return [] if self.train_state is None else self.train_state.history

    # ----------------------------------------------------------------- structure
    def parameters(self):
        """OrderedDict name -> parameter view (see the class docstring for the names).

        Writing into a view writes the model's parameters.
        """
        return self._params

    @property
    def n_parameters(self):
        return sum(v.size for v in self._params.values())

    @property
    def data_rule(self):
        """What a data scan checks rows against (Dataset.check): the likelihood's name, or
        a block model's :class:`~fastvae.core.columns.Columns`."""
        return self.likelihood if self.columns is None else self.columns

    @property
    def row_width(self):
        """The width of the model's data rows: input_dim, or for a block model D + the
        conditions + the exposure column (:class:`~fastvae.core.columns.Columns`)."""
        return self.input_dim if self.columns is None else self.columns.width

    def compose(self, X, conditions=None, exposure=None, name="X"):
        """The model's data rows for X (N, D), its conditions (N, C) and exposure (N,):
        X itself for a model without conditions or exposures (see
        :meth:`fastvae.core.columns.Columns.compose`)."""
        if self.columns is None:
            if conditions is not None or exposure is not None:
                raise ValueError("conditions/exposure given, but the model takes none "
                                 "(build it with n_conditions=C, or a count block with "
                                 "exposure=True)")
            return X
        if not (hasattr(X, "shape") or isinstance(X, (list, tuple))):
            return X  # a Dataset, which holds the rows already (checked by its width)
        return self.columns.compose(X, conditions, exposure, dtype=self.dtype, name=name)

    def _new_workspace(self, B, L, train):
        cl = self.columns
        out_dim = self.input_dim if cl is None else cl.P
        S = self.logscale_size if cl is None else max(cl.n_aux, 1)
        return Workspace(self.kernels.xp, self.dtype, B, L, self.enc_hidden, self.latent_dim,
                         self.dec_hidden, out_dim, S, train,
                         where="GPU" if self.kernels.DEVICE else "host",
                         n_dense=0 if cl is None else cl.n_dense,
                         n_cond=0 if cl is None else cl.C, n_inject=self._injected())

    def _injected(self):
        """The conditions' columns in the input of each decoder product after the first
        (C with inject_conditions, else 0)."""
        return self.columns.C if self.inject_conditions else 0

    #: what a :meth:`replica` owns; everything else it takes from its model
    REPLICA_OWNS = ("flat_grads", "grads", "noise", "eval_noise", "workspaces", "_mm",
                    "train_state", "metadata")

    def replica(self):
        """A model for one shard of a data-parallel step on another thread (fit's
        ``shards``): the same configuration and the same parameter arrays (an update of
        either is the other's), but its own gradient buffer, workspaces, bf16 weight
        shadows and noise position, so that two passes can run at once.  It is a working
        part of a step, not a copy to keep: it has no training state.  Before each use,
        :meth:`update_replica` brings it up to this model's settings and noise position."""
        with self.on_device():
            flat = aligned_zeros(self.kernels.xp, self.flat_grads.size, self.dtype)
        r = object.__new__(type(self))
        r.__dict__.update(self._shared_state(), flat_grads=flat,
                          grads=Grads(views(flat, self._entries), flat),
                          noise=Noise(self.noise.key, self.noise.counter),
                          eval_noise=Noise(self.eval_noise.key, self.eval_noise.counter),
                          # (the factory reads the configuration alone, which the two share)
                          workspaces=WorkspacePool(self._new_workspace),
                          _mm=Products(self.kernels, self._params, self._precision,
                                       self._bf16_rule),
                          train_state=None, metadata={})
        return r

    def update_replica(self, r):
        """Bring the replica ``r`` (from :meth:`replica`) up to this model: every setting
        as it is now (beta, the KL warm-up's scale, the precision, ...; a training run or
        a callback may change them) and the noise position, keeping the buffers it owns
        (its bf16 shadows are made anew when the precision changed)."""
        own = {k: r.__dict__[k] for k in self.REPLICA_OWNS}
        if own["_mm"].bf16 != (self._precision == "bf16") or own["_mm"].rule != \
                self._mm.rule:
            own["_mm"] = Products(self.kernels, self._params, self._precision,
                                  self._bf16_rule)
            for ws in own["workspaces"].values():  # (shadows made before the switch)
                ws.half_fresh.clear()
        own["noise"].give_back(self.noise.mark())
        r.__dict__.clear()
        r.__dict__.update(self._shared_state(), **own)

    def _shared_state(self):
        """What a replica takes from this model: its attributes but functions set on the
        instance (a method patched on this model calls it, not a replica)."""
        return {k: v for k, v in self.__dict__.items()
                if not isinstance(v, (types.FunctionType, types.MethodType))}

    def _layers(self, side):
        """[(W, b, gW, gb)] of the hidden layers of 'enc' or 'dec', in forward order."""
        n = len(self.enc_hidden if side == "enc" else self.dec_hidden)
        p, g = self._params, self.grads
        return [(p[f"{side}.{i}.W"], p[f"{side}.{i}.b"], g[f"{side}.{i}.W"], g[f"{side}.{i}.b"])
                for i in range(n)]

    @_on_device
    def obs_logscale(self):
        """The Gaussian observation log standard deviation in use, as a host array of shape
        (1,) (fixed or shared) or (D,) (per pixel): for learned scales the soft floor
        LOGSCALE_FLOOR + softplus(raw - LOGSCALE_FLOOR) of the parameter ``dec.logscale``."""
        if not self.learn_scale:
            return self.kernels.to_numpy(self._fixed_logscale).copy()
        ls = self.kernels.xp.empty(self.logscale_size, dtype=self.dtype)
        self.kernels.logscale_fwd(ls, self._params["dec.logscale"], LOGSCALE_FLOOR)
        return self.kernels.to_numpy(ls).copy()

    # ------------------------------------------------------------------- forward
    @_on_device
    def forward(self, x, eps=None, *, n_samples=None, rng=None, validate=True, grad=True,
                objective=None, step=None, encoder_x=None):
        """Run the encoder, the sampling step, the decoder and the fused loss.

        x : (B, D) array of the model's dtype (other float dtypes are converted, which
            copies; integer dtypes are refused).  eps : (L, B, Z), or (B, Z) when L = 1,
            standard normal noise; drawn from ``rng`` when None (default: the model's
            training noise, or with grad=False a stream of its own that training never
            sees; see :meth:`draw_normal`).  Either way it is saved in the cache: it is what
            carries the gradient through the sample.  n_samples : L for this pass
            (default ``model.n_samples``).  validate=False skips the NaN/range scan of x
            (for data already checked, as ``fit`` does).
        grad : True (default) computes, with the loss and in the same fused pass, the loss
            gradient with respect to the decoder output, held in the workspace for
            :meth:`backward`; no parameter gradient is written until backward.  False is a
            loss-only pass for evaluation, in its own workspace: it leaves a training
            forward's cache (and every gradient) untouched, and its cache cannot go to
            backward.
        objective : "elbo" | "iwae" | "iwae-dreg" for this pass (default: the model's).
            With an importance-weighted objective the L samples of a row are its K
            importance samples: the loss is the IWAE bound, and the likelihood's gradient
            (computed after every row's loss, since each row is weighted by its normalised
            importance weight) is held for backward like the ELBO's.
        step : a :class:`~fastvae.core.step.StepContext` when this pass is part of a larger
            step (fit's device-side loss sums, a data-parallel shard's place in the global
            batch); None for a pass on its own.
        encoder_x : (B, D) rows the encoder reads instead of x (a loss-only pass: the
            likelihood still scores x).  A table model's scores read numbers clipped to
            their training range this way, so an absurd cell does not move the code.
        Returns a :class:`Cache`.
        """
        bk = self.kernels
        step = ALONE if step is None else step
        grad, validate = boolean(grad, "grad"), boolean(validate, "validate")
        obj = self.objective if objective is None else choice(objective, "objective",
                                                                 OBJECTIVES)
        # on a GPU the values are checked on the device and the counts read with the loss:
        # a step does not wait for its input check (fit checks its data once, up front)
        block = self.columns is not None
        # a block model's rows are checked on the host, by column (fit checks once, up front)
        x = check_batch(x, self, validate and (block or not bk.DEVICE))
        L = self.n_samples if n_samples is None else positive_int(n_samples, "n_samples")
        B, Z = x.shape[0], self.latent_dim
        ws = self.workspaces.get(B, L, grad)
        ws.generation += 1
        ws.checking = bool(validate and bk.DEVICE and not block)
        if ws.checking:
            bk.check_data_into(ws.bad, x, *data_bounds(self))
        if eps is None:
            self.draw_normal(ws.eps.reshape(L, B, Z), rng, step.row0, training=grad)
        else:
            ws.eps[...] = check_eps(eps, L, B, Z, self.kernels.xp)
        p = self._params
        if encoder_x is not None:
            if grad:
                raise ValueError("encoder_x is for loss-only passes (grad=False)")
            encoder_x = check_batch(encoder_x, self, False)
            if encoder_x.shape != x.shape:
                raise ValueError(f"encoder_x has shape {tuple(encoder_x.shape)}; x has "
                                 f"{tuple(x.shape)}")
        self._encoder_forward(ws, x if encoder_x is None else encoder_x)
        # SAVE eps, sigma, mu and the raw logvar (in head): the sample path and the clamp
        bk.reparam_kl_fwd(ws.mu, ws.logvar, ws.sigma, ws.z, ws.kl, ws.kl_dim, ws.head,
                          p["enc.head.b"], ws.eps, *LOGVAR_RANGE)
        # a shard of a data-parallel step: gradients of the global batch's mean loss, and
        # free bits gated on the global batch's per-dimension KL
        ws.batch = B if step.batch is None else step.batch
        if step.reduce_kl is not None and self.free_bits > 0:
            step.reduce_kl(ws.kl_dim, B)
        Bg = ws.batch
        self._decoder_forward(ws, ws.z, x)
        ls = self._logscale_forward(ws)
        ws.objective = obj
        self._mm.stale(ws, "lik")  # (ws.dout, the likelihood's gradient, is rewritten below)
        obj_rows = ws.no_rows
        if block:
            obj_rows = self._blocks_loss(ws, x, ls, obj, grad, Bg, L)
        elif obj != "elbo":
            # the weights need every sample's loss first: loss pass, weights, then the
            # gradient pass with each row weighted (SAVE wnorm, dout, dout_b, dls)
            bk.likelihood_fwd(ws.loss_rows, ws.out, p["dec.out.b"], x, ls, self.lik_code)
            bk.iwae_fwd(ws.logw, ws.wnorm, ws.loss_b, ws.loss_rows, ws.z, ws.eps, ws.logvar)
            if grad:
                bk.likelihood_bwd(ws.dout, ws.dout_b, ws.dls, ws.out, x, ls, self.lik_code,
                                  self.learn_scale, ws.wnorm, 1.0 / Bg)
            obj_rows = ws.loss_b
        elif grad:
            # SAVE dout, dout_b, dls: the loss gradient is computed with the loss (one
            # pass); backward starts from it and copies the bias and scale gradients out
            # (dout's bf16 shadow for the two products backward starts with, written by
            # the likelihood kernel as it writes dout)
            R, P, Wo = ws.dout.shape[0], ws.dout.shape[1], p["dec.out.W"]
            half = self._mm.shadow(ws, "lik", ws.dout, ((Wo.shape[0], P, R),
                                                        (R, Wo.shape[0], P)))
            bk.likelihood_fwd_bwd(ws.dout, ws.loss_rows, ws.dout_b, ws.dls, ws.out,
                                  p["dec.out.b"], x, ls, self.lik_code, self.learn_scale,
                                  1.0 / (Bg * L), half=half)
        else:
            bk.likelihood_fwd(ws.loss_rows, ws.out, p["dec.out.b"], x, ls, self.lik_code)
        recon = ws.loss_rows
        if L > 1:  # the mean over the L samples (np.mean(out=) would allocate: sum, scale)
            recon = ws.recon
            bk.xp.sum(ws.loss_rows.reshape(L, B), axis=0, out=recon)
            recon *= recon.dtype.type(1.0 / L)
        acc, weight = (ws.stats, 0.0) if step.acc is None else (step.acc, step.weight)
        bk.loss_stats(ws.stats, acc, ws.loss_rows, ws.kl, ws.kl_dim, self.free_bits,
                      self.beta * self.kl_scale, weight, obj_rows)
        cache = Cache(ws, x, recon, bk)
        if not bk.DEVICE:
            cache.values()  # free on the host; on a GPU it would wait for the step
        return cache

    def _encoder_forward(self, ws, x):
        """Hidden layers into ws.h, then the head product (bias not yet added) into ws.head.
        A block model's first product reads its dense input columns (SAVE: ws.xin) and
        gathers the categorical codes' rows."""
        self._mm.stale(ws, "e", "enc.")  # new rows, and the weights may have changed
        if self.columns is None:
            self._stack_forward(ws, "enc", x, ws.h, ws.head, "enc.head.W")
            return
        if ws.xin is not None:
            t = self.tables
            self.kernels.encoder_input(ws.xin, x, t["enc_src"], t["enc_mode"])
        self._stack_forward(ws, "enc", ws.xin, ws.h, ws.head, "enc.head.W", raw=x)

    def _decoder_forward(self, ws, z, x=None, cond_cols=None):
        """Hidden layers into ws.g, then the output product (bias not yet added) into
        ws.out; z (R, Z) with R = ws.R.  With conditions the input is [z | the conditions
        of x (B, W) in its columns ``cond_cols``] (default: the data rows' condition
        columns), built in ws.zin (SAVE); with inject_conditions each later product's
        input is [g_j | the same conditions], built in ws.gin[j] (SAVE)."""
        self._mm.stale(ws, "g", "dec.")
        join = None
        if ws.zin is not None:
            cols = self.tables["cond_cols"] if cond_cols is None else cond_cols
            self.kernels.decoder_input(ws.zin, z, x, cols)
            z = ws.zin
            if ws.gin is not None:  # inject_conditions: [g_j | conditions] (SAVE: ws.gin)
                def join(j, g):
                    self.kernels.decoder_input(ws.gin[j], g, x, cols)
                    return ws.gin[j]
        self._stack_forward(ws, "dec", z, ws.g, ws.out, "dec.out.W", join=join)

    def _stack_forward(self, ws, side, x, hidden, out, last_W, raw=None, join=None):
        """x through the hidden layers of ``side`` into the buffers ``hidden`` (SAVE: act'
        is read off them), then out = last hidden @ params[last_W].  ``raw``: the data
        rows of a block model, whose first product has a categorical part; ``join(i, h)``:
        the input of product i + 1 made from hidden layer i's output (the decoder's
        [h | conditions]).  The input of product i is keyed "e<i>" (encoder) or "g<i>"
        (decoder) for its bf16 shadow."""
        bk, h, key = self.kernels, x, "e" if side == "enc" else "g"
        layers = self._layers(side)
        for i, ((W, b, _, _), hi) in enumerate(zip(layers, hidden)):
            self._product(ws, hi, h, f"{key}{i}", W, f"W:{side}.{i}.W", raw)
            half = None
            # (with injected conditions the next product reads [h | conditions], not h)
            if self._mm.bf16 and join is None:
                # hi's readers: the next product and, backward, its weight gradient
                Wn = layers[i + 1][0] if i + 1 < len(layers) else self._params[last_W]
                R, n = hi.shape
                half = self._mm.shadow(ws, f"{key}{i + 1}", hi,
                                       ((R, Wn.shape[1], n), (n, Wn.shape[1], R)))
            bk.bias_act_fwd(hi, b, self.act_code, self.act_alpha, half=half)
            h, raw = (hi if join is None else join(i, hi)), None
        self._product(ws, out, h, f"{key}{len(hidden)}", self._params[last_W], f"W:{last_W}",
                      raw)

    def _product(self, ws, out, h, hk, W, wk, raw):
        """out = h @ W (hk, wk: the operands' keys); for a block model's first layer (raw
        the data rows) the dense columns' product with W's first rows plus the rows of W
        the categorical codes pick (the product of one-hot columns, without building them)."""
        bk = self.kernels
        if raw is None:
            self._mm(ws, out, h, hk, W, wk)
            return
        cl, t = self.columns, self.tables
        if cl.n_dense:
            self._mm(ws, out, h, hk, W[:cl.n_dense], wk)
        else:
            out.fill(0)
        if cl.n_onehot:
            bk.embed_fwd(out, W[cl.n_dense:], raw, t["cat_cols"], t["cat_rows"])

    def _product_grad(self, ws, gW, h, hk, d, dk, raw):
        """gW = h^T d, the gradient of :meth:`_product` with respect to W."""
        bk = self.kernels
        if raw is None:
            self._mm(ws, gW, h, hk, d, dk, trans_a=True)
            return
        cl, t = self.columns, self.tables
        if cl.n_dense:
            self._mm(ws, gW[:cl.n_dense], h, hk, d, dk, trans_a=True)
        if cl.n_onehot:
            bk.embed_bwd(gW[cl.n_dense:], d, raw, t["cat_cols"], t["cat_rows"])

    def _blocks_loss(self, ws, x, aux, obj, grad, Bg, L):
        """The block likelihood's loss per row, and with grad its gradient held for
        backward (SAVE dout, dout_b and the aux gradient in dls), like the one-likelihood
        kernels; returns the objective's rows (the IWAE loss per datapoint, or none)."""
        bk, t, b = self.kernels, self.tables, self._params["dec.out.b"]
        cols, meta = t["cols"], t["meta"]
        if obj != "elbo":
            bk.blocks_fwd(ws.loss_rows, ws.out, b, x, aux, cols, meta)
            bk.iwae_fwd(ws.logw, ws.wnorm, ws.loss_b, ws.loss_rows, ws.z, ws.eps, ws.logvar)
            if grad:
                bk.blocks_bwd(ws.dout, ws.dout_b, ws.dls, ws.out, x, aux, cols, meta,
                              ws.wnorm, 1.0 / Bg)
            return ws.loss_b
        if grad:
            bk.blocks_fwd_bwd(ws.dout, ws.loss_rows, ws.dout_b, ws.dls, ws.out, b, x, aux,
                              cols, meta, 1.0 / (Bg * L))
        else:
            bk.blocks_fwd(ws.loss_rows, ws.out, b, x, aux, cols, meta)
        return ws.no_rows

    def _logscale_forward(self, ws):
        """The Gaussian log-scale the likelihood uses: the fixed one, or the learned
        parameter softly floored into ws.ls.  A block model's aux vector instead, in ws.ls:
        [fixed log-scales | learned ones, floored | log thetas]."""
        if self.columns is not None:
            return self._aux_into(ws.ls)
        if not self.learn_scale:
            return self._fixed_logscale
        self.kernels.logscale_fwd(ws.ls, self._params["dec.logscale"], LOGSCALE_FLOOR)
        return ws.ls

    def _aux_into(self, buf):
        """A block model's aux vector into buf (>= n_aux,): [fixed Gaussian log-scales |
        learned ones, softly floored | log inverse dispersions]; returns buf."""
        cl = self.columns
        nf, nl, nt = len(cl.aux_fixed), cl.n_logscale, cl.n_theta
        if nf:
            buf[:nf] = self._aux_fixed
        if nl:
            self.kernels.logscale_fwd(buf[nf:nf + nl], self._params["dec.logscale"],
                                      LOGSCALE_FLOOR)
        if nt:
            buf[nf + nl:nf + nl + nt] = self._params["dec.log_theta"]
        return buf

    @_on_device
    def aux_values(self):
        """A block model's aux vector as a float64 host array (n_aux,), laid out as
        :class:`~fastvae.core.columns.Columns` says: each Gaussian block's log standard
        deviation (fixed, or learned and softly floored), then each negative binomial
        column's log inverse dispersion (per condition group when it depends on it)."""
        buf = self.kernels.xp.empty(max(self.columns.n_aux, 1), dtype=self.dtype)
        return self.kernels.to_numpy(self._aux_into(buf)).astype(np.float64)[:self.columns.n_aux]

    def draw_normal(self, eps, rng=None, row0=0, training=True):
        """Fill ``eps`` (L, B, Z) with standard normal noise.

        With ``rng`` None: the model's training noise (:attr:`noise`), or with
        training=False the loss-only passes' stream (:attr:`eval_noise`), which training never
        sees; drawn where the model computes (a GPU step never waits for a copy), the same
        on every backend, and independent of how a batch is split (``row0``: the first
        row's place in the global batch, for data-parallel training; see
        :mod:`fastvae.core.noise`).  An explicit ``rng`` (a NumPy Generator) draws on the host
        instead.
        """
        if rng is None:
            (self.noise if training else self.eval_noise).draw(self.kernels, eps, row0)
        elif isinstance(eps, np.ndarray):
            rng.standard_normal(out=eps, dtype=eps.dtype)
        else:
            eps[...] = self.kernels.asarray(rng.standard_normal(eps.shape, dtype=eps.dtype))

    # ------------------------------------------------------------------ backward
    @_on_device
    def backward(self, cache):
        """Gradients of ``cache.loss`` for every parameter, written into the flat gradient
        buffer (every entry is written; nothing accumulates).  Returns :class:`Grads`
        (views, overwritten by the next backward)."""
        if not isinstance(cache, Cache):
            raise TypeError(f"backward expects the Cache returned by forward, got {type(cache).__name__}")
        if not cache.grad:
            raise RuntimeError("this cache comes from a loss-only forward (grad=False), which "
                               "keeps nothing for backward; call forward(x) for gradients")
        if cache.stale:
            raise RuntimeError("this cache is stale: a later forward pass on a batch of the same "
                               "shape overwrote its buffers; call backward before the next forward")
        bk, ws, p, gr = self.kernels, cache.workspace, self._params, self.grads
        act, alpha = self.act_code, self.act_alpha
        Bg = ws.batch  # the global batch: the gradient of its mean loss
        # the likelihood's bias and scale gradients were computed with the loss in forward
        # and held in the workspace: they become parameter gradients here, and only here
        gr["dec.out.b"][...] = ws.dout_b
        cl = self.columns
        if cl is not None:
            nf, nl, nt = len(cl.aux_fixed), cl.n_logscale, cl.n_theta
            if nl:
                bk.logscale_bwd(gr["dec.logscale"], ws.dls[nf:nf + nl], p["dec.logscale"],
                                LOGSCALE_FLOOR)
            if nt:
                gr["dec.log_theta"][...] = ws.dls[nf + nl:nf + nl + nt]
        elif self.learn_scale:
            bk.logscale_bwd(gr["dec.logscale"], ws.dls, p["dec.logscale"], LOGSCALE_FLOOR)
        dec, mm = self._layers("dec"), self._mm
        mm.stale(ws, "d")  # the gradients' bf16 shadows are of the last backward
        # the input of each decoder product ([z | conditions] for the first, when conditioned)
        # and the keys of the operands' bf16 shadows (fastvae.core.precision)
        g_in = [ws.z if ws.zin is None else ws.zin] + (ws.g if ws.gin is None else ws.gin)
        nd = len(dec)
        mm(ws, gr["dec.out.W"], g_in[-1], f"g{nd}", ws.dout, "lik", trans_a=True)
        d, dk = ws.dout, "lik"
        Wnext, wk = p["dec.out.W"], "W:dec.out.W"
        for j in range(nd - 1, -1, -1):
            W, b, gW, gb = dec[j]
            pre = ws.scratch(*ws.dg[j].shape)
            # (with injected conditions, the rows of Wnext after g_j's are the conditions':
            # observed, they take no gradient)
            mm(ws, pre, d, dk, Wnext[:pre.shape[1]], wk, trans_b=True)
            # (dg_j's readers: its weight gradient and the next input gradient)
            R = pre.shape[0]
            half = mm.shadow(ws, f"dg{j}", ws.dg[j], ((gW.shape[0], gW.shape[1], R),
                                                     (R, W.shape[0], W.shape[1])))
            bk.act_bias_bwd(ws.dg[j], gb, pre, ws.g[j], act, alpha, half=half)
            mm(ws, gW, g_in[j], f"g{j}", ws.dg[j], f"dg{j}", trans_a=True)
            d, dk, Wnext, wk = ws.dg[j], f"dg{j}", W, f"W:dec.{j}.W"
        # (the conditions' rows of the first W take no input gradient: they are observed)
        mm(ws, ws.dz, d, dk, Wnext if ws.zin is None else Wnext[:self.latent_dim], wk,
           trans_b=True)
        if ws.objective == "elbo":
            kl_weight = self.beta * self.kl_scale / Bg
            bk.reparam_kl_bwd(ws.dhead, gr["enc.head.b"], ws.dz, ws.eps, ws.mu, ws.sigma,
                              ws.head, ws.kl_dim, kl_weight, self.free_bits, *LOGVAR_RANGE)
        else:
            bk.reparam_iw_bwd(ws.dhead, gr["enc.head.b"], ws.dz, ws.eps, ws.z, ws.sigma,
                              ws.head, ws.wnorm, 1.0 / Bg, ws.objective == "iwae-dreg",
                              *LOGVAR_RANGE)
        enc = self._layers("enc")
        # the first product's input: the data rows, or a block model's dense input columns
        # (and the rows themselves for its categorical gather)
        raw = None if cl is None else cache.x
        h_in = [cache.x if cl is None else ws.xin] + ws.h
        ne = len(enc)
        self._product_grad(ws, gr["enc.head.W"], h_in[-1], f"e{ne}", ws.dhead, "dhead",
                           raw if not enc else None)
        d, dk, Wnext, wk = ws.dhead, "dhead", p["enc.head.W"], "W:enc.head.W"
        for i in range(ne - 1, -1, -1):
            W, b, gW, gb = enc[i]
            pre = ws.scratch(*ws.dh[i].shape)
            mm(ws, pre, d, dk, Wnext, wk, trans_b=True)
            R = pre.shape[0]
            half = mm.shadow(ws, f"dh{i}", ws.dh[i], ((gW.shape[0], gW.shape[1], R),) + (
                ((R, W.shape[0], W.shape[1]),) if i > 0 else ()))
            bk.act_bias_bwd(ws.dh[i], gb, pre, ws.h[i], act, alpha, half=half)
            self._product_grad(ws, gW, h_in[i], f"e{i}", ws.dh[i], f"dh{i}",
                               raw if i == 0 else None)
            d, dk, Wnext, wk = ws.dh[i], f"dh{i}", W, f"W:enc.{i}.W"
        return self.grads

    def loss_and_grad(self, x, eps=None):
        """(loss, grads) for one batch: :meth:`forward` then :meth:`backward`."""
        cache = self.forward(x, eps)
        return cache.loss, self.backward(cache)

    def train_step(self, x, opt):
        """One optimisation step on batch x (B, D) with optimizer ``opt``; returns the loss.

        On the cuda backend the step does not wait for the GPU: the loss is returned as a
        :class:`~fastvae.core.cache.DeviceFloat`, read (and x's check against NaN and range
        reported) the first time it is used as a number.  On the CPU it is a float."""
        if getattr(opt, "model", None) is not self:
            raise ValueError(f"opt must be an optimizer built for this model (fastvae.Adam("
                             f"model), ...), got {opt!r}" if not hasattr(opt, "model") else
                             "opt was built for another model: its step would update that one")
        cache = self.forward(x)
        opt.step(self.backward(cache))
        if self.kernels.DEVICE:
            return DeviceFloat(lambda: cache.loss)
        return cache.loss

    def __repr__(self):
        sizes = "-".join(map(str, (self.input_dim, *self.enc_hidden, self.latent_dim,
                                   *self.dec_hidden, self.input_dim)))
        lik = (repr(self.likelihood) if self.columns is None or isinstance(self.likelihood, str)
               else "[" + ", ".join(map(repr, self.columns.blocks)) + "]")
        return (f"VAE({sizes}, activation={self.activation!r}, likelihood={lik}, "
                f"n_samples={self.n_samples}, beta={self.beta}, dtype={self.dtype.name!r}, "
                f"backend={self.backend!r}, parameters={self.n_parameters})")
