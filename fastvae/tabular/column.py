"""One column of a table: how its cells become the model's values, and how values become
cells again.

A :class:`Column` is made by :mod:`fastvae.tabular.kinds` and saved as JSON
(:meth:`Column.config`).  Its ``kind`` says what the model does with it:

- ``numeric``: a Gaussian cell on the column's numeric map (floats, integers, datetimes,
  timedeltas, dates written as text: times as nanoseconds);
- ``categorical``: a categorical cell over the column's frequent values (at most
  MAX_CATEGORIES of them); the values beyond the cap share one bucket (``others``: a
  draw of it is one of them, by their training frequencies) and the rare ones another
  (see :data:`RARE_MIN`);
- ``negbin``, ``poisson`` and ``zinb``: count cells (:mod:`fastvae.tabular.blocktypes`);
- ``constant``: one value in every row that has one; not modelled;
- ``independent``: an ignored column, drawn on its own from its training values;
- ``id``: identifiers (a value per row), written back as new identifiers of their shape.

A column with missing cells in training gets an *observed* head: a Bernoulli cell of the
model, 1 where the cell is present, read from the same code as the rest of the row, so a
sampled row has gaps where the data has them, and gaps that go together stay together
(columns whose gaps fall on exactly the same rows share one head: ``gap_group``).

Cells out go through a *store*: a flat NumPy array per column (float64 values, exact int64
or uint64 integers, int64 nanoseconds, int32 codes into :meth:`Column.out_values`, or
Python objects) that :meth:`Column.series` turns into the column's dtype.  Sampling fills
the stores chunk by chunk, so memory beyond the returned table does not grow with it.
"""
from __future__ import annotations

import numpy as np

from .blocktypes import COUNT_KINDS, MODELED
from .transforms import map_from_config, round_calendar
from .values import (format_dates, int_offsets, ints_from_offsets, parse_dates,
                     wall_times, zoned_times)

#: a value seen in fewer training rows than this is never copied into a sampled row
#: (copying it can identify a person): categories rarer than this are one bucket, sampled
#: as :data:`RARE` in a column of strings, else as one of the column's frequent values; a
#: numeric column's samples are clipped to its RARE_MIN-th smallest and largest values
RARE_MIN = 5
#: what a string column's rare bucket is written as
RARE = "_RARE_"
#: the store of each source's numbers (see the module docstring)
TIMES = ("datetime", "timedelta", "datetext", "date")
FIELDS = ("name", "kind", "source", "dtype", "role", "categories", "rare_values",
          "declared", "ordered", "lo", "hi", "slo", "shi", "signed", "decimals", "unit",
          "tz", "layout", "mean", "std", "gaps", "value", "freq", "pattern",
          "missing_share", "gap_group", "support", "calendar", "wall")


def pick(p, u):
    """Indices (n,) int64 of categories drawn with probabilities ``p`` (K,) (any positive
    scale: normalised here) by uniforms ``u`` (n,): the first category whose cumulative
    share reaches u."""
    return np.minimum((np.cumsum(p / p.sum())[None, :] < u[:, None]).sum(1), len(p) - 1)


def shown(v):
    """repr of a cell for a message: a NumPy number as the Python number it holds (30.5,
    not np.float64(30.5))."""
    number = isinstance(v, (np.number, np.bool_)) and not isinstance(v, np.timedelta64)
    return repr(plain(v) if number else v)


def _first_number(s, miss):
    """Position of the first present cell of Series ``s`` that is a number (not a bool,
    a time or text), or None."""
    if s.dtype.kind in "iuf":
        present = np.flatnonzero(~miss & s.notna().to_numpy())
        return int(present[0]) if present.size else None
    if s.dtype != object:
        return None
    for i, v in enumerate(s.to_numpy()):
        # (np.timedelta64 is a NumPy integer)
        if not miss[i] and isinstance(v, (int, float, np.integer, np.floating)) and \
                not isinstance(v, (bool, np.bool_, np.timedelta64)) and v == v:
            return i
    return None


class TableError(ValueError):
    """A table the model cannot take, naming the column (and the row) and the problem."""


def pandas_module():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("fastvae.tabular needs pandas: pip install 'fastvae[tabular]'") \
            from None
    return pd


