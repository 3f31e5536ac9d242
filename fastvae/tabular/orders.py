"""Orderings that hold on every training row, kept in samples: column A <= column B.

A breach starts before it ends, a car's city mileage is below its combined one and that
below its highway one, a team's earned runs are at most the runs it allowed.  The decoder
draws A and B from the same code, each with noise of its own, so a sampled row can break
such an order: on tables nobody had used (a helper's sweep of 20, before this module) 52
of 142 sampled breaches ended before they started.

An *order* (A, B): two modelled numeric columns whose cells are kept alike (both integers
of one signedness, both floats, both instants in one zone or both durations), with
A <= B on every training row where both are present, and on rows enough that chance
cannot explain it: ``p ** n`` below :data:`ALPHA`, where p is the chance that independent
draws of the two columns' training values keep the order and n the rows with both
(columns whose ranges do not overlap have p = 1: no draw can break them).  Two columns
equal on every row are no order (a value rule's business).

In a sample, a row where A > B gets the two cells swapped, each value as the other column
holds it (its own rounding, discrete values and sample range: a float of 2 decimals moved
into a column of 1 is rounded), where that keeps A <= B, over the orders again until none
swaps anything (at most :func:`passes`).  The values are the decoder's own draws, moved;
a row whose values the other column cannot hold in order stays as drawn.  On Kershaw's
pitches (3,402 rows) EndSpeed <= StartSpeed broke on 76 sampled rows, and on none after.
After training, an order that the decoder's own draws break on more than
:data:`MAX_BROKEN` of the rows is dropped (:func:`kept`): swapping that many rows would
pull the two columns' distributions apart, the smaller draws all to A (a start and an end
a few days apart over a year, drawn with noise wider than the gap: broken on 38% of rows,
and the swap shifted both columns by a Kolmogorov-Smirnov gap of 0.05); such a pair stays
as the decoder draws it.
A column that a rule writes (:mod:`~fastvae.tabular.rules`) takes no part, as a
swap would break the rule; the orders are applied before the rules, which read the swapped
cells.  Numbers modelled as categories (a column of a few integer values) take no part.
Saved with the model as ``orders``: [[A, B], ...] (a model saved before them has none).
"""
from __future__ import annotations

import numpy as np

from .cells import SEARCH_ROWS, search_sample, written
from .column import pandas_module
from .values import int_offsets

#: an order must be this unlikely to hold by chance (the rules' level)
ALPHA = 1e-4
#: the most columns whose pairs are searched (those with the most cells first)
MAX_COLUMNS = 200
#: an order is kept only where the trained decoder's own draws break it on at most this
#: share of rows (measured on CHECK_ROWS sampled rows): swapping more would pull the two
#: columns' distributions apart (the smaller draws all to A)
MAX_BROKEN, CHECK_ROWS = 0.05, 4096


def _alike(c):
    """The key under which two columns' cells compare and can be swapped: equal keys,
    equal stores (a time's zone, an instant or a duration)."""
    return (c.store(), c.signed is not False, c.tz,
            ("duration" if c.source == "timedelta" else "instant") if c.is_time else None)


def eligible(c):
    """Whether column ``c`` can take part in an order."""
    return c.kind == "numeric" and c.modeled


def _held(c, store):
    """``store`` (M,) (another column's cells) as column c holds them: its own rounding,
    discrete values and sample range."""
    if c.is_time or c.source == "int":  # (offsets from lo: below it too, unsigned or not)
        raw = int_offsets(store, int(c.lo), c.is_time or c.signed is not False)
    else:
        raw = store
    return c.finish(raw)


def _values(c, s):
    """Column c's cells of Series s as (values (N,), present (N,) bool): int64 nanoseconds
    for a time, the exact integers of an integer column, else float64."""
    miss = s.isna().to_numpy()
    if c.is_time:
        return c.nanoseconds(s, miss, None), ~miss
    if c.source == "int":
        return c.integers(s, miss, None), ~miss
    return pandas_module().to_numeric(s, errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan), ~miss


