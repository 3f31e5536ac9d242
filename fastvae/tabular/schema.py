"""A table's schema: what each column is, how it becomes model columns, and how it comes back.

:func:`infer` reads a pandas DataFrame and gives a :class:`Schema`: one :class:`Column` per
column the model sees (and one per condition column).  Inference, each overridable with
``types={"col": TYPE}``:

- bool, ``boolean``, category, string and object columns of strings -> ``categorical``;
- integer and float columns -> ``numeric`` (a Gaussian block after the numeric map of
  :mod:`fastvae.tabular.transforms`; integers are sampled as integers);
- datetime64 (with or without a time zone) and timedelta64 columns -> ``numeric``, in
  nanoseconds, sampled at the coarsest unit the training values use (days, hours, ...);
- ``count`` (or ``negbin``) and ``poisson``: integer counts as negative-binomial or Poisson
  cells, only when asked (a count's mean and dispersion are what these model; a Gaussian on
  the quantile map fits a count's marginal as well, and needs no asking);
- ``ignore``: the column is left out of the model (an identifier, free text).

Missing cells (NaN, None, NaT, pd.NA) become the model's missing-cell mask.

Shapes: :meth:`Schema.encode` gives X (N, D) float64 (codes for categorical cells, NaN for
missing ones) and the conditions (N, C) float64; :meth:`Schema.decode` takes the model's
per-column values (N, D) and gives the DataFrame back with the original names, order,
dtypes and categories.
"""
from __future__ import annotations

import numpy as np

from .transforms import MAPS, decimals, map_from_config, time_unit

#: the column types a user can ask for, and what each is called inside
TYPES = {"numeric": "numeric", "categorical": "categorical", "category": "categorical",
         "count": "negbin", "negbin": "negbin", "nb": "negbin", "poisson": "poisson",
         "ignore": "ignore"}
#: categories a categorical column may have before it is refused (an identifier, free text)
MAX_CATEGORIES = 1000


class TableError(ValueError):
    """A table the model cannot take, naming the column and the problem."""


def pandas_module():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("fastvae.tabular needs pandas: pip install 'fastvae[tabular]'") \
            from None
    return pd


def _plain(v):
    """A category as a JSON value (numpy scalars to Python ones)."""
    return v.item() if isinstance(v, np.generic) else v


