"""``TabularVAE``: a VAE on a pandas table, in and out.

    from fastvae.tabular import TabularVAE
    tv = TabularVAE().fit("diamonds.csv", epochs=30)
    synthetic = tv.sample(1000, seed=0)            # a DataFrame like the training table
    scores = tv.score_samples(df, per_column=True) # per-row anomaly scores and their cells
    filled = tv.impute(df_with_gaps)               # missing cells from the posterior
    codes = tv.transform(df)                       # (N, latent_dim) posterior means
    tv.save("model.npz"); tv = fastvae.tabular.load("model.npz")

The schema (:mod:`fastvae.tabular.schema`) turns the table into a block model's data row
and back; the engine does the rest.  Everything the schema learned (categories, numeric
maps, dtypes, ranges, the conditions' training marginals) is saved in the checkpoint's
metadata, so a loaded model reads and writes tables exactly as the one that was saved.
"""
from __future__ import annotations

import os

import numpy as np

from .schema import Schema, TableError, pandas_module, infer

#: the model a table gets unless told otherwise (ctgan's TVAE: 2x128 hidden, latent 128;
#: a latent of 32 scored the same on diamonds and trains faster, benchmarks/bench_tables.py)
DEFAULTS = {"hidden": (128, 128), "latent_dim": 32, "batch_size": 500, "lr": 1e-3}


def read_table(data, what="data"):
    """A DataFrame from a DataFrame or a path (.csv, .tsv, .parquet, .pq)."""
    pd = pandas_module()
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what}: {path} does not exist")
        ext = os.path.splitext(path)[1].lower()
        try:
            if ext in (".csv", ".txt"):
                return pd.read_csv(path)
            if ext == ".tsv":
                return pd.read_csv(path, sep="\t")
            if ext in (".parquet", ".pq"):
                return pd.read_parquet(path)
        except (ValueError, OSError, ImportError) as e:
            raise TableError(f"{what}: cannot read {path} ({e})") from None
        raise TableError(f"{what}: {path} is not a table fastvae reads (.csv, .tsv, "
                         f".parquet, .pq)")
    raise TypeError(f"{what} must be a pandas DataFrame or a path to a .csv or .parquet "
                    f"file, got {type(data).__name__}")


