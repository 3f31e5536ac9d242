"""Gaps that imply gaps, kept in samples: where column A is missing, column B is too.

A survey skips its follow-up questions when the first is unanswered (HELPmiss: no
``anysub`` answer, no ``daysanysub``); a season without a league winner has no world
series winner either.  Each group of columns with the same gaps has its own observed
head (:mod:`~fastvae.tabular.schema`), drawn from the row's code with noise of its own, so
a sampled row can have B without A: on tables nobody had used (a helper's sweep of 20,
before this module) 8 had such rows, HELPmiss 96 of its 220 sampled rows without anysub.

An *implication* (G, H) between two heads' groups: H is missing on every training row
where G is (G's gaps a strict subset of H's), on rows enough that chance cannot explain
it: P(H missing) ** (rows with G missing) below :data:`ALPHA`, and G missing in at least
RARE_MIN rows.  In a sample, H's cells are made missing wherever G's are, G's own gaps
first when G is implied too (a chain: each head's gaps final before they are passed on).
The heads' calibration (:mod:`~fastvae.tabular.calibrate`) fits H's head to H's present
share among the training rows where every head that implies H is present, so the sampled
share of H's gaps stays the table's.  Applied to the heads' draws, before the orders and
the rules (a rule that sets a cell of H afterwards wins).  Saved with the model as
``gaps``: [[G's columns, H's columns], ...] (a model saved before them has none).
"""
from __future__ import annotations

import numpy as np

from .cells import SEARCH_ROWS, search_sample
from .column import RARE_MIN

#: an implication must be this unlikely to hold by chance (the rules' level)
ALPHA = 1e-4


def find(df, schema):
    """The implications [[G, H], ...] (lists of column names) of training table ``df``
    (see the module docstring), ordered so that a group's own gaps are set before they
    are passed on."""
    groups = [[c.name for c in g] for g in schema.heads]
    if len(groups) < 2:
        return []
    sample = search_sample(df, SEARCH_ROWS)
    miss = [sample[g[0]].isna().to_numpy() for g in groups]
    count = [int(m.sum()) for m in miss]
    out = []
    for i, g in enumerate(groups):
        if count[i] < RARE_MIN:
            continue
        for j, h in enumerate(groups):
            if j == i or count[j] <= count[i] or count[j] >= len(sample):
                continue
            if np.any(miss[i] & ~miss[j]):
                continue
            if count[i] * np.log(count[j] / len(sample)) >= np.log(ALPHA):
                continue
            if len(df) > len(sample) and np.any(
                    df[g[0]].isna().to_numpy() & df[h[0]].notna().to_numpy()):
                continue  # (broken on a row the search left out)
            out.append((count[i], i, [list(g), list(h)]))
    return [r for _, _, r in sorted(out, key=lambda t: (t[0], t[1]))]


def apply(cells, implications):
    """Make, in ``cells`` ({name: (store, gap mask or None)}, :meth:`Schema.cells`'
    output, in place), each implication's H missing wherever its G is; returns cells."""
    for g, h in implications or ():
        if any(c not in cells or cells[c][1] is None for c in g + h):
            continue
        gap = cells[h[0]][1] | cells[g[0]][1]
        for c in h:
            cells[c] = (cells[c][0], gap)
    return cells


def implied_by(implications, heads):
    """{index of a head in ``heads`` (lists of column names): the indices of every head
    whose gaps are passed on to it, directly or through others}."""
    pos = {tuple(g): k for k, g in enumerate(heads)}
    direct = {}
    for g, h in implications or ():
        if tuple(g) in pos and tuple(h) in pos:
            direct.setdefault(pos[tuple(h)], set()).add(pos[tuple(g)])
    out = {}
    for k in direct:
        seen, todo = set(), list(direct[k])
        while todo:
            j = todo.pop()
            if j not in seen:
                seen.add(j)
                todo.extend(direct.get(j, ()))
        out[k] = sorted(seen)
    return out


__all__ = ["find", "apply", "implied_by", "ALPHA"]