class Column:
    """One column of the table.  ``kind``: numeric | categorical | negbin | poisson;
    ``source``: what the values were (float, int, bool, datetime, timedelta, category,
    object); ``dtype`` the pandas dtype's name, to restore; ``role``: data or condition."""

    def __init__(self, name, kind, source, dtype, role="data", categories=None, ordered=False,
                 map=None, lo=None, hi=None, decimals=None, unit=None, tz=None,
                 mean=None, std=None):
        self.name, self.kind, self.source, self.dtype, self.role = name, kind, source, dtype, role
        self.categories = None if categories is None else list(categories)
        self.ordered = bool(ordered)
        self.map = map
        self.lo, self.hi, self.decimals, self.unit, self.tz = lo, hi, decimals, unit, tz
        self.mean, self.std = mean, std

    # ------------------------------------------------------------------ values in
    def raw(self, s):
        """The series' values as float64 (N,) (numeric kinds) with NaN for missing; codes
        for categorical ones are made by :meth:`codes`."""
        pd = pandas_module()
        if self.source in ("datetime", "timedelta"):
            if self.source == "datetime":
                try:
                    t = pd.to_datetime(s)
                except (ValueError, TypeError) as e:
                    raise TableError(f"column {self.name!r}: not datetimes ({e})") from None
                if getattr(t.dt, "tz", None) is not None:
                    t = t.dt.tz_convert("UTC").dt.tz_localize(None)
            else:
                t = pd.to_timedelta(s)
            miss = t.isna().to_numpy()
            unit = "datetime64[ns]" if self.source == "datetime" else "timedelta64[ns]"
            v = t.to_numpy().astype(unit).astype("int64").astype(np.float64)
            v[miss] = np.nan
            return v
        try:
            v = pd.to_numeric(s, errors="raise")
        except (ValueError, TypeError):
            bad = next(x for x in s if not _is_number(x))
            raise TableError(f"column {self.name!r}: {bad!r} is not a number") from None
        # a copy: to_numpy of a float64 column can be a view of the table's own memory,
        # and the caller maps the values in place
        return np.array(pd.Series(v, dtype="Float64").to_numpy(dtype=np.float64,
                                                               na_value=np.nan), copy=True)

    def codes(self, s, unknown="error"):
        """Category codes (N,) float64, NaN for missing cells.  A value not among the
        training categories is an error naming it, or a missing cell with
        unknown="missing"."""
        pd = pandas_module()
        miss = s.isna().to_numpy()
        cats = pd.Index(self.categories)
        vals = s.astype(object) if self.source == "bool" else s
        idx = cats.get_indexer(pd.Index(vals.astype(object)))
        new = (idx < 0) & ~miss
        if new.any():
            first = s[new].iloc[0]
            if unknown != "missing" or self.role == "condition":
                n = int(new.sum())
                more = f" and {n - 1} more" if n > 1 else ""
                raise TableError(
                    f"column {self.name!r}: {first!r} is not one of the {len(cats)} categories "
                    f"seen in training (row {int(np.flatnonzero(new)[0])}{more}); "
                    + ("conditions must be known values" if self.role == "condition" else
                       "pass unknown='missing' to score such cells as missing"))
        out = idx.astype(np.float64)
        out[idx < 0] = np.nan
        return out

    # ------------------------------------------------------------------ values out
    def values(self, v):
        """Model values (N,) float64 -> a pandas Series with this column's dtype."""
        pd = pandas_module()
        if self.kind == "categorical":
            c = np.clip(np.rint(v).astype(np.int64), 0, len(self.categories) - 1)
            if self.source == "category":
                return pd.Series(pd.Categorical.from_codes(
                    c, dtype=pd.CategoricalDtype(self.categories, ordered=self.ordered)))
            vals = np.array(self.categories, dtype=object)[c]
            if self.source == "bool":
                return pd.Series(vals.astype(bool), dtype=self.dtype if self.dtype in
                                 ("bool", "boolean") else "bool")
            return pd.Series(vals, dtype=self.dtype if self.dtype != "object" else object)
        if self.kind in ("negbin", "poisson"):
            v = np.rint(v)
        elif self.map is not None:
            v = self.map.inverse(v)
        if self.source in ("datetime", "timedelta"):
            ns = (np.rint(v / self.unit) * self.unit).astype("int64")
            if self.source == "timedelta":
                t = pd.Series(pd.to_timedelta(ns, unit="ns"))
            else:
                t = pd.Series(pd.to_datetime(ns, unit="ns"))
                if self.tz:
                    t = t.dt.tz_localize("UTC").dt.tz_convert(self.tz)
            try:  # the training column's resolution (parquet gives us, CSV ns)
                return t.astype(self.dtype)
            except (TypeError, ValueError):
                return t
        if self.source == "int" or self.kind in ("negbin", "poisson"):
            v = np.clip(np.rint(v), self.lo, self.hi)
            return pd.Series(v.astype(np.int64)).astype(self.dtype)
        if self.decimals is not None:
            v = np.round(v, self.decimals)
        return pd.Series(np.clip(v, self.lo, self.hi)).astype(self.dtype)

    # ------------------------------------------------------------------ files
    def config(self):
        d = {k: getattr(self, k) for k in ("name", "kind", "source", "dtype", "role",
                                          "categories", "ordered", "lo", "hi", "decimals",
                                          "unit", "tz", "mean", "std")}
        d["map"] = None if self.map is None else self.map.config()
        return d

    @classmethod
    def from_config(cls, d):
        d = dict(d)
        m = d.pop("map")
        return cls(**d, map=None if m is None else map_from_config(m))

    def __repr__(self):
        extra = f", {len(self.categories)} categories" if self.categories else ""
        return f"Column({self.name!r}, {self.kind}, from {self.source} {self.dtype}{extra})"


