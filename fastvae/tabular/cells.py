"""What the rules (:mod:`~fastvae.tabular.rules`, :mod:`~fastvae.tabular.intervals`) read
and write: the columns that take part, their cells as JSON values, and values cast back to
a column's dtype."""
from __future__ import annotations

import numpy as np

from .column import pandas_module, plain

#: rows a rule search reads (a rule found on them is then checked on every row)
SEARCH_ROWS = 20000


def search_sample(df, rows=SEARCH_ROWS):
    """The rows a rule search reads: the table, or a seeded ``rows`` of its rows."""
    return df if len(df) <= rows else df.sample(rows, random_state=0)


def written(rules):
    """The names of the columns that ``rules`` (a model's list) write cells of: each rule's
    B (a presence rule's group)."""
    out = set()
    for r in rules or ():
        out.update(r[1] if isinstance(r[1], list) else [r[1]])
    return out


def json_cell(v):
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


def eligible(col):
    """Whether column ``col`` may take part in rules (cells that JSON writes exactly)."""
    return (col.modeled or col.kind == "constant") and col.source in (
        "object", "bool", "int", "float", "category", "datetext", "mixed")


def cast_like(values, col):
    """values (object array) in the dtype of Series col, for assignment."""
    pd = pandas_module()
    if isinstance(col.dtype, pd.CategoricalDtype):
        return pd.Categorical(values, dtype=col.dtype)
    try:
        return pd.array(list(values), dtype=col.dtype) if col.dtype != object else values
    except (TypeError, ValueError):
        return values


def put(col, rows, values):
    """Series ``col`` (a copy) with its rows at positions ``rows`` set to ``values`` (an
    object array of JSON cells: None is a missing cell), in the column's dtype."""
    col = col.copy()
    miss = np.array([v is None for v in values], dtype=bool)
    if miss.any():
        col.iloc[rows[miss]] = None
    if (~miss).any():
        col.iloc[rows[~miss]] = cast_like(values[~miss], col)
    return col


__all__ = ["SEARCH_ROWS", "search_sample", "written", "eligible", "json_cell", "cast_like",
           "put"]