class TabularVAE:
    """A VAE for a table of numeric, categorical, count, datetime and boolean columns with
    missing cells and optional condition columns.

    hidden, latent_dim : the encoder's hidden widths (the decoder mirrors them) and the
        latent size [(128, 128), 32].
    types : {column: type} overriding inference: "numeric", "categorical", "count" (or
        "negbin"), "poisson", "ignore" (:data:`fastvae.tabular.schema.TYPES`).
    numeric : "quantile" (the default: each numeric column through its quantile map to a
        standard normal) or "standard" (mean 0, variance 1).
    missing : None (a missing-cell mask when the training table has a missing cell), True
        (always: the model can then score and impute tables with gaps it never saw in
        training) or False (a missing cell is an error).
    unknown : "error" (a category not seen in training is an error naming it) or
        "missing" (it is read as a missing cell; needs the mask).
    seed, backend, dtype and any other keyword go to :class:`fastvae.VAE` (activation,
        beta, n_samples, objective, ...).
    """

    def __init__(self, hidden=DEFAULTS["hidden"], latent_dim=DEFAULTS["latent_dim"], *,
                 types=None, numeric="quantile", missing=None, unknown="error", seed=0,
                 backend=None, dtype="float32", **vae_kw):
        if numeric not in ("quantile", "standard"):
            raise ValueError(f"numeric must be 'quantile' or 'standard', got {numeric!r}")
        if missing not in (None, True, False):
            raise ValueError(f"missing must be None, True or False, got {missing!r}")
        if unknown not in ("error", "missing"):
            raise ValueError(f"unknown must be 'error' or 'missing', got {unknown!r}")
        if unknown == "missing" and missing is False:
            raise ValueError("unknown='missing' reads unseen categories as missing cells, "
                             "which needs missing=None or True")
        self.hidden, self.latent_dim = tuple(hidden), latent_dim
        self.types = dict(types or {})
        self.numeric, self.missing, self.unknown = numeric, missing, unknown
        self.seed, self.backend, self.dtype, self.vae_kw = seed, backend, dtype, vae_kw
        self.schema = None
        self.model = None
        self.cond_marginals = None

    # ------------------------------------------------------------------ training
    def fit(self, data, conditions=None, epochs=30, batch_size=None, val=None, progress=True,
            checkpoint=None, **fit_kw):
        """Train on ``data`` (a DataFrame or a .csv/.parquet path) for ``epochs`` more
        epochs; the first call infers the schema and builds the model.  ``conditions``:
        the name (or names) of the condition columns, in ``data``.  ``val``: a held-out
        table for the per-epoch validation ELBO.  Other keywords go to
        :meth:`fastvae.VAE.fit` (lr, kl_warmup, optimizer, callbacks, ...).  Returns self;
        the history is ``self.history``."""
        df = read_table(data)
        conds = [conditions] if isinstance(conditions, str) else list(conditions or ())
        if self.model is None:
            self._build(df, conds)
        elif conds and conds != [c.name for c in self.schema.conditions]:
            raise TableError(f"this model's conditions are "
                             f"{[c.name for c in self.schema.conditions]}; got {conds}")
        X, C = self._rows(df, check_missing=True)
        if batch_size is None and (self.model.train_state is None or
                                   self.model.train_state.settings.get("batch_size") is None):
            batch_size = min(DEFAULTS["batch_size"], len(df))
        if self.model.train_state is None and "lr" not in fit_kw:
            fit_kw["lr"] = DEFAULTS["lr"]
        if val is not None:
            vX, vC = self._rows(read_table(val, "val"), check_missing=True)
            val = (vX, vC) if vC is not None else vX
        self.model.fit(X, epochs=epochs, batch_size=batch_size, val=val, progress=progress,
                       checkpoint=checkpoint, conditions=C, **fit_kw)
        # (the schema went into the metadata when the model was built, so fit's own
        # checkpoints hold it; a fit of no epochs writes none)
        if checkpoint is not None and not os.path.exists(checkpoint):
            self.model.save(checkpoint)
        return self

    def _build(self, df, conds):
        from ..core.model import VAE
        if self.vae_kw.get("inject_conditions") and not conds:
            raise TableError("inject_conditions=True feeds the condition columns to every "
                             "decoder layer, but none was given: fit(df, conditions=COLUMN)")
        if self.vae_kw.get("encode_conditions") is False and not conds:
            raise TableError("encode_conditions=False keeps the condition columns out of "
                             "the encoder, but none was given: fit(df, conditions=COLUMN)")
        self.schema = infer(df, self.types, conds, self.numeric)
        has_gaps = bool(df[[c.name for c in self.schema.data]].isna().to_numpy().any())
        mask = self.missing is True or (self.missing is None and has_gaps) or \
            self.unknown == "missing"
        self.model = VAE(likelihood=self.schema.blocks(), hidden=self.hidden,
                         latent_dim=self.latent_dim, n_conditions=self.schema.n_conditions,
                         missing="mask" if mask else None, seed=self.seed,
                         backend=self.backend, dtype=self.dtype, **self.vae_kw)
        self.schema.encode_conditions(df)  # a missing or bad condition, named, first
        self.cond_marginals = self._marginals(df)
        self.model.metadata["tabular"] = self._meta()

    def _marginals(self, df):
        """Each condition column's training distribution, to draw conditions from when
        sample() is given none: category frequencies, or 1001 quantiles."""
        out = {}
        for c in self.schema.conditions:
            s = df[c.name]
            if c.kind == "categorical":
                codes = c.codes(s).astype(np.int64)
                out[c.name] = (np.bincount(codes, minlength=len(c.categories))
                               / len(codes)).tolist()
            else:
                out[c.name] = np.quantile(c.raw(s), np.linspace(0, 1, 1001)).tolist()
        return out

    def _meta(self):
        return {"schema": self.schema.config(), "cond_marginals": self.cond_marginals,
                "settings": {"hidden": list(self.hidden), "latent_dim": self.latent_dim,
                             "types": self.types, "numeric": self.numeric,
                             "missing": self.missing, "unknown": self.unknown,
                             "seed": self.seed, "dtype": self.dtype}}

    def _need(self):
        if self.model is None:
            raise RuntimeError("this TabularVAE is not fitted yet: call fit(table) first")

    def _rows(self, df, check_missing=False, unknown=None):
        """(X (N, D), conditions (N, C) or None), float32, for the model's methods."""
        X = self.schema.encode(df, unknown or self.unknown)
        if check_missing and self.model.missing is None and np.isnan(X).any():
            j = int(np.flatnonzero(np.isnan(X).any(0))[0])
            r = int(np.flatnonzero(np.isnan(X[:, j]))[0])
            raise TableError(f"column {self.schema.data[j].name!r} has a missing cell (row "
                             f"{r}), and this model was built without the missing-cell "
                             f"mask: build TabularVAE(missing=True)")
        C = self.schema.encode_conditions(df)
        return X.astype(self.model.dtype), None if C is None else C.astype(self.model.dtype)

    @property
    def history(self):
        self._need()
        return self.model.history

    # ------------------------------------------------------------------ tables out
    def _conditions_for(self, n, conditions, rng):
        """A DataFrame (n rows) of condition values, from ``conditions`` or drawn from the
        training marginals."""
        pd = pandas_module()
        names = [c.name for c in self.schema.conditions]
        if not names:
            if conditions is not None:
                raise TableError("this model has no conditions; conditions= must be None")
            return None
        if conditions is None:
            cols = {}
            for c in self.schema.conditions:
                m = np.asarray(self.cond_marginals[c.name])
                if c.kind == "categorical":
                    idx = rng.choice(len(m), size=n, p=m)
                    cols[c.name] = c.values(idx.astype(np.float64))
                else:  # a numeric condition: its training quantiles, interpolated
                    cols[c.name] = c.values(np.interp(rng.random(n),
                                                      np.linspace(0, 1, m.size), m))
            return pd.DataFrame(cols)
        if isinstance(conditions, pd.DataFrame):
            frame = conditions.reset_index(drop=True)
        elif isinstance(conditions, dict):
            frame = pd.DataFrame({k: (v if np.ndim(v) else [v] * n) for k, v in
                                  conditions.items()})
        elif len(names) == 1:
            frame = pd.DataFrame({names[0]: conditions if np.ndim(conditions) and not
                                  isinstance(conditions, str) else [conditions] * n})
        else:
            raise TableError(f"this model has conditions {names}: pass a dict or a "
                             f"DataFrame with those columns")
        if len(frame) != n:
            raise TableError(f"conditions have {len(frame)} rows; {n} are asked for")
        self.schema.check_columns(frame, need_data=False)
        self.schema.encode_conditions(frame)  # unseen or missing values, named
        # the given values in the training column's dtype (a category stays a category)
        # (a numeric condition as given: values() would clip it to the training range)
        return pd.DataFrame({c.name: c.values(c.codes(frame[c.name])) if c.kind ==
                             "categorical" else frame[c.name].reset_index(drop=True)
                             for c in self.schema.conditions})

    def sample(self, n, conditions=None, seed=None, mean=False):
        """A DataFrame of ``n`` synthetic rows: z ~ N(0, I), then a draw of every cell from
        p(x|z) (``mean=True``: each cell's mean, or most probable category).  The columns
        have the training table's names, order, dtypes and categories; values stay within
        the training ranges.  ``conditions``: None (drawn from the training marginals), one
        value (a model with one condition), a dict {column: value or n values} or a
        DataFrame with the condition columns.  Ignored columns are left out."""
        self._need()
        rng = np.random.default_rng(seed)
        n = int(n)
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        frame = self._conditions_for(n, conditions, rng)
        C = None if frame is None else self.schema.encode_conditions(frame).astype(
            self.model.dtype)
        z = rng.standard_normal((n, self.model.latent_dim)).astype(self.model.dtype)
        v = self.model.decode_values(z, mean=mean, seed=rng, conditions=C)
        return self.schema.decode(self._host(v), frame)

    def _host(self, a):
        return np.asarray(self.model.kernels.to_numpy(a), dtype=np.float64)

    def transform(self, data):
        """The posterior means of the rows, (N, latent_dim) float array."""
        self._need()
        X, C = self._rows(read_table(data), check_missing=True)
        mu, _ = self.model.encode(X, conditions=C)
        return self._host(mu)

    def reconstruct(self, data, conditions=None, mean=True, seed=None):
        """The rows encoded (z = the posterior mean, under their own conditions) and decoded
        under ``conditions`` (default: their own; another value gives the counterfactual
        table, how a batch effect is removed), as a DataFrame."""
        self._need()
        df = read_table(data)
        X, C = self._rows(df, check_missing=True)
        mu, _ = self.model.encode(X, conditions=C)
        if conditions is None:
            frame = None if C is None else df[[c.name for c in self.schema.conditions]]
        else:
            frame = self._conditions_for(len(df), conditions, np.random.default_rng(0))
        C2 = None if frame is None else self.schema.encode_conditions(frame).astype(
            self.model.dtype)
        v = self.model.decode_values(mu, mean=mean, seed=seed, conditions=C2)
        return self.schema.decode(self._host(v), frame, index=df.index)

    def impute(self, data, seed=None):
        """A copy of the table with its missing cells filled from the posterior: the
        decoder's mean at z = the posterior mean (``seed=None``), or with a seed a draw of z
        from q(z|x) and of the cells from p(x|z).  Observed cells are kept as they are."""
        self._need()
        if self.model.missing is None:
            raise TableError("this model was built without the missing-cell mask: build "
                             "TabularVAE(missing=True) to impute")
        df = read_table(data)
        X, C = self._rows(df)
        if seed is None:
            z, _ = self.model.encode(X, conditions=C)
            v = self._host(self.model.decode_values(z, mean=True, conditions=C))
        else:
            rng = np.random.default_rng(seed)
            z = self.model.encode(X, sample=True, seed=rng, conditions=C)
            v = self._host(self.model.decode_values(z, mean=False, seed=rng, conditions=C))
        out = df.copy()
        filled = self.schema.decode(v, None if C is None else df, index=df.index)
        for c in self.schema.data:
            gap = df[c.name].isna().to_numpy()
            if gap.any():
                col = out[c.name]
                if col.dtype != filled[c.name].dtype and str(col.dtype) == "float64" and \
                        c.source == "int":
                    col = col.astype(float)
                col = col.copy()
                col[gap] = filled[c.name][gap].to_numpy()
                out[c.name] = col
        return out

    # ------------------------------------------------------------------ scores
    def score_samples(self, data, k=None, per_column=False, seed=0, unknown=None):
        """Per-row anomaly scores in nats (higher: less likely): the negative ELBO, or with
        ``k`` the importance-weighted negative log-likelihood; a Series indexed as the
        table.  ``per_column=True`` returns a DataFrame: ``score``, then each modeled
        column's share of the reconstruction term (which cells made the row unlikely) and
        ``kl``.  Numeric cells are scored on their mapped scale.  ``unknown``: this call's
        policy for unseen categories (default: the model's)."""
        self._need()
        pd = pandas_module()
        df = read_table(data)
        X, C = self._rows(df, check_missing=True, unknown=unknown)
        s = self.model.score_samples(X, k=k, per_column=per_column, seed=seed, conditions=C)
        score = pd.Series(np.asarray(s.scores, dtype=np.float64), index=df.index,
                          name="score")
        if not per_column:
            return score
        cols = np.asarray(s.columns, dtype=np.float64)
        out = {"score": score.to_numpy()}
        for j, c in enumerate(self.schema.data):
            out[c.name] = cols[:, j]
        out["kl"] = np.asarray(s.kl, dtype=np.float64)
        return pd.DataFrame(out, index=df.index)

    def column_log_likelihood(self, data, seed=0):
        """Each modeled column's mean reconstruction log-likelihood per row, in nats, and
        the KL: a Series (what ``fastvae eval`` prints for a table)."""
        sc = self.score_samples(data, per_column=True, seed=seed)
        ll = -sc.drop(columns=["score"]).mean()
        ll["kl"] = -ll["kl"]
        return ll

    def elbo(self, data, n_samples=1, seed=0):
        """The ELBO over the table (:meth:`fastvae.VAE.elbo`)."""
        self._need()
        X, C = self._rows(read_table(data), check_missing=True)
        return self.model.elbo(X, n_samples=n_samples, seed=seed, conditions=C)

    # ------------------------------------------------------------------ files
    def save(self, path):
        """Write the model, its training state and the schema to ``path`` (a fastvae
        checkpoint, .npz).  Returns the path."""
        self._need()
        self.model.metadata["tabular"] = self._meta()
        return self.model.save(path)

    def __repr__(self):
        if self.model is None:
            return f"TabularVAE(hidden={self.hidden}, latent_dim={self.latent_dim}, unfitted)"
        return f"TabularVAE({self.schema!r}, {self.model!r})"


def from_model(model):
    """The TabularVAE of a loaded :class:`fastvae.VAE` whose metadata holds a table's
    schema (what :meth:`TabularVAE.save` writes)."""
    meta = model.metadata.get("tabular")
    if meta is None:
        raise TableError("this checkpoint holds a model of arrays, not of a table (no "
                         "schema in its metadata)")
    st = meta["settings"]
    tv = TabularVAE(tuple(st["hidden"]), st["latent_dim"], types=st["types"],
                    numeric=st["numeric"], missing=st["missing"], unknown=st["unknown"],
                    seed=st["seed"], dtype=st["dtype"])
    tv.schema = Schema.from_config(meta["schema"])
    tv.cond_marginals = meta["cond_marginals"]
    tv.model = model
    return tv


def load(path, backend=None):
    """A :class:`TabularVAE` from a checkpoint written by :meth:`TabularVAE.save` (or by
    ``fastvae train --data table.csv``)."""
    from ..core.model import load as load_model
    return from_model(load_model(path, backend=backend))


def is_tabular(model):
    return "tabular" in (model.metadata or {})


__all__ = ["TabularVAE", "load", "from_model", "read_table", "is_tabular"]
