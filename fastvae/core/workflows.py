"""The model's methods that run other parts of fastvae on it: training, the estimates over a
dataset, checkpoint files and ONNX export.  Each delegates to the module that does the work
(imported when first used), so that ``core/model.py`` holds the engine alone."""
from __future__ import annotations

from . import snapshot
from .inference import on_device as _on_device
from ..io import checkpoint as _io


class Workflows:
    """fit, elbo, log_likelihood, score_samples, diagnostics, save and export_onnx, for
    :class:`fastvae.VAE`."""

    @_on_device
    def fit(self, X, epochs=1, batch_size=None, optimizer=None, lr=None, val=None,
            kl_warmup=None, shuffle=None, callbacks=(), progress=True, checkpoint=None, *,
            conditions=None, exposure=None, **kw):
        """Train on X for ``epochs`` more epochs, from wherever the training state stands;
        settings not given keep their saved values.  See :func:`fastvae.training.fit.fit`.

        conditions (N, C), exposure (N,): a block model's conditions and exposures for the
        rows of X (:meth:`compose`); ``val`` is then a tuple (X_val, conditions[,
        exposure]) when the model has them."""
        from ..training.fit import fit
        X = self.compose(X, conditions, exposure)
        if isinstance(val, tuple):
            val = self.compose(*val, name="val")
        elif val is not None and self.columns is not None and (self.columns.C or
                                                                self.columns.E):
            val = self.compose(val, name="val")  # (says what is missing)
        return fit(self, X, epochs, batch_size, optimizer, lr, val, kl_warmup, shuffle,
                   callbacks, progress, checkpoint, **kw)

    @_on_device
    def elbo(self, X, n_samples=1, batch_size=1000, seed=0, comm=None, *, conditions=None,
             exposure=None):
        """The ELBO of dataset X, estimated with ``n_samples`` draws of z per datapoint
        (shared between MPI ranks with ``comm``); see :func:`fastvae.core.evaluate.elbo`."""
        from .evaluate import elbo
        X = self.compose(X, conditions, exposure)
        return elbo(self, X, n_samples, batch_size, seed, comm=comm)

    @_on_device
    def log_likelihood(self, X, k=5000, batch_size=None, seed=0, comm=None, *,
                       conditions=None, exposure=None):
        """The importance-weighted estimate of log p(x) per row of X with k samples (per_row,
        mean, nll, stderr; rows shared between MPI ranks with ``comm``); see
        :func:`fastvae.core.evaluate.log_likelihood`."""
        from .evaluate import log_likelihood
        X = self.compose(X, conditions, exposure)
        return log_likelihood(self, X, k, batch_size, seed, comm=comm)

    @_on_device
    def score_samples(self, X, k=None, n_samples=1, per_column=False, batch_size=1000,
                      seed=0, *, conditions=None, exposure=None, encoder_x=None):
        """Per-row anomaly scores of X (N,) in nats, higher for less likely rows: the
        negative ELBO, or with ``k`` the importance-weighted negative log-likelihood;
        ``per_column=True`` adds each column's share (N, D).  ``encoder_x`` (N, D): what
        the encoder reads instead of X (the likelihood still scores X).  See
        :func:`fastvae.core.evaluate.score_samples`."""
        from .evaluate import score_samples
        X = self.compose(X, conditions, exposure)
        enc = None if encoder_x is None else self.compose(encoder_x, conditions, exposure,
                                                          name="encoder_x")
        return score_samples(self, X, k, n_samples, per_column, batch_size, seed,
                             encoder_X=enc)

    @_on_device
    def diagnostics(self, X, batch_size=1000, *, conditions=None, exposure=None):
        """Active units, KL and mean sigma per latent dimension over X; see
        :func:`fastvae.core.evaluate.diagnostics`."""
        from .evaluate import diagnostics
        X = self.compose(X, conditions, exposure)
        return diagnostics(self, X, batch_size)

    @_on_device
    def save(self, path):
        """Write a checkpoint (atomically): the model and its whole training state, so that
        :func:`fastvae.load` then ``fit`` continues exactly.  Returns the path."""
        meta, arrays = snapshot.snapshot(self)
        return _io.write(path, meta, arrays)

    @_on_device
    def export_onnx(self, path, part="vae", opset=None):
        """Write ``part`` ("encoder" | "decoder" | "vae") of this model to ``path`` as an
        ONNX graph (needs ``pip install 'fastvae[onnx]'``); see :mod:`fastvae.io.export` for
        the names, the opset and what the graph computes.  Returns the path."""
        from ..io.export import export_onnx
        return export_onnx(self, path, part, opset)

