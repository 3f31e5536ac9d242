"""Cells that a value of another column says are present, kept present in samples.

dplyr's storms has a hurricane ``category`` exactly when ``status`` is "hurricane": the
other eight statuses have none.  The value rules (:mod:`~fastvae.tabular.rules`) keep the
missing ones (a missing cell is a value: status "tropical storm" -> category missing), but
a hurricane's category is no one value, so no rule holds it; the observed head draws the
gap from the row's code, and 11% of the sampled hurricanes came back without a category.

A *presence rule* ``A = a  ->  the columns G are present``: G is a group of columns that
are missing on the same training rows (they share an observed head, see
:mod:`~fastvae.tabular.schema`), and on every training row where column A holds a, they
are present.  It is kept when a holds in at least RARE_MIN rows and the chance of so many
rows being present by accident, P(present) ** count(A = a), is below
:data:`~fastvae.tabular.rules.ALPHA`.  A sample's row where A holds a then gets G's cells
that the head left out: the decoder's own draws of them, which it made for every row.

No other rule reads G's columns.  Presence rules are applied last (:func:`apply`), when A
is final, and fill no cell another rule has set.  Saved with the model as ``[{"presence": A}, [G's columns],
[a, ...]]`` in the list of rules.
"""
from __future__ import annotations

import numpy as np

from .cells import SEARCH_ROWS, eligible, json_cell, put, search_sample
from .column import RARE_MIN, pandas_module

#: a rule must be this unlikely to hold by chance (the value rules' level)
ALPHA = 1e-4


def is_presence(rule):
    """Whether ``rule`` (an entry of a model's rules) is a presence rule."""
    return isinstance(rule[0], dict) and "presence" in rule[0]


def find(df, schema, rules=()):
    """The presence rules of training table ``df`` (see the module docstring), given the
    model's other ``rules`` (no column they read is in a G)."""
    pd = pandas_module()
    reads = set()
    for r in rules:
        a = r[0]
        if isinstance(a, dict):
            a = a.get("interval", a.get("component"))
        reads.update(a if isinstance(a, list) else [a])
    groups = [[c.name for c in g] for g in schema.heads
              if all(c.modeled for c in g) and not reads.intersection(c.name for c in g)]
    if not groups:
        return []
    sample = search_sample(df, SEARCH_ROWS)
    dets = [c.name for c in schema.columns if eligible(c)]
    out = []
    for g in groups:
        present = sample[g[0]].notna().to_numpy()
        p = float(present.mean())
        if p >= 1.0 or p <= 0.0:
            continue
        for a in dets:
            if a in g:
                continue
            code, values = pd.factorize(sample[a])  # (a missing cell of A: no rule's)
            ok = code >= 0
            n = np.bincount(code[ok], minlength=len(values))
            seen = np.bincount(code[ok], weights=present[ok], minlength=len(values))
            hit = np.flatnonzero((n >= RARE_MIN) & (seen == n) & (p ** n < ALPHA))
            keep = []
            for k in hit:
                v = values[k]
                if len(df) > len(sample) and not df[g[0]][df[a] == v].notna().all():
                    continue  # (broken on a row the sample left out)
                try:
                    keep.append(json_cell(v))
                except TypeError:
                    continue
            if keep:
                out.append([{"presence": a}, list(g), keep])
    return out


def apply(frame, rule, drawn, done=None):
    """Fill, in DataFrame ``frame`` (a sample, in place), presence rule ``rule``'s columns
    where its column A holds one of its values and they are missing, from ``drawn`` (name
    -> the decoder's draws of the column for every row, a Series), but on the rows of
    ``done`` (bool, the cells other rules set); returns the rows filled (bool)."""
    pd = pandas_module()
    a, group, values = rule[0]["presence"], rule[1], rule[2]
    if a not in frame or any(c not in frame for c in group):
        return np.zeros(len(frame), bool)
    hit = pd.Index(pd.Series(values, dtype=object)).get_indexer(
        frame[a].astype(object)) >= 0
    hit &= frame[group[0]].isna().to_numpy()
    if done is not None:
        hit &= ~done
    rows = np.flatnonzero(hit)
    if rows.size:
        for c in group:
            frame[c] = put(frame[c], rows, drawn(c).iloc[rows].astype(object).to_numpy())
    return hit


__all__ = ["is_presence", "find", "apply"]