def plain(v):
    """A cell value as a JSON value (NumPy scalars to Python ones)."""
    return v.item() if isinstance(v, np.generic) else v


class Column:
    """One column of the table (see the module docstring for ``kind``).

    source : float | int | bool | category | object (strings) | mixed | datetime |
        timedelta | datetext (dates written as text, ``layout``) | date (datetime.date
        objects).  dtype : the pandas dtype's name, restored on the way out.  role : data
        or condition.  categories : the modelled values of a categorical column (the
        frequent ones); freq["others"] : frequent values beyond the cap, which share a
        code (drawn by freq["others_p"]); rare_values : the training values too rare to
        copy, which share the last code; declared, ordered : a pandas Categorical's own
        categories and order.  lo, hi : the training range (exact
        Python ints for integers and times); slo, shi : the range samples are clipped to.
        map : the numeric map (:mod:`fastvae.tabular.transforms`) of a numeric column, on
        offsets from lo.  support : a discrete numeric column's values (raw units, seen in at
        least RARE_MIN rows each), which its samples are snapped to.  calendar : "month"
        or "year" when a naive time column holds only firsts of months (or of years),
        which its samples are rounded to.  wall : a zoned time column's unit and calendar
        are its wall clock's, and its samples are rounded on it (None: on UTC, as models
        saved before 2026-12-07 have it).  gaps : the column has an observed head.  value : a constant's
        value; freq : an independent column's values and frequencies (or quantiles);
        pattern : an id column's shape; missing_share : the share of missing cells of a
        column that has no head.
    """

    def __init__(self, name, kind, source, dtype, role="data", map=None, **kw):
        self.name, self.kind, self.source, self.dtype, self.role = name, kind, source, dtype, role
        for k in FIELDS[5:]:
            setattr(self, k, kw.pop(k, None))
        if kw:
            raise TypeError(f"unknown Column fields {sorted(kw)}")
        self.map = map
        self.gaps = bool(self.gaps)

    @property
    def rare(self):
        """Whether a categorical column has a rare bucket (its last code)."""
        return bool(self.rare_values)

    @property
    def others(self):
        """The frequent values beyond the cap, which share the code after the categories."""
        return list((self.freq or {}).get("others") or [])

    @property
    def classes(self):
        """The model's classes of a categorical column: its categories, the others'
        bucket, the rare bucket."""
        return len(self.categories) + bool(self.others) + self.rare

    # ------------------------------------------------------------------ properties
    @property
    def modeled(self):
        return self.kind in MODELED

    @property
    def is_time(self):
        return self.source in TIMES

    @property
    def strings(self):
        """Whether the column's values are strings (its rare bucket is written RARE)."""
        return self.source == "object"

    def out_values(self):
        """The cells the codes of a "code" store (:meth:`store`) stand for: a categorical
        column's categories (and RARE last, for a string column with a rare bucket); an
        independent column's frequent values (and RARE); a constant's value."""
        if self.kind == "categorical":
            return list(self.categories) + self.others + ([RARE] if self.rare and
                                                          self.strings else [])
        if self.kind == "constant":
            return [] if self.value is None else [self.value]
        return list(self.freq["values"]) + ([RARE] if self.freq.get("rare") and
                                            self.strings else [])

    def store(self):
        """What this column's cells are kept in on the way out: "code" (int32 codes into
        :meth:`out_values`, -1 missing), "float" (float64), "int" (exact int64, or uint64
        when not ``signed``), "ns" (int64 nanoseconds) or "object"."""
        if self.kind == "categorical" or (self.kind == "independent" and
                                          "values" in self.freq):
            return "code"
        if self.kind == "id":
            return "int" if self.source == "int" else "object"
        if self.is_time:
            return "ns"
        if self.source == "int" or self.kind in COUNT_KINDS:
            return "int"
        if self.source == "float":
            return "float"
        return "code"  # a constant of strings, booleans, categories

    # ------------------------------------------------------------------ cells in
    def numbers(self, s, where=None):
        """The cells of Series ``s`` as float64 (N,) model-scale numbers before the map,
        NaN where missing: a float column's values, an integer column's offsets from lo,
        a time column's nanoseconds from lo.  A cell that is not a number of this column's
        kind is a TableError naming the column and, with ``where`` (position -> text),
        the row."""
        pd = pandas_module()
        miss = s.isna().to_numpy()
        if self.is_time:
            ns = self.nanoseconds(s, miss, where)
            out = int_offsets(ns, self.lo)
        elif self.source == "int":
            ints = self.integers(s, miss, where)
            out = (ints.astype(np.float64) if self.kind in COUNT_KINDS else
                   int_offsets(ints, self.lo, self.signed))
        else:
            try:
                v = pd.to_numeric(s, errors="raise")
                out = np.array(pd.Series(v, dtype="Float64").to_numpy(
                    dtype=np.float64, na_value=np.nan), dtype=np.float64, copy=True)
            except (ValueError, TypeError, OverflowError):
                i = next(i for i, x in enumerate(s) if not miss[i] and not _number(x))
                raise TableError(self._at(where, i, f"{shown(s.iloc[i])} is not a number")) \
                    from None
        out[miss] = np.nan
        return out

    def absolute(self, s):
        """The cells of ``s`` as float64 (N,) in the column's own units (times in
        nanoseconds since the epoch), NaN where missing: for pictures, not exact."""
        v = self.numbers(s)
        return v if self.source == "float" or self.kind in COUNT_KINDS else \
            v + float(self.lo)

    def nanoseconds(self, s, miss, where):
        """A time column's present cells as exact int64 nanoseconds since the epoch (UTC),
        0 where ``miss``; a cell that is not a time is a TableError naming its row.  Times
        without a zone given for a zoned column are times in its zone (pandas reads them
        as UTC)."""
        pd = pandas_module()
        number = _first_number(s, miss)
        if number is not None:  # (pandas would read 5 as 5 ns after 1970: silently wrong)
            what = "duration" if self.source == "timedelta" else "date"
            raise TableError(self._at(where, number, f"{shown(s.iloc[number])} is a number, "
                                                     f"not a {what}"))
        try:
            if self.source == "datetext":
                t = parse_dates(s, self.layout["format"], pd)
            elif self.source == "timedelta":
                t = pd.to_timedelta(s)
            else:
                t = pd.to_datetime(s)
                if getattr(t.dt, "tz", None) is None and self.source == "datetime" and \
                        self.tz:  # (a time without a zone for a zoned column: the column's)
                    t = t.dt.tz_localize(self.tz)
                if getattr(t.dt, "tz", None) is not None:
                    t = t.dt.tz_convert("UTC").dt.tz_localize(None)
        except (ValueError, TypeError, OverflowError) as e:
            bad = _first_bad(s, miss, self.source, self.layout)
            what = f"{shown(s.iloc[bad])} is not a " \
                f"{'duration' if self.source == 'timedelta' else 'date'}" \
                if bad is not None else f"not {'durations' if self.source == 'timedelta' else 'dates'} ({e})"
            if self.source == "datetext" and self.layout.get("format"):
                what += f" in the column's layout ({self.layout['format']})"
            raise TableError(self._at(where, bad, what)) from None
        unit = "timedelta64[ns]" if self.source == "timedelta" else "datetime64[ns]"
        raw = t.to_numpy()
        ns = raw.astype(unit)
        # NumPy's cast wraps a time beyond int64 nanoseconds (the years 1677 to 2262; 292
        # years of duration) around silently: the cast back tells
        far = ~miss & (ns.astype(raw.dtype) != raw)
        if far.any():
            i = int(np.flatnonzero(far)[0])
            what = "duration" if self.source == "timedelta" else "time"
            span = ("292 years" if self.source == "timedelta" else
                    "the years 1678 to 2261")
            raise TableError(self._at(where, i, f"{shown(s.iloc[i])} is a {what} beyond what "
                                                f"fastvae holds exactly ({span}, in "
                                                f"nanoseconds); give the column as "
                                                f"numbers (a year, days since a date)"))
        ns = ns.view(np.int64).copy()
        ns[miss] = 0
        return ns

    def integers(self, s, miss, where):
        """The present cells as exact int64 (uint64 when not ``signed``), 0 where missing."""
        dt = np.uint64 if not self.signed else np.int64
        vals = s.to_numpy(dtype=object, na_value=None) if s.dtype == object or \
            hasattr(s.dtype, "na_value") else s.to_numpy()
        if vals.dtype != object:
            if vals.dtype.kind == "f":  # a float column read as integers (types=): exact ints
                bad = ~miss & (vals != np.floor(vals)) | ~miss & ~np.isfinite(vals)
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise TableError(self._at(where, i, f"{shown(vals[i])} is not an integer"))
            out = np.where(miss, 0, vals).astype(dt)
            return out
        out = np.zeros(len(vals), dtype=dt)
        for i, v in enumerate(vals):
            if miss[i]:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                if isinstance(v, (float, np.floating)) and float(v).is_integer():
                    v = int(v)
                else:
                    raise TableError(self._at(where, i, f"{shown(v)} is not an integer"))
            try:
                out[i] = int(v)
            except OverflowError:
                raise TableError(self._at(where, i,
                                          f"{shown(v)} does not fit in 64 bits")) from None
        return out

    def codes(self, s, unknown="error", where=None):
        """Category codes (N,) float64 of a categorical column, NaN for missing cells; a
        training value too rare to model has the rare bucket's code.  A value never seen in
        training is a TableError naming it, or with unknown="missing" a missing cell."""
        pd = pandas_module()
        miss = s.isna().to_numpy()
        others = self.others
        cats = pd.Index(list(self.categories) + others + list(self.rare_values or []),
                        dtype=object)
        vals = pd.Index(s.astype(object).to_numpy(dtype=object), dtype=object)
        idx = cats.get_indexer(vals)
        new = (idx < 0) & ~miss
        if new.any() and (unknown != "missing" or self.role == "condition"):
            i = int(np.flatnonzero(new)[0])
            n = int(new.sum())
            more = f" (and {n - 1} more row{'s' if n > 2 else ''})" if n > 1 else ""
            raise TableError(self._at(where, i, (
                f"{shown(s.iloc[i])} is not one of the {len(self.categories)} categories seen "
                f"in training{more}; " + ("conditions must be known values"
                                          if self.role == "condition" else
                                          "pass unknown='missing' to score such cells as "
                                          "missing"))))
        out = idx.astype(np.float64)
        k = len(self.categories)
        out[idx >= k] = k  # the others' bucket
        out[idx >= k + len(others)] = k + bool(others)  # the rare bucket
        out[idx < 0] = np.nan
        return out

    def _at(self, where, i, what):
        row = "" if i is None or where is None else f", {where(i)}"
        return f"{self.title}{row}: {what}"

    @property
    def title(self):
        """How messages name the column: "column 'x'" or "condition column 'x'"."""
        return f"{'condition column' if self.role == 'condition' else 'column'} {self.name!r}"

    # ------------------------------------------------------------------ cells out
    def cells(self, v, rng=None, mode="sample", probs=None):
        """The store (:meth:`store`) of a modelled column's values v (N,) float64 (codes
        of a categorical column, counts of a count column, mapped values of a numeric
        one): the map undone, values clipped to the sample range (``mode`` "sample") or to
        the training range ("impute": filling a table's own gaps, where a rare-bucket code
        becomes one of the frequent values too).  ``probs`` (N, K): a categorical column's
        class probabilities, which a rare-bucket code is redrawn from."""
        if self.kind == "categorical":
            k, others = len(self.categories), self.others
            c = np.clip(np.rint(np.nan_to_num(v)), 0, self.classes - 1).astype(np.int32)
            rare = k + bool(others)  # the rare bucket's code
            if self.rare and not (self.strings and mode == "sample"):
                c = self._redraw(c, rng, probs, rare)
            elif self.rare:  # RARE, after the others in out_values
                c[c == rare] = k + len(others)
            if others:  # one of the others, by their training frequencies
                hit = np.flatnonzero(c == k)
                p = np.asarray(self.freq["others_p"], dtype=np.float64)
                c[hit] = k + pick(p, (rng or np.random.default_rng(0)).random(hit.size))
            return c
        if self.kind in COUNT_KINDS:
            return self.finish(self._reflect(v) if mode == "sample" else v, mode)
        if mode == "sample":
            v = self._reflect(v, self.map.forward)
        return self.finish(self.map.inverse(v), mode)

    def finish(self, u, mode="sample"):
        """The store of numbers u (N,) float64 in the column's raw units (a float
        column's values, an integer or time column's offsets from lo, a count column's
        counts): rounded to the column's unit or decimals, clipped to the sample range
        (``mode`` "sample") or the training range, exact in integer space."""
        lo, hi = (self.slo, self.shi) if mode == "sample" else (self.lo, self.hi)
        signed = self.signed is not False
        if self.kind in COUNT_KINDS:
            return ints_from_offsets(u - float(lo), lo, hi, signed)
        if self.support:  # a discrete column: its nearest value
            u = snap(u, np.asarray(self.support, dtype=np.float64))
        if self.is_time and self.tz and self.wall:  # (rounded on the zone's wall clock)
            pd = pandas_module()
            t = np.clip(np.rint(np.nan_to_num(u)), float(lo - self.lo),
                        float(hi - self.lo)).astype(np.int64) + self.lo
            wall = wall_times(t, self.tz, pd)
            wall = (wall + self.unit // 2) // self.unit * self.unit  # (exact in int64)
            if self.calendar:
                wall = np.rint(round_calendar(wall, self.calendar)).astype(np.int64)
            u = (zoned_times(wall, self.tz, pd, near=t) - self.lo).astype(np.float64)
        elif self.is_time:
            u = np.rint(u / self.unit) * self.unit
            if self.calendar:  # monthly or yearly data: the first of the nearest one
                u = round_calendar(u + float(self.lo), self.calendar) - float(self.lo)
        if self.is_time or self.source == "int":
            return ints_from_offsets(u - float(lo - self.lo), lo, hi, signed)
        if self.decimals is not None:
            u = np.round(u, self.decimals)
        return np.clip(u, lo, hi)

    def _reflect(self, v, to=None):
        """Samples beyond the sample range [slo, shi] mirrored back into it at the edge
        they passed (again at the other edge, should they pass it): ``v`` the mapped values and
        ``to`` the map (the mirror is in its space, where the tails are a normal's), or
        the store's numbers (a count column).  Clipped instead, every draw beyond an edge
        took its value, one training row's: on MASS Animals (28 rows: the 5th of 28
        values is the edge, 4/28 of the mass lies beyond it) 20% of the samples' body
        weights were the guinea pig's 1.04, and 13% of the samples its whole row."""
        if self.slo is None or self.shi is None:
            return v
        off = float(self.lo) if (self.is_time or self.source == "int") and \
            self.kind not in COUNT_KINDS else 0.0
        edges = np.array([float(self.slo) - off, float(self.shi) - off])
        a, b = (to(edges) if to is not None else edges).tolist()
        # (folded to and fro, a draw far beyond lands anywhere in the range, not on the
        # other edge: a count column's heavy tail piled there)
        w = b - a
        if w <= 0:
            return np.full_like(v, a)
        t = np.mod(v - a, 2 * w)
        return a + np.where(t > w, 2 * w - t, t)

    def _redraw(self, c, rng, probs, rare):
        """Rare-bucket codes (``rare``) replaced by a frequent value: drawn from the row's
        class probabilities (``probs``), or from the training frequencies."""
        k = len(self.categories)
        hit = np.flatnonzero(c == rare)
        if hit.size == 0:
            return c
        if probs is not None:
            p = np.asarray(probs[hit, :k], dtype=np.float64)
            p = np.where(p.sum(1, keepdims=True) > 0, p, 1.0)
        else:  # the training frequencies of the frequent values
            p = np.tile(np.asarray(self.freq["p"][:k], dtype=np.float64), (hit.size, 1))
        p = p / p.sum(1, keepdims=True)
        u = (rng or np.random.default_rng(0)).random(hit.size)[:, None]
        c[hit] = np.minimum((np.cumsum(p, axis=1) < u).sum(1), k - 1)
        return c

    def series(self, store, missing=None):
        """The column as a pandas Series of its training dtype, from its store (N,)
        (:meth:`store`) and a missing mask (N,) bool or None."""
        pd = pandas_module()
        kind = self.store()
        if missing is not None and not missing.any():
            missing = None
        if kind == "code":
            if missing is not None:
                store = np.where(missing, -1, store).astype(np.int32)
            vals = self.out_values()
            if self.source == "category":  # the dtype's declared categories, kept
                pos = np.array([self.declared.index(v) for v in vals] + [-1], dtype=np.int32)
                return pd.Series(pd.Categorical.from_codes(pos[store], dtype=pd.CategoricalDtype(
                    self.declared, ordered=bool(self.ordered))))
            return self._typed(pd, _take(vals, store))
        if kind == "object":
            if missing is not None:
                store = store.copy()
                store[missing] = None
            return self._typed(pd, store)
        if kind == "ns":
            return self._times(pd, store, missing)
        s = pd.Series(store)
        if self.dtype == "object":
            s = s.astype(object)
            return s if missing is None else s.mask(missing, None)
        if missing is None:
            return s.astype(self.dtype)
        # (a column whose dtype holds no missing value had no gap in training)
        s = s.astype(self.dtype if self._holds_na() else "float64")
        return s.mask(missing)

    def _holds_na(self):
        """Whether the column's dtype can hold a missing cell."""
        return self.dtype not in ("int8", "int16", "int32", "int64", "uint8", "uint16",
                                  "uint32", "uint64", "bool")

    def _typed(self, pd, objects):
        """An object array (N,) (None: missing) as a Series of the column's dtype."""
        a = pd.Series(np.asarray(objects, dtype=object), dtype=object)
        dtype = self.dtype
        if dtype == "object" or (dtype == "str" and pd.__version__ < "3"):
            return a  # (pandas 2 would write None as the string 'None')
        if self.source == "bool" and dtype == "bool" and a.isna().any():
            dtype = "boolean"
        try:
            return a.astype(dtype)
        except (TypeError, ValueError):
            return a

    def _times(self, pd, ns, missing):
        if self.source == "datetext":
            text = format_dates(ns, self.layout, pd)
            if missing is not None:
                text[missing] = None
            return self._typed(pd, text)
        if self.source == "timedelta":
            t = pd.Series(pd.to_timedelta(ns, unit="ns"))
        else:
            t = pd.Series(pd.to_datetime(ns, unit="ns"))
            if self.tz:
                t = t.dt.tz_localize("UTC").dt.tz_convert(self.tz)
        if missing is not None and missing.any():
            t[missing] = pd.NaT
        if self.source == "date":
            d = t.dt.date.astype(object)
            if missing is not None:
                d[missing] = None
            return d
        try:  # the training column's resolution (Parquet gives us, CSV ns)
            return t.astype(self.dtype)
        except (TypeError, ValueError):
            return t

    # ------------------------------------------------------------------ files
    def config(self):
        d = {k: getattr(self, k) for k in FIELDS}
        d["map"] = None if self.map is None else self.map.config()
        return d

    @classmethod
    def from_config(cls, d):
        d = dict(d)
        m = d.pop("map", None)
        return cls(**{k: v for k, v in d.items() if k in FIELDS},
                   map=None if m is None else map_from_config(m))

    def __repr__(self):
        extra = f", {len(self.categories)} categories" if self.categories else ""
        return f"Column({self.name!r}, {self.kind}, from {self.source} {self.dtype}{extra})"


def snap(u, support):
    """Each of u (N,) replaced by the nearest of ``support`` (sorted, (K,) float64)."""
    i = np.clip(np.searchsorted(support, u), 1, support.size - 1) if support.size > 1 else \
        np.zeros(u.shape, np.int64)
    if support.size == 1:
        return np.full(u.shape, support[0])
    below, above = support[i - 1], support[i]
    return np.where(u - below <= above - u, below, above)


def _take(values, codes):
    """An object array of values[codes] (None for -1)."""
    table = np.empty(len(values) + 1, dtype=object)
    table[:-1] = values
    table[-1] = None
    return table[codes]


def _number(x):
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def _first_bad(s, miss, source, layout):
    """The position of the first present cell of s that is not a time, or None."""
    pd = pandas_module()
    for i, x in enumerate(s):
        if miss[i]:
            continue
        try:
            if source == "datetext":
                parse_dates(pd.Series([x]), layout["format"], pd)
            elif source == "timedelta":
                pd.to_timedelta(x)
            else:
                pd.to_datetime(x)
        except (ValueError, TypeError, OverflowError):
            return i
    return None


__all__ = ["Column", "TableError", "RARE", "RARE_MIN", "MODELED", "pandas_module", "plain",
           "pick", "shown"]
