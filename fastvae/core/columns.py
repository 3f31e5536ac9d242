"""The column layout of a block model: the tables its kernels read, its data rows, their check.

A block model's *data row* is the user's columns followed by what the model conditions on:
``[x (D) | conditions (C) | exposure (E = 0 or 1)]``, one float array (B, D + C + E).  Keeping
them in one row is what lets every path that moves rows (batching, shuffling, data-parallel
shards, datasets, the estimators) carry conditions and exposures without knowing of them;
:meth:`Columns.compose` builds the row from the three arrays the public methods take.

The tables (int32, built once):

- ``cols`` (D, 6): per data column [kind, first decoder output, number of outputs, aux
  index, aux stride per condition group, 1 if it adds the row's log-exposure] (the aux
  vector holds each column's log-scale or log inverse dispersion);
- ``meta`` (3,): [exposure column or -1, first condition column, number of condition groups
  or 0 when no dispersion depends on the condition];
- ``enc_src``, ``enc_mode`` (Dn,): the encoder's dense input columns (a row column, and how
  it is read: value, log1p of a count, observed mask);
- ``cat_cols``, ``cat_rows`` (n_cat,): the categorical columns and the first row of their
  one-hot block in the encoder's first weight matrix (after the Dn dense rows);
- ``cond_cols`` (C,): the condition columns, appended to the decoder's input.

Encoder input.  Numeric columns as they are, counts as log1p(count) (as scVI's encoder reads
them: raw counts up to 1e6 would saturate the first layer), categorical codes as a gather of
W's rows, then with ``missing="mask"`` the observed mask of every column, then the
conditions.  A missing cell reads as 0 (a missing code gathers nothing) and the mask tells
the encoder which zeros are missing: without it a missing value and an observed 0 would look
the same (HI-VAE feeds the mask the same way).
"""
from __future__ import annotations

import numpy as np

from .validate import DataError
from .blocks import Gaussian
from ..backends.codes import BLK_CATEGORICAL, ENC_MASK, ENC_VALUE


#: the aux vector's sections, in order (see Block.aux)
SECTIONS = ("fixed", "ls", "theta")


