"""``TabularVAE``: a VAE on a pandas table, in and out.

    from fastvae.tabular import TabularVAE
    tv = TabularVAE().fit("diamonds.csv")          # trains until held-out rows stop improving
    synthetic = tv.sample(1000, seed=0)            # a DataFrame like the training table
    scores = tv.score_samples(df, per_column=True) # per-row anomaly scores and their cells
    filled = tv.impute(df_with_gaps)               # missing cells from the posterior
    codes = tv.transform(df)                       # (N, latent_dim) posterior means
    tv.save("model.npz"); tv = fastvae.tabular.load("model.npz")

The schema (:mod:`fastvae.tabular.schema`) turns the table into a block model's data row
and back; the engine does the rest.  Everything the schema learned (categories, numeric
maps, dtypes, ranges, the conditions' training distributions) and the latent density are
saved in the checkpoint's metadata, so a loaded model reads and writes tables exactly as
the one that was saved.
"""
from __future__ import annotations

import math
import os
import time
import warnings

import numpy as np

from ..core.validate import nonneg_int, positive_int
from . import margins, policy
from .column import TableError, pandas_module
from .kinds import check_label
from .schema import VERSION, Schema, infer
from .tableio import read_table, row_names

#: the learning rate a table model trains with unless told otherwise (its size comes from
#: the row count: :func:`fastvae.tabular.policy.model_size`)
DEFAULTS = {"lr": 1e-3}
#: the latent density's mixture components (see :mod:`fastvae.tabular.latent`)
MIXTURE_COMPONENTS = 10
PARAMS = ("hidden", "latent_dim", "types", "numeric", "missing", "unknown", "latent",
          "rules", "seed", "backend", "dtype")


class CollapseWarning(UserWarning):
    """A fit ended with codes that carry next to nothing (see
    :func:`fastvae.tabular.policy.collapse_note`)."""