def _chance(a, b):
    """The chance that a draw of a's values is at most an independent draw of b's (both
    sorted)."""
    return float(np.mean(1.0 - np.searchsorted(b, a, side="left") / b.size))


def find(df, schema, rules=()):
    """The orders [[A, B], ...] of training table ``df`` (see the module docstring), given
    the model's ``rules`` (no column they write takes part)."""
    taken = written(rules)
    cols = [c for c in schema.data if eligible(c) and c.name not in taken]
    if len(cols) < 2:
        return []
    sample = search_sample(df, SEARCH_ROWS)
    vals = {c.name: _values(c, sample[c.name]) for c in cols}
    cols = sorted(cols, key=lambda c: -int(vals[c.name][1].sum()))[:MAX_COLUMNS]
    ranked = {c.name: np.sort(vals[c.name][0][vals[c.name][1]]) for c in cols}
    out = []
    for i, ca in enumerate(cols):
        for cb in cols:
            if cb is ca or _alike(ca) != _alike(cb):
                continue
            (a, pa), (b, pb) = vals[ca.name], vals[cb.name]
            both = pa & pb
            n = int(both.sum())
            if n == 0 or np.any(a[both] > b[both]) or np.all(a[both] == b[both]):
                continue
            p = _chance(ranked[ca.name], ranked[cb.name])
            if not 0.0 < p < 1.0 or n * np.log(p) >= np.log(ALPHA):
                continue
            if len(df) > len(sample):  # (broken on a row the search left out)
                fa, fpa = _values(ca, df[ca.name])
                fb, fpb = _values(cb, df[cb.name])
                if np.any(fa[fpa & fpb] > fb[fpa & fpb]):
                    continue
            out.append([ca.name, cb.name])
    return out


def kept(tv, seed):
    """The orders of TabularVAE ``tv`` (``orders_``) that its decoder's draws break on at
    most MAX_BROKEN of CHECK_ROWS rows sampled without them (``seed``: an int)."""
    from .sampling import check_rows
    found = list(tv.orders_ or ())
    if not found:
        return []
    frame = check_rows(tv, CHECK_ROWS, seed, 0x0DE5, orders_=[])
    out = []
    for a, b in found:
        both = frame[a].notna() & frame[b].notna()
        if both.any() and float((frame.loc[both, a] > frame.loc[both, b]).mean()) <= MAX_BROKEN:
            out.append([a, b])
    return out


def passes(orders):
    """The most passes :func:`apply` makes over ``orders``: m (m - 1) / 2 + 1 for their m
    columns, the most inversions a row's values can have, plus one (a plain swap removes
    one inversion; a value that the other column rounds or clips can make another)."""
    m = len({c for o in orders for c in o})
    return m * (m - 1) // 2 + 1


def apply(cells, orders, schema):
    """Swap, in ``cells`` ({name: (store, gap mask or None)}, :meth:`Schema.cells`' output,
    in place), the two cells of each row where an order's A is above its B, each value as
    the other column holds it, where that keeps the order; passes over the orders until
    none swaps anything, at most :func:`passes`; returns cells.  ``schema``: the model's,
    whose columns say what they hold."""
    if not orders:
        return cells
    cols = {c.name: c for c in schema.data}
    for _ in range(passes(orders)):
        moved = False
        for a, b in orders:
            if a not in cells or b not in cells or a not in cols or b not in cols or \
                    cells[a][0] is None or cells[b][0] is None:
                continue
            (sa, ga), (sb, gb) = cells[a], cells[b]
            bad = sa > sb
            if ga is not None:
                bad &= ~ga
            if gb is not None:
                bad &= ~gb
            rows = np.flatnonzero(bad)
            if not rows.size:
                continue
            na, nb = _held(cols[a], sb[rows]), _held(cols[b], sa[rows])
            ok = na <= nb
            if ok.any():
                sa[rows[ok]], sb[rows[ok]] = na[ok], nb[ok]
                moved = True
        if not moved:
            break
    return cells


__all__ = ["find", "apply", "kept", "passes", "eligible", "ALPHA", "MAX_BROKEN", "CHECK_ROWS"]