class Columns:
    """The layout of ``blocks`` (a list of :class:`~fastvae.core.blocks.Block`) with
    ``n_conditions`` condition columns (read by the decoder, and by the encoder unless
    ``encode_conditions`` is False) and, with ``missing`` True, NaN cells read as missing.

    Sizes: D data columns, P decoder outputs, C conditions, E exposure columns (0 or 1),
    ``width`` = D + C + E the data row; ``n_dense`` (Dn) and ``n_onehot`` (the classes of
    every categorical column) the rows of the encoder's first weight matrix; ``n_aux`` the
    aux vector, laid out [fixed log-scales | learned log-scales | log inverse dispersions]
    with ``aux_fixed`` the fixed values and ``n_logscale``, ``n_theta`` the learned sizes.
    """

    def __init__(self, blocks, n_conditions=0, missing=False, encode_conditions=True):
        self.blocks = list(blocks)
        self.C = int(n_conditions)
        self.missing = bool(missing)
        self.encode_conditions = bool(encode_conditions)
        self.D = sum(b.n for b in self.blocks)
        widths = [w for b in self.blocks for w in b.widths()]
        self.P = sum(widths)
        self.E = int(any(b.exposure for b in self.blocks))
        self.width = self.D + self.C + self.E
        grouped = [b for b in self.blocks if b.per_condition]
        if grouped and self.C < 2:
            raise ValueError(f"{grouped[0]!r} learns one dispersion per column and "
                             "condition: it needs n_conditions >= 2 (one-hot conditions), "
                             f"got n_conditions={self.C}")
        self.grouped = bool(grouped)
        # the aux vector: [fixed log-scales | learned log-scales | log inverse dispersions],
        # each section in block order; a block says what it reads (Block.aux)
        aux = [b.aux(self.C) for b in self.blocks]
        size = {sec: sum(a[1] for a in aux if a is not None and a[0] == sec)
                for sec in SECTIONS}
        self.aux_fixed = np.array([v for a in aux if a is not None and a[0] == "fixed"
                                   for v in a[4]], dtype=np.float64)
        self.n_logscale, self.n_theta = size["ls"], size["theta"]
        self.n_aux = sum(size.values())
        nxt = dict(zip(SECTIONS, np.cumsum([0] + [size[sec] for sec in SECTIONS[:-1]])))
        cols = np.zeros((self.D, 6), dtype=np.int32)
        j = o = 0
        self.block_columns = []  # (first column, stop) of each block
        for b, a in zip(self.blocks, aux):
            self.block_columns.append((j, j + b.n))
            for k, w in enumerate(b.widths()):
                index, stride = (-1, 0) if a is None else (int(nxt[a[0]]) + a[2][k], a[3])
                cols[j] = (b.kind, o, w, index, stride, int(b.exposure))
                j, o = j + 1, o + w
            if a is not None:
                nxt[a[0]] += a[1]
        self.cols = cols
        #: (block, first decoder output, stop) of each block
        self.spans = [(b, int(cols[j0, 1]), int(cols[j0, 1]) + sum(b.widths()))
                      for b, (j0, _) in zip(self.blocks, self.block_columns)]
        self.meta = np.array([self.D + self.C if self.E else -1, self.D,
                              self.C if self.grouped else 0], dtype=np.int32)
        kinds = cols[:, 0]
        src, mode = [], []
        for b, (j0, j1) in zip(self.blocks, self.block_columns):
            if b.enc_mode is not None:  # (None: a code, read as a row of the weights)
                src += list(range(j0, j1))
                mode += [b.enc_mode] * b.n
        if self.missing:
            src += list(range(self.D))
            mode += [ENC_MASK] * self.D
        if self.encode_conditions:
            src += list(range(self.D, self.D + self.C))
            mode += [ENC_VALUE] * self.C
        self.enc_src = np.array(src, dtype=np.int32)
        self.enc_mode = np.array(mode, dtype=np.int32)
        self.n_dense = len(src)
        cat = np.flatnonzero(kinds == BLK_CATEGORICAL).astype(np.int32)
        classes = cols[cat, 2]
        self.cat_cols = cat
        self.cat_rows = (np.cumsum(classes) - classes).astype(np.int32)
        self.n_onehot = int(classes.sum())
        self.cond_cols = np.arange(self.D, self.D + self.C, dtype=np.int32)

    # --------------------------------------------------------------------- rows
    def compose(self, X, conditions=None, exposure=None, dtype=np.float64, xp=np, name="X"):
        """The data rows (N, width) of X (N, D) with its conditions (N, C) and exposure (N,)
        or (N, 1), as one C-contiguous array of ``dtype``; X itself (no copy) when the model
        has neither and X already is such an array."""
        if not hasattr(X, "shape"):
            X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.D:
            raise ValueError(f"{name} must be (rows, {self.D}): the likelihood's blocks cover "
                             f"{self.D} columns, got shape {tuple(X.shape)}")
        if (conditions is None) != (self.C == 0):
            raise ValueError(f"this model has n_conditions={self.C}: pass conditions= of "
                             f"shape ({X.shape[0]}, {self.C})" if self.C else
                             "conditions given, but the model was built with n_conditions=0")
        if (exposure is None) != (self.E == 0):
            raise ValueError(f"this model's count blocks take an exposure: pass exposure= "
                             f"(library sizes or size factors) of shape ({X.shape[0]},)"
                             if self.E else "exposure given, but no block of this model "
                             "takes one (Poisson or NegBinomial with exposure=True)")
        parts = [X]
        if self.C:
            c = conditions if hasattr(conditions, "shape") else np.asarray(conditions)
            if c.ndim == 1 and self.C == 1:
                c = c.reshape(-1, 1)
            if c.ndim != 2 or c.shape[1] != self.C:
                raise ValueError(f"conditions must be (rows, {self.C}) (n_conditions={self.C}), "
                                 f"got shape {tuple(c.shape)}")
            parts.append(c)
        if self.E:
            e = exposure if hasattr(exposure, "shape") else np.asarray(exposure)
            e = e.reshape(-1, 1) if e.ndim == 1 else e
            if e.ndim != 2 or e.shape[1] != 1:
                raise ValueError(f"exposure must be (rows,), one per row, got shape "
                                 f"{tuple(e.shape)}")
            parts.append(e)
        for p in parts[1:]:
            if p.shape[0] != X.shape[0]:
                raise ValueError(f"{name} has {X.shape[0]} rows but its conditions/exposure "
                                 f"have {p.shape[0]}")
        for p in parts:
            if np.dtype(p.dtype).kind not in "fiub":
                raise TypeError(f"{name}, conditions and exposure must be numeric, got dtype "
                                f"{p.dtype}")
        if len(parts) == 1 and isinstance(X, xp.ndarray) and X.dtype == dtype \
                and X.flags.c_contiguous:
            return X
        return xp.ascontiguousarray(xp.concatenate([xp.asarray(p, dtype=dtype) for p in parts],
                                                   axis=1))

    def split(self, rows):
        """(x, conditions or None, exposure or None) views of data rows (N, width)."""
        D, C = self.D, self.C
        return (rows[:, :D], rows[:, D:D + C] if C else None,
                rows[:, D + C] if self.E else None)

    def check(self, rows, row0=0, name="x"):
        """Raise :class:`~fastvae.core.validate.DataError` (a ValueError) naming the first bad
        cell of the data rows (N, width) on the host, by column and value: a value the
        column's block cannot hold, NaN where ``missing`` is off, a condition that is not
        finite (or not one-hot when a dispersion depends on it), an exposure <= 0.
        ``row0`` numbers the rows (a chunk of a larger dataset)."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise DataError(f"{name}: expected rows of {self.width} columns, got shape "
                            f"{rows.shape}")
        x = rows[:, :self.D]
        for b, (j0, j1) in zip(self.blocks, self.block_columns):
            v = x[:, j0:j1]
            nan = np.isnan(v)
            if nan.any() and not self.missing:
                self._fail(name, b, j0, v, nan, row0, "is missing (NaN); build the model with "
                           "missing='mask' to train on rows with missing cells")
            with np.errstate(invalid="ignore"):
                bad, why, classes = b.invalid(v)
            self._fail(name, b, j0, v, ~nan & bad, row0, why, classes=classes)
        D, C = self.D, self.C
        if C:
            c = rows[:, D:D + C]
            bad = ~np.isfinite(c)
            if bad.any():
                i, k = np.argwhere(bad)[0]
                raise DataError(f"{name}: condition column {k} of row {row0 + i} is {float(c[i, k])!r}; "
                                "conditions must be finite numbers")
            if self.grouped:
                onehot = np.all((c == 0) | (c == 1), axis=1) & (c.sum(axis=1) == 1)
                if not onehot.all():
                    i = int(np.flatnonzero(~onehot)[0])
                    raise DataError(f"{name}: the conditions of row {row0 + i} are "
                                    f"{[float(v) for v in c[i]]}, not one-hot; a dispersion per "
                                    "condition (dispersion='condition') needs one-hot "
                                    "conditions")
        if self.E:
            e = rows[:, D + C]
            with np.errstate(invalid="ignore"):
                bad = ~(np.isfinite(e) & (e > 0))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{name}: the exposure of row {row0 + i} is {float(e[i])!r}; "
                                "exposures (library sizes, size factors) must be > 0")

    def _fail(self, name, block, j0, v, bad, row0, why, classes=None):
        if not bad.any():
            return
        i, k = np.argwhere(bad)[0]
        if classes is not None:
            why = why.format(k=classes[k])
        raise DataError(f"{name}: column {j0 + k} ({block!r}, its column {k}) has "
                        f"{float(v[i, k])!r} in row {row0 + i}, which {why}")

    def __repr__(self):
        return (f"Columns(D={self.D}, P={self.P}, C={self.C}, E={self.E}, "
                f"missing={self.missing}, aux={self.n_aux})")


def one_block(likelihood, D, obs_scale):
    """The block list of a likelihood name over D columns (a conditioned or masked model of
    'bernoulli' or 'gaussian' runs on the block kernels)."""
    from .blocks import Bernoulli
    if likelihood == "bernoulli":
        return [Bernoulli(D)]
    scale = {"learned": "learned", "per_pixel": "per_column"}.get(obs_scale, obs_scale)
    return [Gaussian(D, scale=scale)]


class Readout:
    """The decoder's outputs of a block model turned into what users read: distribution
    means (``means``), and draws or typical values per data column (``draw``)."""

    def __init__(self, columns):
        self.cl = columns

    def means(self, a, log_exposure, xp):
        """(N, P) of the decoder outputs a (N, P) (bias added): each block's means
        (:meth:`fastvae.core.blocks.Block.means`; log_exposure (N,) or None)."""
        m = a.copy()
        for b, lo, hi in self.cl.spans:
            m[:, lo:hi] = b.means(a[:, lo:hi], log_exposure, xp)
        return m

    def draw(self, m, aux, groups, rng, mean):
        """(N, D) host values from the means m (N, P) (host, float64): with ``mean`` the
        typical value of each column (its mean, a categorical column's most probable code);
        else a draw from p(x | z) with ``rng`` (NumPy Generator): Gaussian mean + sigma *
        noise, Bernoulli 0/1, categorical codes, Poisson counts, negative binomial counts
        (a gamma-Poisson mixture).  aux: the model's aux vector; groups (N,) condition
        groups (negative binomial dispersions per condition)."""
        cl = self.cl
        out = np.empty((m.shape[0], cl.D))
        for b, (j0, j1) in zip(cl.blocks, cl.block_columns):  # each block draws its own
            out[:, j0:j1] = b.draw(m, cl.cols[j0:j1], aux, groups, rng, mean)
        return out
