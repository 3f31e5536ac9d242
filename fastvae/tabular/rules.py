"""Deterministic relations between columns, kept exactly in samples.

Tables hold facts that hold on every row: a flight's scheduled minute is its scheduled
time's last two digits; every customer without internet service has "No internet service"
in each of its six add-on columns; an airport pair has one distance.  A VAE's decoder
draws each cell of a row on its own given the row's code, so such a relation comes back
nearly, not exactly, and a discriminator finds the rows where it breaks.

:func:`find` reads the training table for *value rules* ``A = a  ->  B = b``: among the
rows where column A holds a, column B always holds b (a missing cell counts as a value).
A rule is kept when a holds in at least :data:`~fastvae.tabular.column.RARE_MIN` rows and
the chance of so many rows agreeing on b by accident, P(B = b) ** count(A = a) under B's
own frequencies, is below :data:`ALPHA`.  Rules go from a column with at least as many
values as the column they set (a determinant has more values than what it determines;
ties in table order), and are applied in that order (:func:`apply`), so every column is
final before it sets another: no cycle, and a chain A -> B -> C holds.

Rules read and write the cells as the table holds them (labels, strings, numbers, times
as text) and are saved with the model as JSON.  Only modelled and constant columns take
part (identifiers, ignored and condition columns do not), and the search skips columns of
more than :data:`MAX_VALUES` values as determinants.
"""
from __future__ import annotations

import numpy as np

from .column import RARE_MIN, pandas_module, plain

#: a rule must be this unlikely to hold by chance (B's frequencies, independence)
ALPHA = 1e-4
#: columns with more distinct values than this are not searched as determinants
MAX_VALUES = 5000
#: rows the search reads (a rule found on them is then checked on every row)
SEARCH_ROWS = 20000


def _json(v):
    """A cell as a JSON value, or raise TypeError (NaN/None/NaT: None)."""
    if v is None:
        return None
    try:
        pd = pandas_module()
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    v = plain(v)
    if isinstance(v, (str, bool, int, float)):
        return v
    raise TypeError(type(v).__name__)


def _eligible(col):
    """Whether column ``col`` may take part in rules (cells that JSON writes exactly)."""
    return (col.modeled or col.kind == "constant") and col.source in (
        "object", "bool", "int", "float", "category", "datetext", "mixed")


def find(df, schema):
    """The value rules of training table ``df`` (see the module docstring): a list of
    [A, B, [[a, b], ...]] in the order they are applied."""
    cols = [c for c in schema.columns if _eligible(c)]
    if len(cols) < 2:
        return []
    sample = df if len(df) <= SEARCH_ROWS else df.sample(SEARCH_ROWS, random_state=0)
    card = {c.name: int(sample[c.name].nunique(dropna=False)) for c in cols}
    pos = {c.name: i for i, c in enumerate(schema.columns)}
    order = sorted((c.name for c in cols), key=lambda n: (-card[n], pos[n]))
    rank = {n: i for i, n in enumerate(order)}
    freq = {n: sample[n].value_counts(normalize=True, dropna=False) for n in order}
    rules = []
    for a in order:
        if card[a] < 2 or card[a] > MAX_VALUES:
            continue
        targets = [b for b in order if rank[b] > rank[a] and card[b] > 1]
        if not targets:
            continue
        g = sample.groupby(sample[a].astype(object), dropna=True, sort=False)
        n = g.size()
        one = g[targets].nunique(dropna=False) == 1
        first = g[targets].first()
        for b in targets:
            hit = one.index[one[b].to_numpy() & (n.to_numpy() >= RARE_MIN)]
            pairs = []
            for av in hit:
                bv = first.at[av, b]
                p = _frequency(freq[b], bv)
                if p ** int(n.at[av]) >= ALPHA:
                    continue
                try:
                    pairs.append([_json(av), _json(bv)])
                except TypeError:
                    continue
            pairs = _verified(df, a, b, pairs) if len(df) > len(sample) else pairs
            if pairs:
                rules.append([a, b, pairs])
    return _ordered(rules, rank)


def _frequency(freq, value):
    pd = pandas_module()
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return float(freq[freq.index.isna()].sum())
    return float(freq.get(value, 0.0))


def _verified(df, a, b, pairs):
    """The pairs of a rule found on a sample that hold on every row of ``df``."""
    pd = pandas_module()
    if not pairs:
        return pairs
    g = df[b].astype(object).groupby(df[a].astype(object), dropna=True, sort=False)
    one, first = g.nunique(dropna=False) == 1, g.first()
    keep = []
    for av, bv in pairs:
        if av in one.index and one.at[av]:
            fv = first.at[av]
            if (bv is None and pd.isna(fv)) or (bv is not None and fv == bv):
                keep.append([av, bv])
    return keep


def _ordered(rules, rank):
    """Rules sorted by the rank of the column they set, then of the one they read."""
    return sorted(rules, key=lambda r: (rank[r[1]], rank[r[0]]))


def apply(frame, rules):
    """Set, in DataFrame ``frame`` (a sample, in place), each rule's column B to b where
    its column A holds a; a cell already set by an earlier rule keeps that value."""
    pd = pandas_module()
    done = {}
    for a, b, pairs in rules:
        if a not in frame or b not in frame:
            continue
        keys = pd.Series([p[0] for p in pairs], dtype=object)
        vals = [p[1] for p in pairs]
        src = frame[a].astype(object)
        idx = pd.Index(keys).get_indexer(src)
        hit = idx >= 0
        if b in done:
            hit &= ~done[b]
        if not hit.any():
            continue
        new = np.array(vals, dtype=object)[idx[hit]]
        col = frame[b]
        if any(v is None for v in new):
            miss = np.array([v is None for v in new])
            where = np.flatnonzero(hit)
            col = col.copy()
            col.iloc[where[miss]] = None
            if (~miss).any():
                col.iloc[where[~miss]] = _cast(new[~miss], col)
        else:
            col = col.copy()
            col.iloc[np.flatnonzero(hit)] = _cast(new, col)
        frame[b] = col
        done[b] = done.get(b, np.zeros(len(frame), bool)) | hit
    return frame


def _cast(values, col):
    """values (object array) in the dtype of Series col, for assignment."""
    pd = pandas_module()
    if isinstance(col.dtype, pd.CategoricalDtype):
        return pd.Categorical(values, dtype=col.dtype)
    try:
        return pd.array(list(values), dtype=col.dtype) if col.dtype != object else values
    except (TypeError, ValueError):
        return values


__all__ = ["find", "apply", "ALPHA", "MAX_VALUES"]
