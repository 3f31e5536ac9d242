"""Labels that a number's interval fixes, kept exactly in samples.

Tables carry flags derived from a number: births14's ``mature`` is "mature mom" exactly
when the mother's age is 35 or more, ``lowbirthweight`` is "low" below 5.5 pounds,
``premie`` is "premie" below 37 weeks.  The value rules (:mod:`~fastvae.tabular.rules`)
catch such a flag only at the number's frequent values (an age in at least RARE_MIN rows),
and never for a continuous number; the decoder draws the flag and the number each on its
own given the code, so about one sample in ten broke births14's weight flag, and a
discriminator finds those rows at once.

An *interval rule* ``X in [c_i, c_{i+1})  ->  Y = y_i``: sorted by a numeric column X,
the rows of a column Y of at most :data:`MAX_LABELS` values (a missing cell counts as a
value) fall into at most :data:`MAX_RUNS` runs of one label each, every run of at least
RARE_MIN rows, with no value of X in two runs, but for :data:`SLACK` of the rows.  The
cut between two runs is the first X of the later one (``x >= c_i``: a threshold is mostly
a round number the data holds, births14's 35 years, 37 weeks and 5.50 pounds; a midpoint
would fall on a value between two of the data's, 5.49 between 5.48 and 5.50).  A random
labelling gives such runs by chance with probability below 1 / C(20, 5) (6e-5, under
ALPHA) on the fewest rows the rule allows (4 RARE_MIN of X present).  The rows where X is
missing take no part, and a sample's cell of Y is set only where its X is present.

Interval rules are applied before the value and key rules (:func:`apply`), so a label
they set is final before it sets another column; a column that another rule sets is
never their X.  Saved with the model as ``[{"interval": X}, Y, [[None, y_0], [c_1, y_1],
...]]`` in the list of rules.
"""
from __future__ import annotations

import numpy as np

from .cells import SEARCH_ROWS, eligible, json_cell, put, search_sample
from .column import RARE_MIN, pandas_module

#: a rule's label column has at most this many values, and its X at most this many runs
MAX_LABELS, MAX_RUNS = 10, 10
#: the share of the rows that may break a rule (rounded down: none below 500 rows): a
#: number on the threshold written with two labels (births14: one of four weights of 5.50
#: is "low")
SLACK = 0.002
#: the search reads at most this many cells ((X, Y) pairs times sample rows)
SEARCH_CELLS = 2 * 10 ** 8


def is_interval(rule):
    """Whether ``rule`` (an entry of a model's rules) is an interval rule."""
    return isinstance(rule[0], dict) and "interval" in rule[0]


def find(df, schema, rules=(), fixed=()):
    """The interval rules of training table ``df`` (see the module docstring), none with an
    X that one of ``rules`` (the value and key rules found) sets, nor a Y in ``fixed``
    (the columns that rules applied before them set: components')."""
    pd = pandas_module()
    cols = [c for c in schema.columns if eligible(c)]
    set_by = {r[1] for r in rules}
    xs = [c.name for c in cols if c.modeled and c.source in ("int", "float")
          and c.name not in set_by]  # (numbers of few values too: their rare ones)
    if not xs:
        return []
    sample = search_sample(df, SEARCH_ROWS)
    ys = []
    for c in cols:
        if c.name in fixed:
            continue
        code, values = pd.factorize(sample[c.name], use_na_sentinel=False)
        if 2 <= len(values) <= MAX_LABELS:
            ys.append((c.name, code))
    out, cells = [], 0
    for x in xs:
        xv, order = _sorted(sample[x])
        if order.size < 4 * RARE_MIN:
            continue
        starts = np.flatnonzero(np.diff(xv, prepend=np.nan) != 0)  # each value of X's rows
        for y, code in ys:
            if y == x:
                continue
            cells += order.size
            if cells > SEARCH_CELLS:
                return out
            if _runs(xv, starts, code[order]) is None:
                continue
            rule = _rule(df, x, y)  # (checked on every row when the search read a sample)
            if rule is not None:
                out.append([{"interval": x}, y, rule])
    return out


