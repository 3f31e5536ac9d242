"""A table's schema: what each column is, how it becomes the model's columns, how it comes back.

:func:`infer` reads a pandas DataFrame and gives a :class:`Schema` of
:class:`~fastvae.tabular.column.Column` objects (see :mod:`fastvae.tabular.kinds` for the
rules).  The model's data row is ``[modelled columns | observed heads]``: the modelled
columns in the order of :data:`~fastvae.tabular.blocktypes.MODELED` (numeric, categorical,
negbin, poisson, zinb; the table's order within a kind), then one Bernoulli cell per group of columns with gaps in training (the columns
whose gaps fall on the same rows form one group: they come back missing together), 1 where
the cells are present.

Shapes: :meth:`Schema.encode` gives X (N, D) float64 (codes for categorical cells, NaN for
missing ones); :meth:`Schema.encode_conditions` the conditions (N, C) float64;
:meth:`Schema.cells` takes the model's values (N, D) and gives every column's cells (its
store and missing mask), which :meth:`Schema.frame` turns into the DataFrame, with the
original labels, order, dtypes and categories.  Every check names the column and the row
(``where``: a row's position -> "line 7 of t.csv" or "row 'a'").
"""
from __future__ import annotations

import os
import re

import numpy as np

from .column import (RARE, RARE_MIN, Column, TableError, pandas_module, shown)  # noqa: F401
from .blocktypes import BY_KIND, COUNT_KINDS, MODELED
from .condjoint import ConditionJoint
from .kinds import ENUM_RELATED, TYPES, check_labels, make_column
from .transforms import MAPS

#: the schema's format in a checkpoint (1: fastvae 0.x before observed heads; 3: a model
#: with component rules, fastvae.tabular.components)
VERSION = 3
#: the version a schema is written with when its model has no component rules (which a
#: reader of version 2 cannot apply: it says to upgrade instead of failing)
PLAIN_VERSION = 2
_RANK = {kind: i for i, kind in enumerate(MODELED)}


def row_namer(df):
    """where(i) for a DataFrame's rows: its index label."""
    index = df.index
    return lambda i: f"row {shown(index[i])}"


