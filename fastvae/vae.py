"""``fastvae.VAE``, the public model: the engine of :mod:`fastvae.core.model` with the
methods that run the layers above it on the model (training, the estimates over a dataset,
checkpoint files and ONNX export), and :func:`load`.

The engine sits below data, checkpoints and training (``tests/test_architecture.py`` holds
the order); this front end is the one place that ties them to the model, so the engine never
imports upward.  Each method delegates to the module that does the work."""
from __future__ import annotations

from .core.inference import on_device as _on_device
from .core.model import Engine
from .io import checkpoint as _io
from .training import evaluate
from .training.snapshot import restore, saved_config, snapshot


class VAE(Engine):

    @_on_device
    def fit(self, X, epochs=1, batch_size=None, optimizer=None, lr=None, val=None,
            kl_warmup=None, shuffle=None, callbacks=(), progress=True, checkpoint=None, *,
            conditions=None, exposure=None, **kw):
        """Train on X for ``epochs`` more epochs, from wherever the training state stands;
        settings not given keep their saved values.  See :func:`fastvae.training.fit.fit`.

        conditions (N, C), exposure (N,): a block model's conditions and exposures for the
        rows of X (:meth:`compose`); ``val`` is then a tuple (X_val, conditions[,
        exposure]) when the model has them."""
        from .training.fit import fit  # (the loop: loaded when a model first trains)
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
        (shared between MPI ranks with ``comm``); see :func:`fastvae.training.evaluate.elbo`."""
        X = self.compose(X, conditions, exposure)
        return evaluate.elbo(self, X, n_samples, batch_size, seed, comm=comm)

    @_on_device
    def log_likelihood(self, X, k=5000, batch_size=None, seed=0, comm=None, *,
                       conditions=None, exposure=None):
        """The importance-weighted estimate of log p(x) per row of X with k samples (per_row,
        mean, nll, stderr; rows shared between MPI ranks with ``comm``); see
        :func:`fastvae.training.evaluate.log_likelihood`."""
        X = self.compose(X, conditions, exposure)
        return evaluate.log_likelihood(self, X, k, batch_size, seed, comm=comm)

    @_on_device
    def score_samples(self, X, k=None, n_samples=1, per_column=False, batch_size=1000,
                      seed=0, *, conditions=None, exposure=None, encoder_x=None):
        """Per-row anomaly scores of X (N,) in nats, higher for less likely rows: the
        negative ELBO, or with ``k`` the importance-weighted negative log-likelihood;
        ``per_column=True`` adds each column's share (N, D).  ``encoder_x`` (N, D): what
        the encoder reads instead of X (the likelihood still scores X).  See
        :func:`fastvae.training.evaluate.score_samples`."""
        X = self.compose(X, conditions, exposure)
        enc = None if encoder_x is None else self.compose(encoder_x, conditions, exposure,
                                                          name="encoder_x")
        return evaluate.score_samples(self, X, k, n_samples, per_column, batch_size, seed,
                             encoder_X=enc)

    @_on_device
    def diagnostics(self, X, batch_size=1000, *, conditions=None, exposure=None):
        """Active units, KL and mean sigma per latent dimension over X; see
        :func:`fastvae.training.evaluate.diagnostics`."""
        X = self.compose(X, conditions, exposure)
        return evaluate.diagnostics(self, X, batch_size)

    @_on_device
    def save(self, path):
        """Write a checkpoint (atomically): the model and its whole training state, so that
        :func:`fastvae.load` then ``fit`` continues exactly.  Returns the path."""
        meta, arrays = snapshot(self)
        return _io.write(path, meta, arrays)

    @_on_device
    def export_onnx(self, path, part="vae", opset=None):
        """Write ``part`` ("encoder" | "decoder" | "vae") of this model to ``path`` as an
        ONNX graph (needs ``pip install 'fastvae[onnx]'``); see :mod:`fastvae.io.export` for
        the names, the opset and what the graph computes.  Returns the path."""
        from .io.export import export_onnx  # (onnx is an optional extra)
        return export_onnx(self, path, part, opset)

    # ------------------------------------------------------------------- pickle
    def __getstate__(self):
        with self.on_device():
            meta, arrays = snapshot(self)
        return {"format": _io.FORMAT_VERSION, "meta": meta, "arrays": arrays}

    def __setstate__(self, state):
        meta = state["meta"]
        # the backend by name: a CUDA model unpickled where there is no GPU fails here,
        # saying so (fastvae.load(path, backend="cpu") moves a model between devices)
        self.__init__(backend=meta["backend"], **saved_config(meta))
        with self.on_device():
            restore(self, meta, state["arrays"])


# Pickles name the class by its public path, fastvae.VAE, so that moving the engine inside
# the package never breaks them again (those made before the move name fastvae.model.VAE,
# which fastvae/model.py keeps).
VAE.__module__ = "fastvae"


def load(path, backend=None, precision=None):
    """Rebuild the model saved at ``path`` on ``backend`` (default: the current default),
    with its whole training state (optimizer and moments, settings, generator states,
    position in the epoch, history), so that ``model.fit(X, epochs=n)`` continues exactly
    where the saved run stopped.  ``precision``: "full" or "bf16" for the products (default:
    the saved model's; a bf16 model's parameters are float32 masters, so precision="full"
    loads it anywhere).  Raises :class:`fastvae.io.CheckpointError` naming the file for
    anything that is not a usable checkpoint."""
    meta, arrays = _io.read(path)
    try:
        cfg = saved_config(meta)
        if precision is not None:
            cfg["precision"] = precision
        model = VAE(backend=backend, **cfg)
    except RuntimeError as e:
        if cfg.get("precision") != "bf16" or precision is not None:
            raise
        # bf16 products cannot run here: the float32 masters load at full precision
        raise RuntimeError(f"{path}: {e}; fastvae.load(path, precision='full') loads this "
                           "model with full-precision products") from e
    except (KeyError, TypeError, ValueError) as e:
        raise _io.CheckpointError(f"{path}: cannot rebuild the model from its configuration "
                                  f"({e})") from None
    try:
        with model.on_device():
            restore(model, meta, arrays)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise _io.CheckpointError(f"{path}: {e}") from None
    return model


VAE.__doc__ = Engine.__doc__ + """
    Training and what runs on a dataset: :meth:`fit`, :meth:`elbo`, :meth:`log_likelihood`,
    :meth:`score_samples`, :meth:`diagnostics`; files: :meth:`save`, :func:`fastvae.load`,
    :meth:`export_onnx`.
    """
