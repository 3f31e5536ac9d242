"""A scikit-learn estimator: the VAE as a non-linear PCA (``pip install 'fastvae[sklearn]'``).

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from fastvae.sklearn import VAETransformer

    pipe = make_pipeline(StandardScaler(), VAETransformer(latent_dim=2, epochs=200))
    codes = pipe.fit_transform(X)              # (N, 2) posterior means
    pipe.score(X)                              # mean ELBO per datapoint, nats (higher is better)
    X_back = pipe.inverse_transform(codes)     # (N, D) decoder means, in X's units

Constructor arguments are the model's (:class:`fastvae.VAE`) and ``fit``'s
(:func:`fastvae.training.fit.fit`) hyper-parameters, stored unchanged and checked in :meth:`fit`,
as scikit-learn asks; ``clone``, ``get_params``/``set_params``, pickling, ``Pipeline`` and
``GridSearchCV`` work (tests).  The defaults differ from the model's where tabular data
needs it:

- ``likelihood="gaussian"`` with a learned observation scale (``obs_scale=None`` means
  "learned" for the Gaussian likelihood and is ignored by the Bernoulli one): any real data,
  in its own units (the Bernoulli likelihood needs data in [0, 1]: an error says so and
  suggests a scaler);
- a small network, ``hidden=(64,)``, ``latent_dim=2``, and ``epochs=100``;
- ``dtype="float64"``: scikit-learn's precision (transform returns the model's dtype);
- ``backend="cpu"``: see the note on backends below.

**Backends.**  ``backend="cpu"`` (the default) trains with the Numba kernels: about 3x
faster than ``"numpy"`` on small tabular models (5,000 rows of 20 features, the default
network: 150 against 430 us a step on the 2-core development machine), but the first model
in a process loads the compiled kernels (0.5 s from Numba's cache; compiling them the first
time takes longer).  ``backend="numpy"`` imports no Numba and starts at once; it suits
small data and scripts that only transform.  ``check_estimator`` passes with either, in
about 2 s.  Results agree between the two to rounding, not bit for bit.

``fit`` on fewer rows than ``batch_size`` trains with one batch of all rows, so that a
handful of rows (scikit-learn's own checks use one) still fits.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from .core.validate import positive_int

_DTYPES = ("float32", "float64")


def _dtype(value):
    """The model's dtype as a NumPy dtype, checked before any data is converted to it."""
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    if value is None or dt is None or dt.name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return dt


class VAETransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """fit / transform / inverse_transform / score / sample with a :class:`fastvae.VAE`.

    (The mixins come before BaseEstimator, as scikit-learn's ``check_estimator`` requires.)

    Model parameters: ``hidden``, ``latent_dim``, ``activation``, ``likelihood``,
    ``n_samples``, ``beta``, ``free_bits``, ``dtype``, ``seed``, ``backend``,
    ``decoder_hidden``, ``obs_scale``, ``activation_alpha``, ``objective``, ``precision``
    ("bf16" needs dtype="float32" and bf16 hardware; see
    :class:`fastvae.VAE`; with ``objective="iwae"`` the model trains on the importance-
    weighted bound with ``n_samples`` samples, and :meth:`score` still reports the ELBO).
    Fit parameters: ``epochs``, ``batch_size``, ``optimizer``, ``lr``, ``weight_decay``,
    ``clip_norm``, ``momentum``, ``kl_warmup``, ``binarize``, ``shuffle``, ``drop_last``,
    ``shards``, ``average`` (see :func:`fastvae.training.fit.fit`; None means fit's
    default).

    Attributes after fit: ``model_`` (the trained :class:`fastvae.VAE`), ``history_`` (one
    dict per epoch), ``n_features_in_`` and, for DataFrames, ``feature_names_in_``.
    """

    def __init__(self, hidden=(64,), latent_dim=2, activation="relu", likelihood="gaussian",
                 n_samples=1, beta=1.0, free_bits=0.0, dtype="float64", seed=0,
                 backend="cpu", decoder_hidden=None, obs_scale=None,
                 activation_alpha=None, objective="elbo", epochs=100, batch_size=64,
                 optimizer="adam", lr=1e-3, weight_decay=None, clip_norm=None, momentum=None,
                 kl_warmup=0, binarize="none", shuffle=True, drop_last=False,
                 precision="full", shards=1, average=0.0):
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.activation = activation
        self.likelihood = likelihood
        self.n_samples = n_samples
        self.beta = beta
        self.free_bits = free_bits
        self.dtype = dtype
        self.seed = seed
        self.backend = backend
        self.decoder_hidden = decoder_hidden
        self.obs_scale = obs_scale
        self.activation_alpha = activation_alpha
        self.objective = objective
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.clip_norm = clip_norm
        self.momentum = momentum
        self.kl_warmup = kl_warmup
        self.binarize = binarize
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.precision = precision
        self.shards = shards
        self.average = average

    # ------------------------------------------------------------------- fitting
    def fit(self, X, y=None):
        """Train a new model on X (N, D) for ``epochs`` epochs.  y is ignored.  Returns self."""
        from .vae import VAE
        dtype = _dtype(self.dtype)  # before X is converted to it
        X = self._check_range(validate_data(self, X, dtype=dtype, ensure_min_samples=1))
        model = VAE(X.shape[1], hidden=self.hidden, latent_dim=self.latent_dim,
                    activation=self.activation, likelihood=self.likelihood,
                    n_samples=self.n_samples, beta=self.beta, free_bits=self.free_bits,
                    dtype=dtype.name, seed=self.seed, backend=self.backend,
                    decoder_hidden=self.decoder_hidden, obs_scale=self._obs_scale(),
                    activation_alpha=self.activation_alpha, objective=self.objective,
                    precision=self.precision)
        # fit refuses fewer rows than a batch; here that is one batch of all rows
        batch = min(positive_int(self.batch_size, "batch_size"), X.shape[0])
        given = dict(batch_size=batch, optimizer=self.optimizer, lr=self.lr,
                     weight_decay=self.weight_decay, clip_norm=self.clip_norm,
                     momentum=self.momentum, kl_warmup=self.kl_warmup,
                     binarize=self.binarize, shuffle=self.shuffle, drop_last=self.drop_last,
                     shards=self.shards, average=self.average)
        history = model.fit(X, epochs=self.epochs, progress=False,
                            **{k: v for k, v in given.items() if v is not None})
        self.model_ = model
        self.history_ = [dict(r) for r in history]
        return self

    def _obs_scale(self):
        """The model's obs_scale: None is "learned" (Gaussian), unused (Bernoulli)."""
        if self.obs_scale is not None:
            return self.obs_scale
        return "learned" if self.likelihood == "gaussian" else 1.0

    def _check_range(self, X):
        """X itself, or for the Bernoulli likelihood X in [0, 1]: values within rounding of
        it (a MinMaxScaler leaves 1 + 2e-16) are clipped in a copy; others are an error that
        says how to get there."""
        if self.likelihood != "bernoulli" or X.size == 0:
            return X
        lo, hi = float(X.min()), float(X.max())
        if lo >= 0 and hi <= 1:
            return X
        tol = 64 * np.finfo(X.dtype).eps
        if lo < -tol or hi > 1 + tol:
            raise ValueError(
                f"likelihood='bernoulli' needs X in [0, 1], but X has values from {lo!r} to "
                f"{hi!r}: scale it first, e.g. make_pipeline(MinMaxScaler(clip=True), "
                "VAETransformer(likelihood='bernoulli')), or use likelihood='gaussian', which "
                "takes any real data")
        return np.clip(X, 0, 1)

    def _input(self, X):
        check_is_fitted(self)
        return validate_data(self, X, dtype=self.model_.dtype, reset=False)

    def _host(self, a):
        return np.asarray(self.model_.kernels.to_numpy(a))

    # ---------------------------------------------------------------- inference
    def transform(self, X):
        """Posterior means mu(x), (N, latent_dim)."""
        X = self._input(X)  # (first: before fit, NotFittedError rather than model_ missing)
        mu, _ = self.model_.encode(X)
        return self._host(mu)

    def inverse_transform(self, X):
        """Decoder means for latent codes X (N, latent_dim), (N, D): means (Gaussian) or
        probabilities (Bernoulli), in the units of the data fit saw."""
        check_is_fitted(self)
        Z = check_array(X, dtype=self.model_.dtype)
        if Z.shape[1] != self.model_.latent_dim:
            raise ValueError(f"X has {Z.shape[1]} features, but {type(self).__name__} has "
                             f"latent_dim={self.model_.latent_dim}")
        return self._host(self.model_.decode(Z))

    def score(self, X, y=None):
        """Mean ELBO per datapoint of X in nats (higher is better): a lower bound on the
        mean log-likelihood, estimated with one draw of z per row from a fixed seed, so the
        same model and data give the same number.  y is ignored."""
        X = self._check_range(self._input(X))
        return float(self.model_.elbo(X).elbo)

    def score_samples(self, X):
        """The ELBO of each row of X in nats (N,), higher for rows the model finds more
        likely, as scikit-learn's density estimators' score_samples: minus
        :meth:`fastvae.VAE.score_samples` (one draw of z, the same for every row: a row's
        value does not depend on the others or their order); its mean estimates
        :meth:`score`."""
        X = self._check_range(self._input(X))
        return -self.model_.score_samples(X).scores

    def sample(self, n, seed=None, mean=True):
        """n new points: z ~ N(0, I) decoded; mean=False draws from p(x|z) too.
        Returns (n, D).  See :meth:`fastvae.VAE.sample`."""
        check_is_fitted(self)
        return self._host(self.model_.sample(n, seed=seed, mean=mean))

    # ------------------------------------------------------------ scikit-learn
    @property
    def _n_features_out(self):
        """The number of output features (latent_dim): get_feature_names_out's count."""
        return self.model_.latent_dim

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:  # transform returns the model's dtype, whatever the input's
            tags.transformer_tags.preserves_dtype = [_dtype(self.dtype).name]
        except ValueError:  # a bad dtype is reported by fit, not here
            tags.transformer_tags.preserves_dtype = []
        return tags
