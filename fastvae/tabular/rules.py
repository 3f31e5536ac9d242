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
own frequencies, is below :data:`ALPHA`.  Every column is searched as a determinant of
every other.  The rules from a column of at least as many values as the column they set
(ties in table order) are all kept; a rule the other way (a column of few values setting
one of more: every single employee has stock option level 0) is kept unless it would
close a cycle of columns, the rules of more values first (:func:`_acyclic`).  Rules are
applied (:func:`apply`) in an order where every column is final before it sets another:
no cycle, and a chain A -> B -> C holds.

*Key rules* ``(A1, ..., Ak) = (a1, ..., ak)  ->  B = b`` do the same for a column that
is a function of a few others together and of none alone: a flight's timestamp of its
month, day and hour, a fee of a region and a tier, a pizza's price of its name and size.
For each column B, :func:`find` adds, greedily, the column of at most :data:`KEY_VALUES`
values that leaves the fewest rows off their group's most common B, up to
:data:`KEY_COLUMNS` columns, until B is constant in every group but a few rows'
(:data:`KEY_SLACK`).  The rule keeps the groups of at least RARE_MIN rows where B is
constant that pass the chance test above, and only when they hold
at least :data:`KEY_COVER` of the rows (groups of a row or two each would make any column a
function of enough others).  B may also be set by value rules (a pizza name sold in one
size has one price), which come first, and read by them: a value rule from B to a column
of the key (price 20.75 -> size L) is applied before the key rule, reading B as drawn,
and both hold (:func:`_in_order`); a value rule from B that sets a key column by way of
other rules would close a cycle, and keeps the key rule from being made.  Measured on
gt's pizzaplace (20,000 rows): the samples' price was the one of their name and size on
86.6% of rows without the key rule (price was read by value rules), and is on 99.7% with
it (every row whose name and size the table has); dplyr's storms gets (wind, status) ->
category.  The suite's six tables get the same rules as before.  A key rule's columns are no other key rule's B.

Rules read and write the cells as the table holds them (labels, strings, numbers, times
as text) and are saved with the model as JSON.  Only modelled and constant columns take
part (identifiers, ignored and condition columns do not), and the search skips columns of
more than :data:`MAX_VALUES` values as determinants.