class Schema:
    """The columns of a table as the model sees them.

    columns : every data column (not the conditions), in the table's order; data : the
    modelled ones, in the model's order; heads : the groups of columns (lists) that share an
    observed head, in the model's order; free : the columns the model does not hold
    (constant, independent, id); conditions : the condition columns; order : every label of
    the table, in its order.
    """

    def __init__(self, columns, conditions, order, salt=None, joint=None):
        self.columns, self.conditions, self.order = list(columns), list(conditions), list(order)
        #: the conditions' joint (two conditions or more; None: each drawn on its own)
        self.joint = joint
        #: the key of the id columns' hashes of their training values (bytes)
        self.salt = salt
        self.data = sorted((c for c in self.columns if c.modeled), key=lambda c: _RANK[c.kind])
        gappy = [c for c in self.data if c.gaps] + \
            [c for c in self.columns if c.kind == "constant" and c.gaps]
        groups = {}
        for c in gappy:  # (a column without a group, from an older schema, is its own)
            groups.setdefault(("g", c.gap_group) if c.gap_group is not None else ("c", c.name),
                              []).append(c)
        self.heads = list(groups.values())
        self.free = [c for c in self.columns if not c.modeled]

    # ---------------------------------------------------------------- the model's side
    @property
    def width(self):
        """D, the model's data columns: the modelled columns and the observed heads."""
        return len(self.data) + len(self.heads)

    def blocks(self):
        """The likelihood blocks of the model's data columns, in order."""
        from ..core.blocks import Bernoulli
        out = []
        for kind, t in BY_KIND.items():
            cs = [c for c in self.data if c.kind == kind]
            if cs:
                out.append(t.make(cs))
        if self.heads:
            out.append(Bernoulli(len(self.heads)))
        return out

    def gap_column(self, df):
        """The label of the first modelled column with a missing cell in DataFrame ``df``
        (None if none has one)."""
        return next((c.name for c in self.columns
                     if c.modeled and c.name in df and df[c.name].isna().any()), None)

    def parts(self):
        """For each model column, the table columns its score belongs to (a list of labels
        per model column, length D): a modelled column's own, then each head's group (its
        score is shared equally between them)."""
        return [[c.name] for c in self.data] + [[c.name for c in g] for g in self.heads]

    @property
    def n_conditions(self):
        """Width of the condition matrix: K per categorical condition (one-hot), 1 per
        numeric one."""
        return sum(len(c.categories) if c.kind == "categorical" else 1
                   for c in self.conditions)

    # ---------------------------------------------------------------- tables in
    def blank_label(self, df):
        """``df`` with its blank column label "" renamed to the pandas name ('Unnamed: N')
        this schema has in its place: models trained before fastvae kept a blank CSV header
        cell blank read it so, and must still read their own files."""
        if "" not in df.columns or "" in self.order:
            return df
        old = [c for c in self.order if isinstance(c, str) and
               re.fullmatch(r"Unnamed: \d+", c) and c not in df.columns]
        return df.rename(columns={"": old[0]}) if len(old) == 1 else df

    def check_columns(self, df, need_data=True, need_conditions=True):
        have = set(df.columns)
        want = ([c.name for c in self.data] + [c.name for g in self.heads for c in g
                                                if not c.modeled] if need_data else []) + \
            ([c.name for c in self.conditions] if need_conditions else [])
        missing = [n for n in dict.fromkeys(want) if n not in have]
        if missing:
            raise TableError(f"the table has no column(s) {missing}; the model reads "
                             f"{[c.name for c in self.data]}"
                             + (f" with conditions {[c.name for c in self.conditions]}"
                                if self.conditions else ""))

    def encode(self, df, unknown="error", where=None, encoder=False):
        """X (N, D) float64 of the model's data columns (NaN: missing), in its order.

        encoder=True gives what the encoder reads: numbers clipped to their training
        range, so that an absurd cell (1,000 times the range) is read as its column's
        tail and does not throw the code (and every other column's reconstruction) off;
        the likelihood still scores the cell as it is (:meth:`TabularVAE.score_samples`)."""
        self.check_columns(df, need_conditions=False)
        where = where or row_namer(df)
        X = np.empty((len(df), self.width))
        for j, c in enumerate(self.data):
            s = df[c.name]
            if c.kind == "categorical":
                X[:, j] = c.codes(s, unknown, where)
                continue
            v = c.numbers(s, where)
            bad = np.isinf(v)
            if bad.any():
                raise TableError(f"column {c.name!r}, {where(int(np.flatnonzero(bad)[0]))}: "
                                 f"{float(v[bad][0])!r} is not a finite number")
            if c.kind in COUNT_KINDS:
                bad = ~np.isnan(v) & ((v < 0) | (v != np.floor(v)))
                if bad.any():
                    i = int(np.flatnonzero(bad)[0])
                    raise TableError(f"column {c.name!r}, {where(i)}: {shown(s.iloc[i])} is not a "
                                     f"count (an integer >= 0)")
                if encoder:
                    v = np.clip(v, c.lo, c.hi)
            else:
                base = 0 if c.source == "float" else c.lo
                if encoder:
                    v = np.clip(v, float(c.lo - base), float(c.hi - base))
                ok = ~np.isnan(v)
                v[ok] = c.map.forward(v[ok])
            X[:, j] = v
        for k, group in enumerate(self.heads):
            present = np.stack([df[c.name].notna().to_numpy() for c in group]).astype(
                np.float64)
            h = present[0].copy()
            h[(present != present[0]).any(0)] = np.nan  # some of the group's cells: unscored
            for c in group:  # an unseen category read as missing is not scored as a gap
                if c.modeled:
                    h[np.isnan(X[:, self._index(c)]) & df[c.name].notna().to_numpy()] = np.nan
            X[:, len(self.data) + k] = h
        return X

    def _index(self, col):
        return next(j for j, c in enumerate(self.data) if c is col)

    def encode_conditions(self, df, where=None):
        """The condition matrix (N, C) float64: one-hot categorical conditions,
        standardized numeric ones; a missing, infinite or unseen condition is an error
        naming the column and the row."""
        if not self.conditions:
            return None
        self.check_columns(df, need_data=False)
        where = where or row_namer(df)
        parts = []
        for c in self.conditions:
            s = df[c.name]
            miss = s.isna().to_numpy()
            if miss.any():
                raise TableError(f"condition column {c.name!r}, "
                                 f"{where(int(np.flatnonzero(miss)[0]))}: a missing value; "
                                 f"every row needs its conditions")
            if c.kind == "categorical":
                codes = c.codes(s, where=where).astype(np.int64)
                parts.append(np.eye(len(c.categories))[codes])
                continue
            v = c.numbers(s, where)
            bad = ~np.isfinite(v)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise TableError(f"condition column {c.name!r}, {where(i)}: {shown(s.iloc[i])} "
                                 f"is not a finite number")
            parts.append((v / (c.std or 1.0) - c.mean / (c.std or 1.0))[:, None])
        return np.concatenate(parts, axis=1)

    # ---------------------------------------------------------------- tables out
    def cells(self, values, rng, mode="sample", free=None):
        """Every column's cells from the model's values (N, D) float64 (draws, or means
        with ``mode`` "mean"): {label: (store, missing mask or None)} for the data columns
        (:meth:`Column.cells`).  ``mode``: "sample" (observed heads say which cells are
        missing; samples clipped to the protected ranges; rare values written RARE),
        "mean" (as sample, a cell missing where its head's probability is below 1/2) or
        "impute" (no gaps; the training ranges; rare values redrawn).  ``free``: a
        :class:`~fastvae.tabular.free.FreeDraws` for the columns the model does not hold
        (None: they are left out)."""
        N = values.shape[0]
        out = {}
        cmode = "impute" if mode == "impute" else "sample"
        for j, c in enumerate(self.data):
            out[c.name] = (c.cells(values[:, j], rng, cmode), None)
        if mode != "impute":
            for k, group in enumerate(self.heads):
                gap = values[:, len(self.data) + k] < 0.5
                for c in group:
                    out[c.name] = (out[c.name][0] if c.modeled else None, gap)
        if free is not None:
            for c in self.free:
                store, gap = free.draw(c, N, rng)
                head = out.get(c.name, (None, None))[1]
                out[c.name] = (store, gap if head is None else head)
        return out

    def frame(self, cells, cond_frame=None, index=None):
        """The DataFrame of :meth:`cells`' output, with the condition columns from
        ``cond_frame``, in the training table's column order."""
        pd = pandas_module()
        cols = {}
        for c in self.columns:
            if c.name in cells:
                store, gap = cells[c.name]
                cols[c.name] = c.series(store, gap)
        for c in self.conditions:
            if cond_frame is not None:
                cols[c.name] = cond_frame[c.name].reset_index(drop=True)
        out = pd.DataFrame({n: cols[n] for n in self.order if n in cols})
        if index is not None:
            out.index = index
        return out

    # ---------------------------------------------------------------- files
    def config(self):
        return {"version": PLAIN_VERSION, "columns": [c.config() for c in self.columns],
                "conditions": [c.config() for c in self.conditions], "order": self.order,
                "salt": None if self.salt is None else self.salt.hex(),
                "joint": None if self.joint is None else self.joint.config()}

    @classmethod
    def from_config(cls, d):
        if d.get("version") is None:
            from .legacy import schema_v1
            d = schema_v1(d)
        if d["version"] > VERSION:
            raise TableError(f"this table model's schema is version {d['version']}; this "
                             f"fastvae reads up to {VERSION}: upgrade fastvae")
        salt, joint = d.get("salt"), d.get("joint")  # (no joint: written before it was kept)
        return cls([Column.from_config(c) for c in d["columns"]],
                   [Column.from_config(c) for c in d["conditions"]], d["order"],
                   None if salt is None else bytes.fromhex(salt),
                   None if joint is None else ConditionJoint.from_config(joint))

    def __repr__(self):
        kinds = {}
        for c in self.columns:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        s = ", ".join(f"{n} {k}" for k, n in kinds.items())
        gaps = f"; {len(self.heads)} with gaps" if self.heads else ""
        cond = f"; conditions {[c.name for c in self.conditions]}" if self.conditions else ""
        return f"Schema({s}{gaps}{cond})"