def _sorted(col):
    """A column's present values, sorted (float64), and their rows."""
    pd = pandas_module()
    v = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    ok = np.flatnonzero(~np.isnan(v))
    order = ok[np.argsort(v[ok], kind="stable")]
    return v[order], order


def _runs(xv, starts, yc):
    """The runs of one label of labels ``yc`` (int codes) along X sorted ``xv`` (``starts``:
    the first row of each value of X), as [(first X, code)], or None when they are
    no interval rule's.  Each value of X takes its most common label; the rows of another
    (mislabelled), and the runs under RARE_MIN rows, which join their neighbours, may be
    at most SLACK of the rows; then 2 to MAX_RUNS runs must be left."""
    n = yc.size
    allowed = int(SLACK * n)
    # (a row off its run's label makes at most two changes of label along X: most pairs
    # of a table are turned away by this count alone)
    if np.count_nonzero(yc[1:] != yc[:-1]) > MAX_RUNS - 1 + 2 * allowed:
        return None
    ends = np.append(starts[1:], n)
    nc = int(yc.max()) + 1
    grp = np.repeat(np.arange(starts.size), ends - starts)
    count = np.bincount(grp * nc + yc, minlength=starts.size * nc).reshape(-1, nc)
    lab = count.argmax(1)
    off = n - int(count.max(1).sum())
    if off > allowed:
        return None
    # runs of one label over the values of X: [label, rows, first value]; a
    # run dropped below spends a row of the slack at least and joins at most two: more runs
    # than MAX_RUNS + 2 SLACK rows can leave none
    first = np.flatnonzero(np.diff(lab, prepend=-1))
    if first.size > MAX_RUNS + 2 * allowed:
        return None
    rows = np.add.reduceat(ends - starts, first)
    runs = [[int(lab[f]), int(r), int(f)] for f, r in zip(first, rows)]
    while len(runs) > 1:
        i = min(range(len(runs)), key=lambda k: runs[k][1])
        if runs[i][1] >= RARE_MIN:
            break
        off += runs[i][1]
        if off > allowed:
            return None
        del runs[i]  # (its rows go to the runs around it; equal labels join)
        if 0 < i < len(runs) and runs[i - 1][0] == runs[i][0]:
            runs[i - 1][1] += runs[i][1]
            del runs[i]
    if not 2 <= len(runs) <= MAX_RUNS or runs[0][1] < RARE_MIN:
        return None
    return [(float(xv[starts[r[2]]]), r[0]) for r in runs]


def _rule(df, x, y):
    """The rule of X and Y on the rows of ``df``: [[None, y_0], [c_1, y_1], ...], or None
    (no rule there, or a label that is not a JSON value)."""
    pd = pandas_module()
    xv, order = _sorted(df[x])
    if order.size < 4 * RARE_MIN:
        return None
    code, values = pd.factorize(df[y], use_na_sentinel=False)
    runs = _runs(xv, np.flatnonzero(np.diff(xv, prepend=np.nan) != 0), code[order])
    if runs is None:
        return None
    out = []
    for i, (first, c) in enumerate(runs):
        try:
            lab = json_cell(values[c])
        except TypeError:
            return None
        out.append([None if i == 0 else first, lab])
    return out


def apply(frame, rule):
    """Set, in DataFrame ``frame`` (a sample, in place), interval rule ``rule``'s column Y
    from its column X's interval where X is present; returns the rows set (bool)."""
    pd = pandas_module()
    x, y, pairs = rule[0]["interval"], rule[1], rule[2]
    if x not in frame or y not in frame:
        return np.zeros(len(frame), bool)
    v = pd.to_numeric(frame[x], errors="coerce").to_numpy(np.float64)
    hit = ~np.isnan(v)
    idx = np.searchsorted(np.array([p[0] for p in pairs[1:]], np.float64), v[hit],
                          side="right")
    labels = np.array([p[1] for p in pairs], dtype=object)
    frame[y] = put(frame[y], np.flatnonzero(hit), labels[idx])
    return hit


__all__ = ["find", "apply", "is_interval", "MAX_LABELS", "MAX_RUNS", "SLACK", "SEARCH_CELLS"]