def _is_number(x):
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def _source(name, s):
    """What the values of series s are: float, int, bool, datetime, timedelta, category,
    object (strings); a TableError names anything else."""
    pd = pandas_module()
    t = pd.api.types
    dt = s.dtype
    if t.is_bool_dtype(dt):
        return "bool"
    if isinstance(dt, pd.CategoricalDtype):
        return "category"
    if t.is_datetime64_any_dtype(dt):
        return "datetime"
    if t.is_timedelta64_dtype(dt):
        return "timedelta"
    if t.is_complex_dtype(dt):
        raise TableError(f"column {name!r}: complex numbers are not supported; split them "
                         "into real and imaginary columns, or pass types={'%s': 'ignore'}"
                         % name)
    if t.is_integer_dtype(dt):
        return "int"
    if t.is_float_dtype(dt):
        return "float"
    if t.is_string_dtype(dt) or dt == object:
        vals = s.dropna()
        kinds = {type(v) for v in vals}
        if kinds <= {str}:
            return "object"
        if kinds <= {bool, np.bool_}:
            return "bool"
        shown = ", ".join(sorted(k.__name__ for k in kinds))
        raise TableError(f"column {name!r}: values of types {shown} side by side are not "
                         f"supported; make it one type, or pass types={{{name!r}: 'ignore'}}")
    raise TableError(f"column {name!r}: dtype {dt} is not supported; convert it, or pass "
                     f"types={{{name!r}: 'ignore'}}")


def _column(name, s, asked, role, numeric):
    pd = pandas_module()
    source = _source(name, s)
    present = s.dropna()
    if len(present) == 0:
        raise TableError(f"column {name!r} has no values (every cell is missing); drop it "
                         f"or pass types={{{name!r}: 'ignore'}}")
    kind = asked or ("categorical" if source in ("bool", "category", "object") else "numeric")
    dtype = str(s.dtype)
    if kind == "categorical":
        if source == "category":
            cats, ordered = [_plain(c) for c in s.cat.categories], s.cat.ordered
        elif source == "bool":
            cats, ordered = [False, True], False
        else:
            vals = present.unique()
            try:
                cats = sorted(_plain(v) for v in vals)
            except TypeError:
                cats = sorted((_plain(v) for v in vals), key=str)
            ordered = False
        n_seen = present.nunique()
        if n_seen < 2:
            raise TableError(f"column {name!r} is constant ({present.iloc[0]!r} in every "
                             f"row with a value): it carries nothing to learn; drop it or "
                             f"pass types={{{name!r}: 'ignore'}}")
        if len(cats) > MAX_CATEGORIES:
            raise TableError(f"column {name!r} has {len(cats)} distinct values, more than "
                             f"{MAX_CATEGORIES} categories (an identifier or free text?); "
                             f"pass types={{{name!r}: 'ignore'}}")
        return Column(name, "categorical", source, dtype, role, categories=cats,
                      ordered=ordered)
    if source in ("bool", "category", "object") and kind != "categorical":
        raise TableError(f"column {name!r} holds {source} values; it can only be "
                         f"'categorical' (or 'ignore'), not {kind!r}")
    col = Column(name, kind, source, dtype, role)
    v = col.raw(s)
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise TableError(f"column {name!r} has no finite values")
    if np.unique(v).size < 2:
        raise TableError(f"column {name!r} is constant ({v[0]:g} in every row with a "
                         f"value): it carries nothing to learn; drop it or pass "
                         f"types={{{name!r}: 'ignore'}}")
    col.lo, col.hi = float(v.min()), float(v.max())
    if kind in ("negbin", "poisson"):
        if source not in ("int", "float") or (v < 0).any() or (v != np.round(v)).any():
            bad = v[(v < 0) | (v != np.round(v))]
            what = repr(float(bad[0])) if bad.size else f"{source} values"
            raise TableError(f"column {name!r} was asked to be {kind} counts, but holds "
                             f"{what}: counts are integers >= 0")
        return col
    if source in ("datetime", "timedelta"):
        col.unit = time_unit(v.astype(np.int64))
        if source == "datetime":
            tz = getattr(s.dt, "tz", None)
            col.tz = None if tz is None else str(tz)
    elif source == "float":
        col.decimals = decimals(v)
    if role == "condition":
        col.mean, col.std = float(v.mean()), float(v.std())
        return col
    col.map = MAPS[numeric].fit(v)
    return col