def infer(df, types=None, conditions=(), numeric="quantile", where=None, salt=None):
    """The :class:`Schema` of DataFrame ``df``: ``types`` maps column labels to a type of
    :data:`TYPES` (overriding inference), ``conditions`` names the condition columns,
    ``numeric`` picks the numeric map ("quantile" or "standard"); ``where`` names a row
    in errors (default: its index label); ``salt`` keys the hashes an id column keeps of
    its training values (default: random)."""
    if numeric not in MAPS:
        raise ValueError(f"numeric must be one of {sorted(MAPS)}, got {numeric!r}")
    labels = check_labels(df.columns)
    types = dict(types or {})
    for k, v in types.items():
        if k not in labels:
            raise TableError(f"types names column {k!r}, which the table does not have "
                             f"(its columns: {labels})")
        if v not in TYPES:
            raise TableError(f"column {k!r}: unknown type {v!r}; choose from "
                             f"{', '.join(sorted(set(TYPES)))}")
    conditions = [conditions] if isinstance(conditions, (str, int)) else list(conditions or ())
    for c in conditions:
        if c not in labels:
            raise TableError(f"condition column {c!r} is not in the table (its columns: "
                             f"{labels})")
        if str(types.get(c, "")).lower() in ("ignore", "id"):
            raise TableError(f"column {c!r} is a condition and typed {types[c]!r}: a "
                             f"condition is read by the model; drop one of the two")
    if len(df) < 2:
        raise TableError(f"the table has {len(df)} row(s); a model needs at least 2")
    salt = os.urandom(16) if salt is None else salt
    where = where or row_namer(df)
    data, conds, masks, cond_cells = [], [], {}, {}
    for pos, n in enumerate(labels):
        s = df.iloc[:, pos]
        if n in conditions:
            conds.append(make_column(n, s, types.get(n), "condition", numeric, salt, where))
            cond_cells[n] = s.reset_index(drop=True)
        else:
            col = make_column(n, s, types.get(n), "data", numeric, salt, where)
            if col.gaps:  # columns whose gaps fall on the same rows share a head
                key = np.packbits(s.isna().to_numpy()).tobytes()
                col.gap_group = masks.setdefault(key, len(masks))
            data.append(col)
    data = [_unrelated_ids(c, df, labels, data, numeric, salt, where) for c in data]
    if not data:
        raise TableError("the table has no columns" + (
            f" besides its conditions ({', '.join(map(repr, conditions))})"
            if conditions else ""))
    if not any(c.modeled for c in data) and not any(c.gaps for c in data):
        raise TableError("no column is left to model: every column is "
                         + ("ignored, a condition, " if types or conditions else "")
                         + "constant, empty, an identifier or rare values only ("
                         + ", ".join(f"{c.name!r}: {_what(c)}" for c in data[:10]) + ")")
    joint = None
    if len(conds) > 1:  # (one condition drawn alone is its own marginal)
        joint = ConditionJoint.fit(conds, pandas_module().DataFrame(cond_cells))
    return Schema(data, conds, labels, salt, joint)