The search pits each column against every other, so its work grows with the square of
the columns; it passes over what can hold no rule, and bounds the rest.  A
column with no value in RARE_MIN rows of the search's sample (a continuous one) neither
reads nor sets a value rule, and a determinant's search reads only its rows of such
values; a column whose values of RARE_MIN rows cover under KEY_COVER of the rows sets no
key rule, and a key that takes it is dropped.  None of this changes what is found.  Then
each determinant in turn is searched only if the cells it reads (its rows times the
other columns) fit in what is left of :data:`SEARCH_CELLS`, and key rules are sought
column by column until the keys tried could pass :data:`KEY_TRIES`.  A table of thousands
of few-valued columns keeps the rules of its columns of most values (searched first); the
others, whose search would hold the fit for minutes or hours, are not sought.  A table of
100 columns (of 20,000 sample rows) reaches neither bound, and the same table always
gives the same rules.
"""
from __future__ import annotations

import numpy as np

from . import components, intervals, presence
from .cells import SEARCH_ROWS, eligible, json_cell, put, search_sample
from .column import RARE_MIN, pandas_module

#: a rule must be this unlikely to hold by chance (B's frequencies, independence)
ALPHA = 1e-4
#: columns with more distinct values than this are not searched as determinants
MAX_VALUES = 5000
#: the value rules' search reads at most this many cells of the sample (each determinant's
#: rows of frequent values times the other columns; 100 columns of 20,000 rows take at
#: most 200,000,000): a few seconds
SEARCH_CELLS = 10 ** 9
#: the key rules' search tries at most this many keys (a column added to a key for a
#: column, each a pass over the rows; 100 columns take at most 39,000): seconds on 200 rows,
#: some ten on 20,000
KEY_TRIES = 100000
#: cells of the sample a determinant's search holds at once
CHUNK = 2 ** 22
#: a key rule reads at most KEY_COLUMNS columns of at most KEY_VALUES values each, and its
#: groups must hold at least KEY_COVER of the rows
KEY_COLUMNS, KEY_VALUES, KEY_COVER = 4, 100, 0.5
#: the share of rows a key's groups may leave off their B (the groups where B varies take
#: no part: the hour a daylight-saving change repeats maps to two timestamps)
KEY_SLACK = 0.001


def find(df, schema):
    """The value rules of training table ``df`` (see the module docstring): a list of
    [A, B, [[a, b], ...]] in the order they are applied."""
    cols = [c for c in schema.columns if eligible(c)]
    if len(cols) < 2:
        return []
    sample = search_sample(df, SEARCH_ROWS)
    card = {c.name: int(sample[c.name].nunique(dropna=False)) for c in cols}
    pos = {c.name: i for i, c in enumerate(schema.columns)}
    order = sorted((c.name for c in cols), key=lambda n: (-card[n], pos[n]))
    rank = {n: i for i, n in enumerate(order)}
    freq = _Frequencies(sample)
    rules = _acyclic(_value_rules(df, sample, order, card, freq), rank)
    keys, before = _key_rules(df, order, freq, rules)
    return _in_order(_ordered(rules, _topological(rules, order)), keys, before)


def _value_rules(df, sample, order, card, freq):
    """The value rules [A, B, [[a, b], ...]] of ``df`` found on ``sample`` (see
    :func:`find`), by determinant in ``order``, within :data:`SEARCH_CELLS`."""
    pd = pandas_module()
    N = len(sample)
    # A rule's group holds RARE_MIN rows of one value of A and of one value of B: a column
    # without a value that frequent (a continuous one) neither reads nor sets a rule, and
    # the other values of B may share a code (-1: a group that holds one is no rule's).
    # Codes as groupby's nunique(dropna=False) reads them: a missing cell is a value.
    names, cols, counts = [], [], []
    for n in order:
        if card[n] < 2:
            continue
        code = pd.factorize(sample[n], use_na_sentinel=False)[0]
        count = np.bincount(code)
        often = count >= RARE_MIN
        if often.any():
            names.append(n)
            cols.append(np.where(often, np.cumsum(often) - 1, -1)[code])
            counts.append(count[often])
    if not names:
        return []
    frequent = set(names)
    codes = np.empty((N, len(names)), np.int16 if N < 2 ** 15 else np.int32)
    for j, c in enumerate(cols):
        codes[:, j] = c
    rules, cells, cell, chance = [], 0, {}, {}
    for a in order:  # (its targets: every other column that has a frequent value)
        if card[a] > MAX_VALUES or a not in frequent or len(names) < 2:
            continue
        # groupby's groups of a (its missing cells in none)
        key, keys = pd.factorize(sample[a].astype(object).to_numpy())
        size = np.bincount(key[key >= 0], minlength=len(keys))
        rows = np.flatnonzero(key >= 0)
        rows = rows[size[key[rows]] >= RARE_MIN]
        if rows.size == 0:
            continue
        cost = rows.size * (len(names) - 1)
        if cells + cost > SEARCH_CELLS:
            continue
        cells += cost
        rows = rows[np.argsort(key[rows], kind="stable")]  # groups in order of appearance
        starts = np.flatnonzero(np.diff(key[rows], prepend=-1))
        group, n = key[rows[starts]], size[key[rows[starts]]]
        step = max(1, CHUNK // rows.size)
        for j1 in range(0, len(names), step):
            lo, one = _constant(codes[rows, j1:j1 + step], starts)
            for j in np.flatnonzero(one.any(axis=0)):
                if names[j1 + j] == a:
                    continue
                hit = np.flatnonzero(one[:, j])
                # the chance test on the codes' counts first (with room for rounding),
                # then as it reads the cells
                p = counts[j1 + j][lo[hit, j]] / N
                hit = hit[p ** n[hit] < 2 * ALPHA]
                b, pairs = names[j1 + j], []
                if b not in cell:
                    cell[b] = sample[b].to_numpy(dtype=object)
                for g in hit:
                    av, bv = keys[group[g]], cell[b][rows[starts[g]]]
                    c = (b, int(lo[g, j]))  # (the cells of a code share a frequency)
                    if c not in chance:
                        chance[c] = _frequency(freq[b], bv)
                    if chance[c] ** int(n[g]) >= ALPHA:
                        continue
                    try:
                        pairs.append([json_cell(av), json_cell(bv)])
                    except TypeError:
                        continue
                pairs = _verified(df, a, b, pairs) if len(df) > N else pairs
                if pairs:
                    rules.append([a, b, pairs])
    return rules


def _constant(block, starts):
    """Each group's least code in each column of int codes ``block`` (rows, columns), the
    groups' rows contiguous from ``starts``, and whether it is the group's only code and
    not -1."""
    lo = np.minimum.reduceat(block, starts, axis=0)
    return lo, (lo == np.maximum.reduceat(block, starts, axis=0)) & (lo >= 0)


def _mismatches(key, b, nk=None, nb=None):
    """The rows whose int code in b (N,) is not their group's most common one, groups by
    int codes key (N,): 0 when b is constant within each group, and never more after a
    group is split.  nk, nb: bounds on the codes (default: their largest, plus one)."""
    if b.size == 0:
        return 0
    nb = int(b.max()) + 1 if nb is None else nb
    nk = int(key.max()) + 1 if nk is None else nk
    if nk * nb <= 4 * b.size + 1024:  # a count per (group, value) fits: no sort
        top = np.bincount(key * nb + b, minlength=nk * nb).reshape(nk, nb).max(axis=1)
        return len(key) - int(top.sum())
    pair, count = np.unique(key * nb + b, return_counts=True)
    top = np.zeros(nk, np.int64)
    np.maximum.at(top, pair // nb, count)
    return len(key) - int(top.sum())


def _ranks(k, bound):
    """Each int code of k (N,), all in [0, bound), as its rank among k's distinct codes:
    np.unique(k, return_inverse=True)[1], without a sort when a flag per code fits."""
    if bound > 4 * k.size + 1024:
        return np.unique(k, return_inverse=True)[1].reshape(-1)
    seen = np.zeros(bound, np.int64)
    seen[k] = 1
    return (np.cumsum(seen) - 1)[k]


def _key_rules(df, order, freq, rules):
    """(the key rules of table ``df``, {id of a value rule: the key rule it comes
    before}) (see the module docstring): [[A1, ..., Ak], B, [[[a1, ..., ak], b], ...]]
    each; ``order`` the eligible columns by falling cardinality (on the value rules'
    sample), ``freq`` their value frequencies, ``rules`` the value rules found.  Every
    row is read: a key's groups are small on a sample.  A key rule's B may also be set by
    value rules, and read by them; a value rule from B to a column of the key comes before
    the key rule (:func:`_in_order`), and a value rule from B that sets a column the key
    reads by way of other rules keeps the key rule from being made."""
    pd = pandas_module()
    codes = {n: pd.factorize(df[n].astype(object), use_na_sentinel=False)[0]
             for n in order}
    card = {n: int(codes[n].max()) + 1 for n in order}
    # (a row with a key cell missing takes no part: a missing key is never a rule's key)
    present = {n: df[n].notna().to_numpy() for n in order if 2 <= card[n] <= KEY_VALUES}
    full = {n for n in present if present[n].all()}
    parts = [n for n in present if present[n].mean() >= KEY_COVER]
    # A rule's rows lie in groups of at least RARE_MIN rows, each of one value of B and of
    # each column of the key (not missing): a column whose values that frequent cover
    # under KEY_COVER of the rows gets no rule, and a key that takes one makes none
    thin = {n for n in parts if _often(codes[n][present[n]]) < KEY_COVER * len(df)}
    out, read, tries, before = [], set(), 0, {}
    for b in order:
        if b in read or card[b] < 2:
            continue
        if _often(codes[b]) < KEY_COVER * len(df):
            continue
        if tries + KEY_COLUMNS * len(parts) > KEY_TRIES:
            break
        key, S, ok = np.zeros(len(df), np.int64), [], None  # ok None: every row
        nk, nb = 1, card[b]
        left = _mismatches(key, codes[b], nk, nb)
        while left > KEY_SLACK * len(df) and len(S) < KEY_COLUMNS:
            best = None
            for c in parts:
                if c == b or c in S:
                    continue
                tries += 1
                k2 = key * card[c] + codes[c]
                ok2 = ok if c in full else present[c] if ok is None else ok & present[c]
                d = _mismatches(k2, codes[b], nk * card[c], nb) if ok2 is None else \
                    _mismatches(k2[ok2], codes[b][ok2], nk * card[c], nb)
                if best is None or d < best[0]:
                    best = (d, c, k2, ok2)
                    if d == 0:  # (only a smaller count takes a column's place)
                        break
            if best is None or best[0] >= left:
                break
            left, c, k2, ok = best
            S.append(c)
            if c in thin:
                break
            key = _ranks(k2, nk * card[c])
            nk = int(key.max()) + 1
        if left > KEY_SLACK * len(df) or len(S) < 2 or thin.intersection(S):
            continue
        pairs = _key_pairs(df, S, b, key, codes[b], freq[b])
        if not pairs:
            continue
        edges = _edges(rules + out)
        if any(r[0] == b and r[1] not in S and any(_reaches(edges, r[1], c) for c in S)
               for r in rules):
            continue
        rule = [S, b, pairs]
        before.update((id(r), rule) for r in rules if r[0] == b and r[1] in S)
        out.append(rule)
        read.update(S)
        parts = [n for n in parts if n != b]
    return out, before


def _in_order(rules, keys, before):
    """Value rules ``rules`` (in their order) and key rules ``keys`` in the order they are
    applied: each after the rules that set a column it reads, and a key rule after the
    value rules that set its column, but for the value rules ``before`` names (id -> key
    rule: from the key rule's column B to a column of its key), which come before their
    key rule and read B as drawn.  On the rows the key rule sets, its B and the value
    rule's column agree (the key's groups are the training rows', on which the value
    rule holds), and elsewhere B stays as drawn: both relations hold.  Otherwise key rules
    come as late as they may (after the value rules, when no value rule reads their
    column), in the order they were found."""
    import heapq
    every = rules + keys
    reads = [r[0] if isinstance(r[0], list) else [r[0]] for r in every]
    setters = {}
    for i, r in enumerate(every):
        setters.setdefault(r[1], []).append(i)
    after = [set() for _ in every]  # i -> the rules that come after it
    for j, r in enumerate(every):
        for c in reads[j]:
            for i in setters.get(c, ()):
                if i != j:
                    first, then = (j, i) if before.get(id(r)) is every[i] else (i, j)
                    after[first].add(then)
        if isinstance(r[0], list):
            for i in setters.get(r[1], ()):
                if i != j and not isinstance(every[i][0], list):
                    after[i].add(j)
    into = [0] * len(every)
    for targets in after:
        for j in targets:
            into[j] += 1
    ready = [i for i in range(len(every)) if into[i] == 0]
    heapq.heapify(ready)  # (by position: value rules in their order, then key rules)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append(every[i])
        for j in after[i]:
            into[j] -= 1
            if into[j] == 0:
                heapq.heappush(ready, j)
    if len(out) < len(every):  # (find makes no cycle: a rule it would close is not kept)
        raise RuntimeError("the table's rules read each other in a cycle")
    return out


def _edges(rules):
    """{column: the columns the rules reading it set} of value and key rules."""
    edges = {}
    for a, b, _ in rules:
        for c in (a if isinstance(a, list) else [a]):
            edges.setdefault(c, set()).add(b)
    return edges


def _often(code):
    """The rows of int codes ``code`` whose code is in at least RARE_MIN of them."""
    count = np.bincount(code) if code.size else np.zeros(0, np.int64)
    return int(count[count >= RARE_MIN].sum())


def _key_pairs(df, S, b, key, bcode, freq):
    """The [[a1, ..., ak], b] of the groups (``key``: their codes per row) of at least
    RARE_MIN rows in which B (codes ``bcode``) is constant and that pass the chance test,
    or [] when these hold under KEY_COVER of the rows."""
    n = np.bincount(key)
    pair = np.unique(key * (int(bcode.max()) + 1) + bcode)
    one = np.bincount(pair // (int(bcode.max()) + 1), minlength=n.size) == 1
    first = np.unique(key, return_index=True)[1]  # each group's first row
    pairs, rows = [], 0
    cells = df[S + [b]].astype(object).to_numpy()
    for g in np.flatnonzero((n >= RARE_MIN) & one):
        row = cells[first[g]]
        if _frequency(freq, row[-1]) ** int(n[g]) >= ALPHA:
            continue
        try:
            ks = [json_cell(v) for v in row[:-1]]
            if any(v is None for v in ks):
                continue
            pairs.append([ks, json_cell(row[-1])])
        except TypeError:
            continue
        rows += int(n[g])
    return pairs if rows >= KEY_COVER * len(df) else []


class _Frequencies(dict):
    """Each column's value frequencies in ``sample``, read when first asked for: most
    columns of a wide table never are."""

    def __init__(self, sample):
        super().__init__()
        self.sample = sample

    def __missing__(self, name):
        self[name] = self.sample[name].value_counts(normalize=True, dropna=False)
        return self[name]


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


def _acyclic(rules, rank):
    """The value rules that can be applied in one order: every rule from a column ranked
    before the one it sets (more values, or as many and earlier in the table), then each
    rule the other way (a column of few values setting one of more: every single employee
    has stock option level 0) unless it would close a cycle of columns, the rules of more
    values (pairs) first.  Where two rules set one column of a sample's row (a row the
    training table never had), the one applied first keeps its value."""
    ahead = [r for r in rules if rank[r[0]] < rank[r[1]]]
    back = sorted((r for r in rules if rank[r[0]] > rank[r[1]]),
                  key=lambda r: (-len(r[2]), rank[r[0]], rank[r[1]]))
    edges = {}
    for r in ahead:
        edges.setdefault(r[0], set()).add(r[1])
    out = list(ahead)
    for r in back:
        if not _reaches(edges, r[1], r[0]):
            edges.setdefault(r[0], set()).add(r[1])
            out.append(r)
    return out


def _reaches(edges, a, b):
    """Whether column b can be reached from column a along ``edges`` (column -> set)."""
    seen, stack = {a}, [a]
    while stack:
        for n in edges.get(stack.pop(), ()):
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return False


def _topological(rules, order):
    """{column: position} in an order where every value rule's column A comes before the
    column B it sets (the rules are acyclic), ties in ``order``."""
    import heapq
    rank = {n: i for i, n in enumerate(order)}
    into = {n: 0 for n in order}
    edges = _edges(rules)
    for targets in edges.values():
        for b in targets:
            into[b] += 1
    ready = [(rank[n], n) for n in order if into[n] == 0]
    heapq.heapify(ready)
    out = {}
    while ready:
        _, n = heapq.heappop(ready)
        out[n] = len(out)
        for m in edges.get(n, ()):
            into[m] -= 1
            if into[m] == 0:
                heapq.heappush(ready, (rank[m], m))
    return out


def _ordered(rules, rank):
    """Value rules sorted by the position of the column they set, then of the one they
    read."""
    return sorted(rules, key=lambda r: (rank[r[1]], rank[r[0]]))


def apply(frame, rules, drawn=None):
    """Set, in DataFrame ``frame`` (a sample, in place), each rule's column B to b where
    its column A holds a (a key rule: its columns hold a1, ..., ak; an interval rule:
    :func:`fastvae.tabular.intervals.apply`; a component rule:
    :func:`fastvae.tabular.components.apply`); a cell already set by an earlier rule keeps
    that value.  Presence rules (:func:`fastvae.tabular.presence.apply`) fill cells from
    ``drawn`` (name -> the decoder's draws of a column, a Series), and are passed over
    without it."""
    pd = pandas_module()
    done = {}
    for rule in rules:
        a, b, pairs = rule
        if presence.is_presence(rule):  # (last in the list; passed over without draws)
            if drawn is not None:
                hit = presence.apply(frame, rule, drawn, np.any(
                    [done[c] for c in b if c in done] or [np.zeros(len(frame), bool)], axis=0))
                for c in b:
                    done[c] = done.get(c, np.zeros(len(frame), bool)) | hit
            continue
        if intervals.is_interval(rule) or components.is_component(rule):
            if b in frame:  # (first in the list, each column set by one of them at most)
                how = intervals if intervals.is_interval(rule) else components
                done[b] = done.get(b, np.zeros(len(frame), bool)) | how.apply(frame, rule)
            continue
        reads = a if isinstance(a, list) else [a]
        if b not in frame or any(c not in frame for c in reads):
            continue
        vals = [p[1] for p in pairs]
        if isinstance(a, list):  # a key rule
            keys = pd.MultiIndex.from_tuples([tuple(p[0]) for p in pairs])
            idx = keys.get_indexer(pd.MultiIndex.from_arrays(
                [frame[c].astype(object) for c in a]))
        else:
            keys = pd.Series([p[0] for p in pairs], dtype=object)
            idx = pd.Index(keys).get_indexer(frame[a].astype(object))
        hit = idx >= 0
        if b in done:
            hit &= ~done[b]
        if not hit.any():
            continue
        frame[b] = put(frame[b], np.flatnonzero(hit), np.array(vals, dtype=object)[idx[hit]])
        done[b] = done.get(b, np.zeros(len(frame), bool)) | hit
    return frame


__all__ = ["find", "apply", "ALPHA", "MAX_VALUES", "KEY_COLUMNS", "KEY_VALUES", "KEY_COVER",
           "KEY_SLACK", "SEARCH_CELLS", "KEY_TRIES"]