class Schema:
    """The columns of a table as the model sees them: ``data`` (the modeled columns, in
    the model's order: numeric, categorical, negbin, poisson), ``conditions`` (the
    condition columns), ``order`` (every column name of the training table, in its order,
    ignored ones included) and ``ignored``."""

    def __init__(self, data, conditions, order, ignored):
        self.data, self.conditions = list(data), list(conditions)
        self.order, self.ignored = list(order), list(ignored)

    # ---------------------------------------------------------------- the model's side
    def blocks(self):
        """The likelihood blocks of the data columns, in order."""
        from ..core.blocks import Categorical, Gaussian, NegBinomial, Poisson
        out = []
        for kind, make in (("numeric", lambda cs: Gaussian(len(cs), scale="per_column")),
                           ("categorical", lambda cs: Categorical(
                               [len(c.categories) for c in cs])),
                           ("negbin", lambda cs: NegBinomial(len(cs))),
                           ("poisson", lambda cs: Poisson(len(cs)))):
            cs = [c for c in self.data if c.kind == kind]
            if cs:
                out.append(make(cs))
        return out

    @property
    def n_conditions(self):
        """Width of the condition matrix: K per categorical condition (one-hot), 1 per
        numeric one."""
        return sum(len(c.categories) if c.kind == "categorical" else 1
                   for c in self.conditions)

    # ---------------------------------------------------------------- tables in
    def check_columns(self, df, need_data=True, need_conditions=True):
        names = set(map(str, df.columns))
        want = ([c.name for c in self.data] if need_data else []) + \
            ([c.name for c in self.conditions] if need_conditions else [])
        missing = [n for n in want if n not in names]
        if missing:
            raise TableError(f"the table has no column(s) {missing}; the model was trained "
                             f"on {[c.name for c in self.data]}"
                             + (f" with conditions {[c.name for c in self.conditions]}"
                                if self.conditions else ""))

    def encode(self, df, unknown="error"):
        """X (N, D) float64 of the data columns (NaN: missing), in the model's order."""
        self.check_columns(df, need_conditions=False)
        X = np.empty((len(df), len(self.data)))
        for j, c in enumerate(self.data):
            s = df[c.name]
            if c.kind == "categorical":
                X[:, j] = c.codes(s, unknown)
            else:
                v = c.raw(s)
                if c.kind == "numeric":
                    ok = np.isfinite(v)
                    if np.isinf(v).any():
                        raise TableError(f"column {c.name!r}: infinite value in row "
                                         f"{int(np.flatnonzero(np.isinf(v))[0])}")
                    v[ok] = c.map.forward(v[ok])
                X[:, j] = v
        return X

    def encode_conditions(self, df):
        """The condition matrix (N, C) float64: one-hot categorical conditions,
        standardized numeric ones; a missing condition is an error naming the column."""
        if not self.conditions:
            return None
        self.check_columns(df, need_data=False)
        parts = []
        for c in self.conditions:
            s = df[c.name]
            if s.isna().any():
                r = int(np.flatnonzero(s.isna().to_numpy())[0])
                raise TableError(f"condition column {c.name!r} has a missing value (row "
                                 f"{r}); every row needs its conditions")
            if c.kind == "categorical":
                codes = c.codes(s).astype(np.int64)
                parts.append(np.eye(len(c.categories))[codes])
            else:
                parts.append(((c.raw(s) - c.mean) / (c.std or 1.0))[:, None])
        return np.concatenate(parts, axis=1)

    # ---------------------------------------------------------------- tables out
    def decode(self, values, cond_frame=None, index=None):
        """A DataFrame of model values (N, D) float64 (codes for categorical columns),
        with the condition columns from ``cond_frame``, in the training table's column
        order (ignored columns left out)."""
        pd = pandas_module()
        cols = {c.name: c.values(values[:, j]) for j, c in enumerate(self.data)}
        for c in self.conditions:
            cols[c.name] = cond_frame[c.name].reset_index(drop=True)
        out = pd.DataFrame({n: cols[n] for n in self.order if n in cols})
        if index is not None:
            out.index = index
        return out

    # ---------------------------------------------------------------- files
    def config(self):
        return {"data": [c.config() for c in self.data],
                "conditions": [c.config() for c in self.conditions],
                "order": self.order, "ignored": self.ignored}

    @classmethod
    def from_config(cls, d):
        return cls([Column.from_config(c) for c in d["data"]],
                   [Column.from_config(c) for c in d["conditions"]], d["order"], d["ignored"])

    def __repr__(self):
        kinds = {}
        for c in self.data:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        s = ", ".join(f"{n} {k}" for k, n in kinds.items())
        cond = f"; conditions {[c.name for c in self.conditions]}" if self.conditions else ""
        return f"Schema({s}{cond})"