__all__ = ["Schema", "TableError", "infer", "row_namer", "TYPES", "VERSION"]


def _unrelated_ids(col, df, labels, data, numeric, salt, where):
    """``col``, or when it is an enumeration of the rows (kinds: integers 0..n-1, 1..n or
    dense record ids) whose ranks no other number's follow (by ENUM_RELATED), the
    identifier it then is: a row index of shuffled rows, not a rank beside its score."""
    if not getattr(col, "enumeration", False):
        return col
    pd = pandas_module()
    rows = np.random.default_rng(0).permutation(len(df))[:5000]
    mine = df.iloc[rows, labels.index(col.name)]
    mine = pd.to_numeric(mine, errors="coerce").astype(np.float64).rank()
    for c in data:
        if c is col or not (c.source in ("int", "float") or c.is_time):
            continue
        other = df.iloc[rows, labels.index(c.name)]
        if c.is_time and c.source != "datetext":
            other = pd.to_datetime(other, errors="coerce", utc=True).astype("int64").where(
                other.notna().to_numpy())
        other = pd.to_numeric(other, errors="coerce").astype(np.float64)
        both = mine.notna().to_numpy() & other.notna().to_numpy()
        if both.sum() > 2 and abs(np.corrcoef(mine[both], other[both].rank())[0, 1]) >= \
                ENUM_RELATED:
            return col
    out = make_column(col.name, df.iloc[:, labels.index(col.name)], "id", "data", numeric,
                      salt, where)
    out.gap_group = col.gap_group
    return out


def _what(col):
    """What an unmodelled column is, in a message's words."""
    if col.kind == "constant" and col.value == RARE and col.source in ("object", "mixed"):
        return f"every value in fewer than {RARE_MIN} rows (written as {RARE!r})"
    if getattr(col, "withheld", False):
        return (f"fewer than {2 * RARE_MIN} values, or one in fewer than {RARE_MIN} rows "
                f"(written back as missing cells)")
    if col.kind == "constant" and col.missing_share == 1.0:
        return "empty"
    return "identifier" if col.kind == "id" else col.kind