class TabularVAE:
    """A VAE for a table of numeric, categorical, count, datetime and boolean columns, with
    missing cells and optional condition columns.

    hidden, latent_dim : the encoder's hidden widths (the decoder mirrors them) and the
        latent size; None (the default): from the training rows
        (:func:`fastvae.tabular.policy.model_size`: (64, 64) and 16 below 10,000 rows,
        (128, 128) and 32 from there).
    types : {column: type} overriding inference: "numeric", "categorical", "count" (or
        "negbin"), "poisson", "zinb" (zero-inflated counts), "datetime", "id", "ignore"
        (:mod:`fastvae.tabular.kinds`; each block's column type:
        :mod:`fastvae.tabular.blocktypes`).
    numeric : "quantile" (the default: each numeric column through its quantile map to a
        standard normal) or "standard" (mean 0, variance 1).
    missing : None (a missing-cell mask when the training table has a missing cell), True
        (always: the model can then score and impute tables with gaps it never saw in
        training) or False (a missing cell is an error).  Columns with gaps in training
        also get an observed head, so samples have gaps at the data's rate and in its
        pattern.
    unknown : "error" (a category not seen in training is an error naming it) or
        "missing" (it is read as a missing cell; needs the mask).
    latent : "mixture" (the default: samples draw their codes from a Gaussian mixture fit
        on the training rows' posterior draws, :mod:`fastvae.tabular.latent`) or "prior"
        (z ~ N(0, I)).
    rules : True (the default): relations that hold on every training row (a column's
        value fixes another's: :mod:`fastvae.tabular.rules`; a number's interval fixes a
        label: :mod:`fastvae.tabular.intervals`; a column is a part of a date column:
        :mod:`fastvae.tabular.components`; a value says a group of cells is present:
        :mod:`fastvae.tabular.presence`; one column is at most another:
        :mod:`fastvae.tabular.orders`; a group is missing wherever another is:
        :mod:`fastvae.tabular.gaps`) hold exactly in samples, but for those the trained
        decoder's own draws break often (an order broken on over 5% of sampled rows; a
        rule keyed on a few values of a numeric column whose rows the decoder draws as
        it would any others: :mod:`fastvae.tabular.keycheck`), which are dropped after
        training; False: every cell as the decoder draws it.
    seed, backend, dtype and any other keyword go to :class:`fastvae.VAE` (activation,
        beta, n_samples, objective, ...).

    The settings are checked by :meth:`fit` (scikit-learn's convention: ``__init__`` only
    stores them, and :meth:`get_params` / :meth:`set_params` read and change them).  What
    fit learns ends in an underscore: ``schema_``, ``model_``, ``latent_`` (``schema`` and
    ``model`` still read them).
    """

    #: what a model pickled before these were fit holds (none: its samples as then)
    margins_, orders_, gaps_ = None, (), ()

    def __init__(self, hidden=None, latent_dim=None, *,
                 types=None, numeric="quantile", missing=None, unknown="error",
                 latent="mixture", rules=True, seed=0, backend=None, dtype="float32",
                 **vae_kw):
        self.hidden, self.latent_dim = hidden, latent_dim
        self.types, self.numeric, self.missing, self.unknown = types, numeric, missing, unknown
        self.latent, self.rules, self.seed, self.backend, self.dtype = (latent, rules, seed,
                                                                        backend, dtype)
        self.vae_kw = dict(vae_kw)
        self.schema_ = self.model_ = self.latent_ = self.calibration_ = None
        #: the numeric columns' maps to their training distributions (:mod:`.margins`)
        self.margins_ = None
        #: the orderings of numeric columns kept in samples (:mod:`.orders`)
        self.orders_ = []
        #: the gaps that imply gaps, kept in samples (:mod:`.gaps`)
        self.gaps_ = []
        #: the training step whose weights the latent density and the calibration were
        #: fit for (None: not yet; an interrupted run's resume fits them)
        self.after_step_ = None
        self.interrupted_ = False
        self.rules_ = []

    # ------------------------------------------------------------------ parameters
    def get_params(self, deep=True):
        """The constructor's settings (the VAE keywords included), by name."""
        return {**{k: getattr(self, k) for k in PARAMS}, **self.vae_kw}

    def set_params(self, **params):
        """Change settings (before fit; a fitted model keeps the ones it was built with
        until it is fitted anew from scratch).  Returns self."""
        for k, v in params.items():
            if k in PARAMS:
                setattr(self, k, v)
            else:
                self.vae_kw[k] = v
        return self

    def _check_params(self):
        hidden = self.hidden
        if hidden is not None and (isinstance(hidden, (str, bytes)) or np.ndim(hidden) != 1
                                   or len(hidden) == 0
                                   or not all(_passes(positive_int, w) for w in hidden)):
            raise ValueError(f"hidden must be None (by the row count) or a sequence of layer "
                             f"widths, positive integers such as (64, 64), got {hidden!r}")
        if self.latent_dim is not None and not _passes(positive_int, self.latent_dim):
            raise ValueError(f"latent_dim must be None (by the row count) or a positive "
                             f"integer, got {self.latent_dim!r}")
        nonneg_int(self.seed, "seed")
        if self.numeric not in ("quantile", "standard"):
            raise ValueError(f"numeric must be 'quantile' or 'standard', got {self.numeric!r}")
        if self.missing not in (None, True, False):
            raise ValueError(f"missing must be None, True or False, got {self.missing!r}")
        if self.unknown not in ("error", "missing"):
            raise ValueError(f"unknown must be 'error' or 'missing', got {self.unknown!r}")
        if self.unknown == "missing" and self.missing is False:
            raise ValueError("unknown='missing' reads unseen categories as missing cells, "
                             "which needs missing=None or True")
        if self.latent not in ("mixture", "prior"):
            raise ValueError(f"latent must be 'mixture' or 'prior', got {self.latent!r}")
        if self.rules not in (True, False):
            raise ValueError(f"rules must be True or False, got {self.rules!r}")
        self._check_vae_kw()
        if not isinstance(self.types, (dict, type(None))):
            raise ValueError(f"types must be a dict {{column: type}}, got {self.types!r}")
        for k in self.types or {}:
            check_label(k)

    #: the VAE settings TabularVAE makes itself from the table
    _OWN = ("input_dim", "likelihood", "n_conditions", "missing")

    def _check_vae_kw(self):
        """The extra keywords must be fastvae.VAE settings the table does not decide."""
        import inspect
        from ..vae import VAE
        known = set(inspect.signature(VAE.__init__).parameters) - {"self"}
        for k in self.vae_kw:
            if k in self._OWN:
                raise ValueError(f"TabularVAE sets {k}= itself, from the table's columns; "
                                 f"drop {k}={self.vae_kw[k]!r}")
            if k not in known:
                hint = (f"; {k}= is an argument of fit (TabularVAE().fit(table, {k}=...))"
                        if k in ("epochs", "batch_size", "lr", "val", "max_seconds")
                        else "")
                raise ValueError(f"TabularVAE got an unknown setting {k!r}: its extra "
                                 f"keywords go to fastvae.VAE (beta, activation, objective, "
                                 f"...){hint}")

    @property
    def schema(self):
        return self.schema_

    @property
    def model(self):
        return self.model_

    # ------------------------------------------------------------------ training
    def fit(self, data, conditions=None, epochs=None, batch_size=None, val=None,
            progress=True, checkpoint=None, max_seconds=None, **fit_kw):
        """Train on ``data`` (a DataFrame or a .csv/.tsv/.parquet path); the first call
        checks the whole table, infers the schema and builds the model.  Returns self; the
        history is ``self.history``, and ``self.interrupted_`` is True when Ctrl-C cut the
        run short (a later ``fit`` with the same arguments continues it).

        epochs : None (the default) trains by the policy of :mod:`fastvae.tabular.policy`:
            it holds out a share of the rows (or validates on ``val``), picks the batch size
            from the row count, and trains until the held-out loss stops improving (between
            a minimum and a maximum number of steps), keeping the best weights; a later
            ``fit`` with epochs=None continues a policy in progress (a checkpoint carries
            its state) and does nothing once it has stopped.  An integer trains exactly
            that many more epochs on every row (``val``, if given, is only reported).
        conditions : the label (or labels) of the condition columns, in ``data``.
        batch_size : default: from the row count (:func:`fastvae.tabular.policy.batch_size`).
        max_seconds : stop the policy after this many seconds of training (the one
            machine-dependent stop; the best weights are kept).
        Other keywords go to :meth:`fastvae.VAE.fit` (lr, kl_warmup, optimizer, callbacks,
        shards, ...)."""
        if batch_size is not None:  # (0 would read as "the default" below)
            batch_size = positive_int(batch_size, "batch_size")
        df = self._read(data)
        where = row_names(data, df)
        conds = [conditions] if isinstance(conditions, (str, int)) else list(conditions or ())
        if self.model_ is None:
            self._check_params()
            self._build(df, conds, where)
        elif conds and sorted(map(str, conds)) != sorted(
                str(c.name) for c in self.schema_.conditions):  # (kept in the table's order)
            raise TableError(f"this model's conditions are "
                             f"{[c.name for c in self.schema_.conditions]}; got {conds}")
        X64, C = self._rows(df, where=where, check_missing=True, exact=True)
        X = X64.astype(self.model_.dtype, copy=False)
        vX = vC = None
        if val is not None:
            vdf = self._read(val, "val")
            vX, vC = self._rows(vdf, where=row_names(val, vdf), check_missing=True)
        model, st = self.model_, self.model_.train_state
        if st is None and "lr" not in fit_kw:
            fit_kw["lr"] = DEFAULTS["lr"]
        if st is None and fit_kw.get("average") is None:
            fit_kw["average"] = policy.average(len(df))
        decay = fit_kw.get("average")
        averaged = bool(decay) if decay is not None else st.settings["average"] > 0
        # (a run's batch size, once it has trained: a build fit of 0 epochs saw every row,
        # before the policy held out its own)
        saved_batch = None if st is None or not st.step else st.settings.get("batch_size")
        if epochs is None:
            train, vrows = policy.split(len(X), self.seed) if vX is None else \
                (np.arange(len(X)), None)
            if vX is None and vrows.size:
                vX, vC = X[vrows], None if C is None else C[vrows]
            X, X64, C = X[train], X64[train], None if C is None else C[train]
            B = batch_size or saved_batch or policy.batch_size(len(X))
            if vX is None:  # a small table: a fixed number of steps
                rule, cap = False, policy.fixed_epochs(len(X), B)
            else:
                if st is not None and st.stopper is not None:
                    if st.stopper.stopped:  # the policy has ended this run: what follows
                        return self._finish(X, C, vX, vC, checkpoint, X64)  # training, once
                    # (the saved rule goes on, to its own step cap)
                    most = st.stopper.max_steps
                    rule, cap = None, (policy.plan(len(X), B, averaged=averaged)[1]
                                       if most is None else -(-most // -(-len(X) // B)))
                else:
                    rule, cap = policy.plan(len(X), B, policy.independent_loss(
                        self.schema_, np.asarray(vX, np.float64)), averaged=averaged)
            epochs = max(0, cap - (st.epoch if st is not None else 0))
            fit_kw["early_stopping"] = rule
        else:
            B = batch_size or saved_batch or policy.batch_size(len(X))
            fit_kw.setdefault("early_stopping", False)
        if max_seconds is not None:
            fit_kw["callbacks"] = list(fit_kw.get("callbacks", ())) + [_deadline(max_seconds)]
        vset = None if vX is None else ((vX, vC) if vC is not None else vX)
        hist = model.fit(X, epochs=epochs, batch_size=B, val=vset, progress=progress,
                         checkpoint=checkpoint, conditions=C, **fit_kw)
        st = model.train_state
        if max_seconds is not None and st.stopper is not None and not st.stopper.stopped:
            st.stopper.stop(model, f"max_seconds ({max_seconds}) reached")
        self.interrupted_ = bool(hist.interrupted)
        if hist.interrupted:
            self.model_.metadata["tabular"] = self._meta()
            if checkpoint is not None and (epochs > 0 or not os.path.exists(checkpoint)):
                self.model_.save(checkpoint)
            return self
        return self._finish(X, C, vX, vC, checkpoint, X64, fresh=epochs > 0)

    def _finish(self, X, C, vX, vC, checkpoint, X64=None, fresh=False):
        """What follows training, for the weights training left (``fresh``: a fit that
        trained): the latent density, the calibration and the collapse note, unless they
        were fit for these weights already (a run interrupted after its last step, or in
        this very part, gets them when it is resumed); then the checkpoint."""
        st = self.model_.train_state
        step = None if st is None else st.step
        if step and (fresh or self.after_step_ != step):  # (no step yet: nothing to fit)
            self._after_training(X, C, vX, vC, X64)
            self.after_step_ = step
        elif not fresh and checkpoint is not None and os.path.exists(checkpoint):
            return self
        self.model_.metadata["tabular"] = self._meta()
        if checkpoint is not None:
            self.model_.save(checkpoint)
        return self

    def _build(self, df, conds, where):
        from ..vae import VAE
        if self.vae_kw.get("inject_conditions") and not conds:
            raise TableError("inject_conditions=True feeds the condition columns to every "
                             "decoder layer, but none was given: fit(df, conditions=COLUMN)")
        if self.vae_kw.get("encode_conditions") is False and not conds:
            raise TableError("encode_conditions=False keeps the condition columns out of "
                             "the encoder, but none was given: fit(df, conditions=COLUMN)")
        schema = infer(df, self.types, conds, self.numeric, where=where,
                       salt=np.random.default_rng(self.seed).bytes(16))
        has_gaps = any(c.gaps for c in schema.columns)
        if has_gaps and self.missing is False:
            c = next(c for c in schema.columns if c.gaps)
            miss = df[c.name].isna().to_numpy()
            raise TableError(f"column {c.name!r}, {where(int(np.flatnonzero(miss)[0]))}: a "
                             f"missing cell, and this model was built with missing=False")
        mask = self.missing is True or (self.missing is None and has_gaps) or \
            self.unknown == "missing"
        hidden, latent = policy.model_size(len(df))
        hidden = tuple(self.hidden) if self.hidden is not None else hidden
        latent = self.latent_dim if self.latent_dim is not None else latent
        self.schema_ = schema
        schema.encode(df, self.unknown, where)  # every cell checked, before the model
        schema.encode_conditions(df, where)
        if self.rules:
            from . import components, gaps, intervals, orders, presence, rules
            found = rules.find(df, schema)
            parts = components.find(df, schema, found)
            found = parts + intervals.find(df, schema, found, {r[1] for r in parts}) + found
            self.rules_ = found + presence.find(df, schema, found)
            self.orders_ = orders.find(df, schema, self.rules_)
            self.gaps_ = gaps.find(df, schema)
        self.model_ = VAE(likelihood=schema.blocks(), hidden=hidden,
                          latent_dim=latent, n_conditions=schema.n_conditions,
                          missing="mask" if mask else None, seed=self.seed,
                          backend=self.backend, dtype=self.dtype, **self.vae_kw)
        self.model_.metadata["tabular"] = self._meta()

    def _after_training(self, X, C, vX, vC, X64=None):
        """The latent density, fit on the training rows' posterior draws, the categorical
        biases shifted to the training class shares (:mod:`fastvae.tabular.calibrate`), the
        numeric columns' maps to their training distributions (:mod:`fastvae.tabular.margins`,
        from X64, the training rows in float64, when given), the rules and orders the
        decoder disagrees with dropped (:mod:`fastvae.tabular.keycheck`,
        :func:`fastvae.tabular.orders.kept`; the rules' check reads maps fit before the
        calibration, which then sees the rules kept), and the collapse note, from
        the held-out rows (the training rows when none were held out)."""
        from .calibrate import calibrate
        from .latent import fit_latent
        model = self.model_
        diag = model.diagnostics(X, conditions=C)
        if self.latent == "mixture":
            mu, logvar = model.encode(X, conditions=C)
            self.latent_ = fit_latent(self._host(mu), self._host(logvar), diag.kl_per_dim,
                                      MIXTURE_COMPONENTS, np.random.default_rng(self.seed))
        hC = None if C is None else self._host(C)
        # (the training values as float64: a float32 model's would pile the maps' draws
        # on rounded values that no training row holds)
        hX = self._host(X)
        X64 = hX if X64 is None else X64
        from . import keycheck
        if self.rules_ and keycheck.numeric_keyed(self.rules_, self.schema_):
            # (the check samples numbers as sample does, through maps, here fit before
            # the calibration: the calibration, which fits gap heads through the rules,
            # then sees the rules kept)
            self.calibration_ = None
            self.margins_ = margins.fit(self, X64, hC, None, self.seed)
            self.rules_ = keycheck.kept(self, self.seed)
        self.calibration_ = calibrate(self, hX, hC, self.seed)
        self.margins_ = margins.fit(self, X64, hC, self.calibration_, self.seed)
        if self.orders_:
            from .orders import kept
            self.orders_ = kept(self, self.seed)
        hX, hC = (X, C) if vX is None else (vX, vC)
        ev = model.elbo(hX, conditions=hC)
        note = policy.collapse_note(float(ev.kl), float(ev.neg_elbo),
                                    policy.independent_loss(self.schema_,
                                                            np.asarray(hX, np.float64)))
        if note is not None:
            warnings.warn(note, CollapseWarning, stacklevel=3)

    def _meta(self):
        types = [[k, v] for k, v in (self.types or {}).items()]
        from .components import is_component
        schema = self.schema_.config()
        if any(is_component(r) for r in self.rules_ or ()):
            schema["version"] = VERSION  # (older readers cannot apply component rules)
        return {"schema": schema, "rules": self.rules_,
                "latent": None if self.latent_ is None else self.latent_.config(),
                "calibration": (None if self.calibration_ is None else
                                [float(v) for v in self.calibration_]),
                "margins": margins.config(self.margins_),
                "orders": self.orders_,
                "gaps": self.gaps_,
                "after_step": self.after_step_,
                "settings": {"hidden": None if self.hidden is None else list(self.hidden),
                             "latent_dim": self.latent_dim,
                             "types": types, "numeric": self.numeric,
                             "missing": self.missing, "unknown": self.unknown,
                             "latent": self.latent, "rules": self.rules, "seed": self.seed,
                             "dtype": self.dtype, "vae": _json_settings(self.vae_kw)}}

    def _need(self):
        if self.model_ is None:
            raise RuntimeError("this TabularVAE is not fitted yet: call fit(table) first")

    def _rows(self, df, unknown=None, where=None, check_missing=False, encoder=False,
              exact=False):
        """(X (N, D), conditions (N, C) or None) in the model's dtype (X in float64 with
        ``exact``)."""
        where = where or row_names(None, df)
        if len(df) == 0:
            raise TableError("the table has no rows")
        X = self.schema_.encode(df, unknown or self.unknown, where, encoder=encoder)
        if check_missing and self.model_ is not None and self.model_.missing is None and \
                np.isnan(X).any():
            j = int(np.flatnonzero(np.isnan(X).any(0))[0])
            r = int(np.flatnonzero(np.isnan(X[:, j]))[0])
            name = self.schema_.parts()[j][0]
            raise TableError(f"column {name!r}, {where(r)}: a missing cell (or an unseen "
                             f"category read as one), and this model was trained without "
                             f"the missing-cell mask: train it with missing=True")
        C = self.schema_.encode_conditions(df, where)
        return (X if exact else X.astype(self.model_.dtype),
                None if C is None else C.astype(self.model_.dtype))

    @property
    def history(self):
        self._need()
        return self.model_.history

    # ------------------------------------------------------------------ tables out
    def draw_codes(self, n, rng):
        """n codes (n, Z) float64 to decode, drawn with NumPy Generator ``rng``: from the
        latent density (``latent_``), or N(0, I)."""
        if self.latent_ is not None:
            return self.latent_.sample(n, rng)
        return rng.standard_normal((n, self.model_.latent_dim))

    def sample(self, n, conditions=None, seed=None, mean=False):
        """A DataFrame of ``n`` synthetic rows: codes from the latent density (``latent``),
        then a draw of every cell from p(x|z) (``mean=True``: each cell's mean, or most
        probable category).  The table has the training table's labels, order and dtypes
        (a Categorical keeps its declared categories; only categories seen in training are
        drawn), every column included: constant columns hold their value, ignored columns
        are drawn on their own from their training values, identifiers are new ones of the
        same shape; missing cells appear at the data's rate and in its pattern.  Values
        stay within the training ranges, and a string seen in fewer than
        :data:`~fastvae.tabular.column.RARE_MIN` training rows is written
        :data:`~fastvae.tabular.column.RARE` instead (numbers are clipped to their
        RARE_MIN-th smallest and largest values; a Categorical's declared categories are
        a fixed vocabulary and keep every value).  ``conditions``: None (drawn from the
        training distributions), one value (a model with one condition), a dict {column:
        value or n values} or a DataFrame with the condition columns; conditions not given
        are drawn from the training joint given the ones given
        (:mod:`~fastvae.tabular.condjoint`).  Rows are drawn
        :data:`~fastvae.tabular.sampling.CHUNK` at a time: the memory beyond the returned
        table does not grow with n."""
        from .sampling import assemble, sample_chunks
        self._need()
        n = positive_int(n, "n")
        return assemble(sample_chunks(self, n, conditions, seed, mean), n)

    def iter_sample(self, n, conditions=None, seed=None, mean=False, chunk=None):
        """:meth:`sample`'s rows as DataFrames of at most ``chunk`` rows (to write a large
        sample as it is drawn); together they are ``sample(n, ...)``'s table."""
        from .sampling import CHUNK, sample_chunks
        self._need()
        return sample_chunks(self, positive_int(n, "n"), conditions, seed, mean,
                             CHUNK if chunk is None else positive_int(chunk, "chunk"))

    def _host(self, a):
        return np.asarray(self.model_.kernels.to_numpy(a), dtype=np.float64)

    def _read(self, data, what="data"):
        """read_table(data), with a blank column label ("", a blank CSV header cell) named
        as a model trained before blank cells were read so knows it ('Unnamed: 0')."""
        df = read_table(data, what)
        return df if self.schema_ is None else self.schema_.blank_label(df)

    def transform(self, data):
        """The posterior means of the rows, (N, latent_dim) float array (numbers beyond the
        training range are read at its edge)."""
        self._need()
        df = self._read(data)
        X, C = self._rows(df, where=row_names(data, df), check_missing=True, encoder=True)
        mu, _ = self.model_.encode(X, conditions=C)
        return self._host(mu)

    def reconstruct(self, data, conditions=None, mean=True, seed=None):
        """The rows encoded (z = the posterior mean, under their own conditions) and decoded
        under ``conditions`` (default: their own; another value gives the counterfactual
        table, how a batch effect is removed), as a DataFrame (the sample's rules, orders and
        implied gaps apply; not its numeric maps, which fit the sample's distributions, not
        a row's)."""
        from .sampling import Given
        self._need()
        df = self._read(data)
        X, C = self._rows(df, where=row_names(data, df), check_missing=True, encoder=True)
        mu, _ = self.model_.encode(X, conditions=C)
        own = None if C is None else df[[c.name for c in self.schema_.conditions]].reset_index(
            drop=True)
        frame = own
        if conditions is not None:  # (the conditions not given: each row's own)
            given = Given(self.schema_, len(df), conditions).rows(0, len(df))
            frame = own.copy()
            for k in given.columns:
                frame[k] = given[k]
        C2 = None if frame is None else self.schema_.encode_conditions(frame).astype(
            self.model_.dtype)
        rng = np.random.default_rng(seed)
        v = self._host(self.model_.decode_values(mu, mean=mean, seed=rng, conditions=C2))
        cells = self.schema_.cells(v, rng, "mean" if mean else "sample")
        from . import gaps, orders
        orders.apply(gaps.apply(cells, self.gaps_), self.orders_, self.schema_)
        keep = {c.name: cells[c.name] for c in self.schema_.columns if c.name in cells}
        out = self.schema_.frame(keep, frame)
        if self.rules_:
            from . import rules
            rules.apply(out, self.rules_)
        out.index = df.index
        for c in self.schema_.free:  # columns the model does not hold: as they were
            out.insert(list(self.schema_.order).index(c.name), c.name, df[c.name]) \
                if c.name not in out else None
        return out[[n for n in self.schema_.order if n in out.columns]]

    def impute(self, data, seed=None):
        """A copy of the table with its missing cells filled from the posterior: the
        decoder's mean at z = the posterior mean (``seed=None``), or with a seed a draw of z
        from q(z|x) and of the cells from p(x|z).  Observed cells are kept as they are; a
        constant column's gaps get its value; ignored and id columns keep their gaps.
        A model trained without the missing-cell mask (its table had no gaps) imputes
        tables whose modelled columns have none (it fills the constant columns' gaps)."""
        self._need()
        df = self._read(data)
        if self.model_.missing is None:
            gap = self.schema_.gap_column(df)
            if gap is not None:
                raise TableError(f"column {gap!r} has missing cells, and this model was "
                                 f"trained without the missing-cell mask (its table had "
                                 f"none): train it with missing=True to impute")
        X, C = self._rows(df, where=row_names(data, df), encoder=True)
        if seed is None:
            z, _ = self.model_.encode(X, conditions=C)
            v = self._host(self.model_.decode_values(z, mean=True, conditions=C))
            rng = np.random.default_rng(0)
        else:
            rng = np.random.default_rng(seed)
            z = self.model_.encode(X, sample=True, seed=rng, conditions=C)
            v = self._host(self.model_.decode_values(z, mean=False, seed=rng, conditions=C))
        cells = self.schema_.cells(v, rng, "impute")
        out = df.copy()
        for c in self.schema_.columns:
            gap = df[c.name].isna().to_numpy()
            if not gap.any() or not (c.modeled or (c.kind == "constant" and c.value is not None)):
                continue
            if c.modeled:
                filled = c.series(cells[c.name][0])
            else:
                from .free import constant_cells
                filled = c.series(constant_cells(c, len(df))[0])
            col = out[c.name]
            if gap.all():  # (a column of gaps only reads as float64 whatever it held)
                out[c.name] = filled.set_axis(col.index)
                continue
            if col.dtype.kind == "M" and getattr(col.dt, "tz", None) is None and \
                    getattr(filled.dt, "tz", None) is not None:  # (naive times given for
                filled = filled.dt.tz_localize(None)  # a zoned column: its wall times)
            if col.dtype != filled.dtype and str(col.dtype) == "float64":
                if filled.dtype.kind in "iufb":
                    filled = filled.astype("float64")
                else:  # (text or times given beside floats: both as objects)
                    col, filled = col.astype(object), filled.astype(object)
            col = col.copy()
            col[gap] = filled.to_numpy()[gap]
            out[c.name] = col
        return out

    # ------------------------------------------------------------------ scores
    def score_samples(self, data, k=None, per_column=False, seed=0, unknown=None):
        """Per-row anomaly scores in nats (higher: less likely): the negative ELBO, or with
        ``k`` the importance-weighted negative log-likelihood; a Series indexed as the
        table.

        per_column=True returns a DataFrame with two-level column labels: ``score``, then
        ("column", label) for each column the model scores (its share of the
        reconstruction term, its observed head's included: which cells made the row
        unlikely), then ``kl`` (how far the row's code is from the prior: a row unlike any
        other in its combination of values).  ``sc["score"]``, ``sc["column"]`` and
        ``sc["kl"]`` read them; the shares and the KL add up to the score.  With ``k`` the
        shares and the KL are the ELBO's, and a last part ``importance`` (<= 0 but for the
        draws' noise) is the importance-weighted score less them, so that the parts still
        add up to the score.  The encoder
        reads numbers clipped to their training range, so an absurd cell is blamed on its
        own column and not spread over the others through the code; the likelihood scores
        the cell as it is.  Numeric cells are scored on their mapped scale.  ``unknown``:
        this call's policy for unseen categories (default: the model's)."""
        self._need()
        pd = pandas_module()
        df = self._read(data)
        where = row_names(data, df)
        X, C = self._rows(df, unknown=unknown, where=where, check_missing=True)
        Xe, _ = self._rows(df, unknown=unknown, where=where, encoder=True)
        s = self.model_.score_samples(X, k=k, per_column=per_column, seed=seed, conditions=C,
                                      encoder_x=Xe)
        score = pd.Series(np.asarray(s.scores, dtype=np.float64), index=df.index,
                          name="score")
        if not per_column:
            return score
        return self._parts_frame(np.asarray(s.columns, dtype=np.float64),
                                 np.asarray(s.kl, dtype=np.float64), score,
                                 importance=k is not None)

    def _parts_frame(self, cols, kl, score, importance=False):
        """The per-column score frame (see :meth:`score_samples`): cols (N, D) the model
        columns' shares, folded per table column; ``importance``: a last part, the score
        less the others (an importance-weighted score's gain over the ELBO)."""
        pd = pandas_module()
        parts = self.schema_.parts()
        scored = {n for p in parts for n in p}
        names = [n for n in self.schema_.order if n in scored]
        folded = {n: np.zeros(len(score)) for n in names}
        for j, group in enumerate(parts):  # (a shared head's term split evenly)
            for n in group:
                folded[n] = folded[n] + cols[:, j] / len(group)
        data = [score.to_numpy()] + [folded[n] for n in names] + [kl]
        labels = [("score", "")] + [("column", n) for n in names] + [("kl", "")]
        if importance:
            data.append(score.to_numpy() - kl - sum(folded.values()))
            labels.append(("importance", ""))
        index = pd.MultiIndex.from_tuples(labels)
        return pd.DataFrame(np.column_stack(data), index=score.index, columns=index)

    def column_log_likelihood(self, data, seed=0):
        """Each scored column's mean reconstruction log-likelihood per row, in nats, and
        the KL: a Series with two-level labels ("column", label) and ("kl", "") (what
        ``fastvae eval`` prints for a table)."""
        sc = self.score_samples(data, per_column=True, seed=seed)
        ll = -sc.drop(columns="score", level=0).mean()
        ll[("kl", "")] = -ll[("kl", "")]
        return ll

    def elbo(self, data, n_samples=1, seed=0):
        """The ELBO over the table (:meth:`fastvae.VAE.elbo`)."""
        self._need()
        df = self._read(data)
        X, C = self._rows(df, where=row_names(data, df), check_missing=True)
        return self.model_.elbo(X, n_samples=n_samples, seed=seed, conditions=C)

    # ------------------------------------------------------------------ files
    def save(self, path):
        """Write the model, its training state, the schema and the latent density to
        ``path`` (a fastvae checkpoint, .npz).  Returns the path."""
        self._need()
        self.model_.metadata["tabular"] = self._meta()
        return self.model_.save(path)

    def __repr__(self):
        if self.model_ is None:
            return (f"TabularVAE(hidden={self.hidden or 'by rows'}, latent_dim="
                    f"{self.latent_dim or 'by rows'}, unfitted)")
        return f"TabularVAE({self.schema_!r}, {self.model_!r})"


def _json_settings(kw):
    """The VAE keywords a saved table model records (for get_params after load): those JSON
    holds (numbers, strings, booleans, None and their lists)."""
    def ok(v):
        return v is None or isinstance(v, (str, bool, int, float)) or (
            isinstance(v, (list, tuple)) and all(ok(x) for x in v))
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items() if ok(v)}


def _passes(check, v):
    """Whether value ``v`` passes one of fastvae.core.validate's checks."""
    try:
        check(v, "")
    except ValueError:
        return False
    return True


def _deadline(seconds):
    from ..training.loop import StopTraining
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or \
            not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"max_seconds must be a positive number, got {seconds!r}")
    t0 = time.perf_counter()

    def stop(model, rec):
        if time.perf_counter() - t0 > seconds:
            raise StopTraining
    return stop