def infer(df, types=None, conditions=(), numeric="quantile"):
    """The :class:`Schema` of DataFrame ``df``: ``types`` maps column names to a type of
    :data:`TYPES` (overriding inference), ``conditions`` names the condition columns,
    ``numeric`` picks the numeric map ("quantile" or "standard")."""
    if numeric not in MAPS:
        raise ValueError(f"numeric must be one of {sorted(MAPS)}, got {numeric!r}")
    types = dict(types or {})
    names = [str(n) for n in df.columns]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise TableError(f"the table has duplicate column names {dup}")
    for k, v in types.items():
        if k not in names:
            raise TableError(f"types names column {k!r}, which the table does not have "
                             f"(its columns: {names})")
        if v not in TYPES:
            raise TableError(f"column {k!r}: unknown type {v!r}; choose from "
                             f"{sorted(set(TYPES))}")
    conditions = [conditions] if isinstance(conditions, str) else list(conditions or ())
    for c in conditions:
        if c not in names:
            raise TableError(f"condition column {c!r} is not in the table (its columns: "
                             f"{names})")
    if len(df) < 2:
        raise TableError(f"the table has {len(df)} row(s); a model needs at least 2")
    data, conds, ignored = [], [], []
    df = df.set_axis(names, axis=1)
    for n in names:
        asked = TYPES.get(types.get(n)) if n in types else None
        if asked == "ignore":
            ignored.append(n)
            continue
        if n in conditions:
            if asked not in (None, "numeric", "categorical"):
                raise TableError(f"condition column {n!r} can be categorical or numeric, "
                                 f"not {types[n]!r}")
            conds.append(_column(n, df[n], asked, "condition", numeric))
        else:
            data.append(_column(n, df[n], asked, "data", numeric))
    if not data:
        raise TableError("no column is left to model (every column is ignored or a "
                         "condition)")
    rank = {"numeric": 0, "categorical": 1, "negbin": 2, "poisson": 3}
    data.sort(key=lambda c: rank[c.kind])  # stable: the table's order within a kind
    return Schema(data, conds, names, ignored)