def from_model(model):
    """The TabularVAE of a loaded :class:`fastvae.VAE` whose metadata holds a table's
    schema (what :meth:`TabularVAE.save` writes)."""
    from .latent import GaussianMixture
    meta = model.metadata.get("tabular")
    if meta is None:
        raise TableError("this checkpoint holds a model of arrays, not of a table (no "
                         "schema in its metadata)")
    st = meta["settings"]
    types = st["types"]
    types = dict(types) if isinstance(types, dict) else {k: v for k, v in types}
    tv = TabularVAE(None if st["hidden"] is None else tuple(st["hidden"]), st["latent_dim"],
                    types=types or None, **st.get("vae", {}),
                    numeric=st["numeric"], missing=st["missing"], unknown=st["unknown"],
                    latent=st.get("latent", "prior"), rules=st.get("rules", False),
                    seed=st["seed"], dtype=st["dtype"])
    tv.schema_ = Schema.from_config(meta["schema"])
    tv.rules_ = [list(r) for r in meta.get("rules") or []]
    if "cond_marginals" in meta:  # a schema of version 1 kept them beside it
        from .legacy import marginals_v1
        marginals_v1(tv.schema_, meta["cond_marginals"])
    lat = meta.get("latent")
    tv.latent_ = None if lat is None else GaussianMixture.from_config(lat)
    cal = meta.get("calibration")
    tv.calibration_ = None if cal is None else np.asarray(cal, dtype=np.float64)
    tv.margins_ = margins.from_config(meta.get("margins"))  # (None: saved before them)
    tv.orders_ = [list(o) for o in meta.get("orders") or []]
    tv.gaps_ = [[list(g), list(h)] for g, h in meta.get("gaps") or []]
    # (a model saved before after_step was: fit for its last weights, as fit then did)
    tv.after_step_ = meta["after_step"] if "after_step" in meta else (
        None if model.train_state is None else model.train_state.step)
    tv.model_ = model
    return tv


def load(path, backend=None):
    """A :class:`TabularVAE` from a checkpoint written by :meth:`TabularVAE.save` (or by
    ``fastvae train --data table.csv``)."""
    from ..vae import load as load_model
    return from_model(load_model(path, backend=backend))


def is_tabular(model):
    return "tabular" in (model.metadata or {})


__all__ = ["TabularVAE", "CollapseWarning", "load", "from_model", "read_table", "is_tabular"]
