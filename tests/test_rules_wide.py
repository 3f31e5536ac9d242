"""The rules search on wide tables (fastvae.tabular.rules): what the search passes over can
hold no rule, so ordinary tables get exactly the rules of the full search (a copy of it is
kept here as the reference), and a wide table's work is bounded (continuous columns cost
nothing; few-valued ones stop at SEARCH_CELLS / KEY_TRIES) while its planted rules are
found.  Work is counted (cells read, keys tried), never timed."""
import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import cells, rules  # noqa: E402
from fastvae.tabular.column import RARE_MIN  # noqa: E402
from fastvae.tabular.schema import infer  # noqa: E402


# -- the search as it was before the pruning (the reference) ---------------------------

def _reference_find(df, schema):
    cols = [c for c in schema.columns if cells.eligible(c)]
    if len(cols) < 2:
        return []
    sample = df if len(df) <= rules.SEARCH_ROWS else df.sample(rules.SEARCH_ROWS,
                                                                 random_state=0)
    card = {c.name: int(sample[c.name].nunique(dropna=False)) for c in cols}
    pos = {c.name: i for i, c in enumerate(schema.columns)}
    order = sorted((c.name for c in cols), key=lambda n: (-card[n], pos[n]))
    rank = {n: i for i, n in enumerate(order)}
    freq = {n: sample[n].value_counts(normalize=True, dropna=False) for n in order}
    found = []
    for a in order:
        if card[a] < 2 or card[a] > rules.MAX_VALUES:
            continue
        targets = [b for b in order if b != a and card[b] > 1]
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
                p = rules._frequency(freq[b], bv)
                if p ** int(n.at[av]) >= rules.ALPHA:
                    continue
                try:
                    pairs.append([cells.json_cell(av), cells.json_cell(bv)])
                except TypeError:
                    continue
            pairs = rules._verified(df, a, b, pairs) if len(df) > len(sample) else pairs
            if pairs:
                found.append([a, b, pairs])
    found = rules._acyclic(found, rank)
    found = rules._ordered(found, rules._topological(found, order))
    keys, before = _reference_key_rules(df, order, freq, found)
    return rules._in_order(found, keys, before)


def _reference_mismatches(key, b):
    if b.size == 0:
        return 0
    nb = int(b.max()) + 1
    pair, count = np.unique(key * nb + b, return_counts=True)
    top = np.zeros(int(key.max()) + 1, np.int64)
    np.maximum.at(top, pair // nb, count)
    return len(key) - int(top.sum())


def _reference_key_rules(df, order, freq, found):
    """(key rules, {id of a value rule from a key rule's column to one of its key's: that
    key rule}); no key rule where a value rule from its column reaches its key's columns
    by way of other rules."""
    codes = {n: pd.factorize(df[n].astype(object), use_na_sentinel=False)[0]
             for n in order}
    card = {n: int(codes[n].max()) + 1 for n in order}
    present = {n: df[n].notna().to_numpy() for n in order}
    parts = [n for n in order if 2 <= card[n] <= rules.KEY_VALUES and
             present[n].mean() >= rules.KEY_COVER]
    out, read, before = [], set(), {}
    for b in order:
        if b in read or card[b] < 2:
            continue
        key, S, ok = np.zeros(len(df), np.int64), [], np.ones(len(df), bool)
        left = _reference_mismatches(key, codes[b])
        while left > rules.KEY_SLACK * len(df) and len(S) < rules.KEY_COLUMNS:
            best = None
            for c in parts:
                if c == b or c in S:
                    continue
                k2, ok2 = key * card[c] + codes[c], ok & present[c]
                d = _reference_mismatches(k2[ok2], codes[b][ok2])
                if best is None or d < best[0]:
                    best = (d, c, k2, ok2)
            if best is None or best[0] >= left:
                break
            left, c, k2, ok = best
            S.append(c)
            key = np.unique(k2, return_inverse=True)[1].reshape(-1)
        if left > rules.KEY_SLACK * len(df) or len(S) < 2:
            continue
        pairs = rules._key_pairs(df, S, b, key, codes[b], freq[b])
        if pairs:
            edges = rules._edges(found + out)  # (the graph helpers are the search's own)
            if any(r[0] == b and r[1] not in S and any(rules._reaches(edges, r[1], c)
                                                       for c in S) for r in found):
                continue
            rule = [S, b, pairs]
            before.update((id(r), rule) for r in found if r[0] == b and r[1] in S)
            out.append(rule)
            read.update(S)
            parts = [n for n in parts if n != b]
    return out, before


# -- tables ----------------------------------------------------------------------------

def addons(n=3000, seed=7):
    """tests/test_tabular_columns.py: internet -> addon on one value, plan -> price."""
    rng = np.random.default_rng(seed)
    internet = rng.choice(["no", "dsl", "fiber"], n, p=[0.2, 0.4, 0.4])
    addon = np.where(internet == "no", "no internet", rng.choice(["yes", "no"], n))
    plan = rng.choice(["basic", "plus", "pro", "max"], n)
    price = pd.Series(plan).map({"basic": 9.99, "plus": 19.99, "pro": 29.99, "max": 49.99})
    return pd.DataFrame({"internet": internet, "addon": addon, "plan": plan, "price": price,
                         "x": rng.standard_normal(n)})


def fees(n=4000, seed=11, odd=False):
    """fee is a function of (region, tier) together (and region of fee and tier); also
    read by tests/test_tabular_columns.py."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east", "west"], n)
    tier = rng.integers(1, 4, n)
    table = {(r, t): 5.0 * ((i + t) % 4) for i, r in enumerate(["north", "south", "east",
                                                                 "west"]) for t in (1, 2, 3)}
    fee = np.array([table[(r, t)] for r, t in zip(region, tier)])
    df = pd.DataFrame({"region": region, "tier": tier, "fee": fee,
                       "x": rng.standard_normal(n)})
    if odd:
        df.loc[0, "fee"] = 99.0
    return df


def tiny_groups(n=600, seed=12):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"a": rng.integers(0, 30, n), "b": rng.integers(0, 30, n),
                         "v": rng.integers(0, 1000, n).astype(str)})


def by_chance(n=400, seed=8):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"g": rng.integers(0, 60, n).astype(str),
                         "flag": rng.choice(["y", "n"], n, p=[0.9, 0.1]),
                         "x": rng.standard_normal(n)})


def gaps(n=2500, seed=3):
    """Missing cells as values (None, NaN, pd.NA), a categorical, nullable ints, bools and a
    mixed column; a zip code of a few frequent values and many rare ones sets a city."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(["a", "b", "c", None], n, p=[0.4, 0.3, 0.2, 0.1])
    level = pd.Series(np.where(pd.isna(kind), None, np.where(kind == "a", "low", "high")),
                      dtype=object)
    level[rng.random(n) < 0.02] = None
    cat = pd.Categorical(rng.choice(["x", "y", "z"], n), categories=["x", "y", "z", "w"])
    cat[rng.random(n) < 0.05] = np.nan
    count = pd.array(rng.integers(0, 4, n), dtype="Int64")
    count[rng.random(n) < 0.1] = pd.NA
    zips = np.where(rng.random(n) < 0.6, rng.choice([10001, 10002, 20001], n),
                    rng.integers(30000, 99999, n))
    city = np.where(zips < 20000, "NYC", np.where(zips < 30000, "DC", "other"))
    city = np.where((zips >= 30000) & (rng.random(n) < 0.5), "elsewhere", city)
    mixed = np.array([1, "1", 2.5, True, "z"], dtype=object)[rng.integers(0, 5, n)]
    return pd.DataFrame({"kind": kind, "level": level, "cat": cat, "count": count,
                         "flag": count.to_numpy(dtype=float, na_value=np.nan) > 1,
                         "zip": zips, "city": city, "mixed": mixed,
                         "x": rng.standard_normal(n)})


def hours(n=3000, seed=5):
    """A timestamp of (month, day, hour) as text, a chain A -> B -> C, a copy of a column."""
    rng = np.random.default_rng(seed)
    month, day, hour = rng.integers(1, 3, n), rng.integers(1, 6, n), rng.integers(0, 6, n)
    stamp = [f"2024-{m:02d}-{d:02d} {h:02d}:00" for m, d, h in zip(month, day, hour)]
    a = rng.integers(0, 40, n)
    b = a // 4
    return pd.DataFrame({"month": month, "day": day, "hour": hour, "stamp": stamp,
                         "a": a, "b": b, "c": (b % 3).astype(str), "b2": b.copy(),
                         "y": rng.standard_normal(n).round(1)})


def edges(seed=9):
    """The pruning's edges: a value of A in exactly RARE_MIN rows sets a value of B seen
    only there; a frequent value of A whose rows hold only rare values of B (all
    different) sets nothing; a key (x, y) -> fee whose frequent values hold 60% of the
    rows (the rest: a value per key of a row or two)."""
    rng = np.random.default_rng(seed)
    n = 4000
    a = np.array([f"a{i}" for i in range(n)], dtype=object)
    b = rng.choice(["p", "q"], n).astype(object)
    a[:RARE_MIN], b[:RARE_MIN] = "five", "only-here"
    a[10:60], b[10:60] = "many", [f"b{i}" for i in range(50)]
    a[100:700] = "big"
    b[100:700] = "p"
    x, y = rng.integers(4, 100, n), rng.integers(3, 100, n)
    common = rng.random(n) < 0.6
    x[common], y[common] = rng.integers(0, 4, common.sum()), rng.integers(0, 3, common.sum())
    fee = np.where(common, 5.0 * ((x + y) % 4), 1000.0 * x + y)
    return pd.DataFrame({"a": a, "b": b, "fee": fee, "x": x, "y": y})


def thin_key(seed=13):
    """fee of (x, y) where 60% of the rows hold a few frequent (x, y) and the rest rare ones
    (x and y: their values of RARE_MIN rows cover some two thirds of the rows, enough for a
    key)."""
    rng = np.random.default_rng(seed)
    n = 600
    x, y = rng.integers(4, 100, n), rng.integers(3, 100, n)
    common = rng.random(n) < 0.6
    x[common], y[common] = rng.integers(0, 4, common.sum()), rng.integers(0, 3, common.sum())
    fee = np.where(common, 5.0 * ((x + y) % 4), 1000.0 * x + y)
    return pd.DataFrame({"fee": fee, "x": x, "y": y, "z": rng.integers(0, 3, n)})


def near_key(seed=10):
    """fee of (region, tier), and tier2: tier but on one row, before tier in the table: the
    key's second column is the one that leaves no row off, not the first that leaves
    one."""
    df = fees(seed=seed)
    df.insert(1, "tier2", df["tier"].to_numpy(copy=True))
    df.loc[7, "tier2"] = (df.loc[7, "tier"] % 3) + 1
    return df


def random_table(seed):
    """Columns of random cardinality and skew, some a function of one or two others on most
    or all rows, with gaps."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(300, 3000))
    out = {}
    for i in range(int(rng.integers(4, 9))):
        k = int(rng.choice([2, 3, 5, 12, 40, 200]))
        p = rng.dirichlet(np.full(k, float(rng.choice([0.3, 1.0, 5.0]))))
        out[f"r{i}"] = rng.choice(k, n, p=p)
    base = list(out)
    for i in range(int(rng.integers(2, 6))):
        src = out[base[int(rng.integers(len(base)))]]
        f = rng.integers(0, int(rng.choice([2, 4, 9])), int(src.max()) + 1)
        v = f[src].astype(object)
        if rng.random() < 0.4:  # the rule breaks on a few rows
            v[rng.random(n) < 0.01] = 99
        out[f"f{i}"] = v
    for i in range(int(rng.integers(1, 3))):
        x, y = (out[base[int(j)]] for j in rng.choice(len(base), 2, replace=False))
        out[f"k{i}"] = (x * 7 + y * 3) % int(rng.choice([3, 5, 8]))
    out["z"] = rng.standard_normal(n)
    df = pd.DataFrame(out)
    for c in df.columns[rng.random(len(df.columns)) < 0.3]:
        df[c] = df[c].astype(object)
        df.loc[rng.random(n) < 0.05, c] = None
    return df


def binary(n, k, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.integers(0, 2, (n, k)), columns=[f"c{i}" for i in range(k)])


def schema_of(df):
    return infer(df, types={"mixed": "categorical"} if "mixed" in df else None,
                 salt=bytes(16))


def same(got, want):
    assert json.dumps(got) == json.dumps(want)  # (1 == 1.0 == True for ==, not here)


TABLES = {"addons": addons, "fees": fees, "fees_odd": lambda: fees(odd=True),
          "tiny_groups": tiny_groups, "by_chance": by_chance, "gaps": gaps, "hours": hours,
          "edges": edges, "near_key": near_key, "thin_key": thin_key}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_ordinary_tables_get_the_rules_of_the_full_search(name):
    df = TABLES[name]()
    schema = schema_of(df)
    want = _reference_find(df, schema)
    same(rules.find(df, schema), want)
    if name not in ("tiny_groups", "by_chance"):
        assert want  # (the comparison is not of two empty lists)


@pytest.mark.parametrize("seed", range(8))
def test_random_tables_get_the_rules_of_the_full_search(seed):
    df = random_table(seed)
    schema = schema_of(df)
    same(rules.find(df, schema), _reference_find(df, schema))


def test_a_rule_found_on_the_sample_is_checked_on_every_row(monkeypatch):
    """More rows than SEARCH_ROWS: the search reads a sample, and a rule that breaks on a
    row outside it is dropped, as before."""
    monkeypatch.setattr(rules, "SEARCH_ROWS", 800)
    df = hours(n=3000)
    sample = df.sample(800, random_state=0)
    out = df.index.difference(sample.index)[0]
    df.loc[out, "c"] = "9"
    schema = schema_of(df)
    want = _reference_find(df, schema)
    same(rules.find(df, schema), want)
    pairs = next(r[2] for r in want if r[:2] == ["b", "c"])
    assert sorted(p[0] for p in pairs) == sorted(set(range(10)) - {int(df.loc[out, "b"])})


@pytest.fixture
def work(monkeypatch):
    """Counts the search's work: cells of the sample read by the value rules' search, and
    keys tried by the key rules' search (a pass over the rows each)."""
    seen = {"cells": 0, "passes": 0}
    constant, mismatches = rules._constant, rules._mismatches

    def counted_constant(block, starts):
        seen["cells"] += block.size
        return constant(block, starts)

    def counted_mismatches(*args):
        seen["passes"] += 1
        return mismatches(*args)

    monkeypatch.setattr(rules, "_constant", counted_constant)
    monkeypatch.setattr(rules, "_mismatches", counted_mismatches)
    return seen


def test_a_hundred_few_valued_columns_stay_inside_both_bounds(work):
    """The worst ordinary table: 100 columns of two values each (every column a
    determinant of all others, none a key rule's, so every key search runs its four
    rounds).  Its rules are the full search's, and its work, scaled to 20,000 rows, stays
    under SEARCH_CELLS, its keys under KEY_TRIES: the bounds leave such tables alone."""
    n = 600
    df = binary(n, 100, seed=1)
    schema = schema_of(df)
    same(rules.find(df, schema), _reference_find(df, schema))
    assert work["cells"] == n * 100 * 100  # (each determinant reads every column)
    assert work["cells"] * (rules.SEARCH_ROWS // n) <= rules.SEARCH_CELLS
    assert 30000 < work["passes"] <= rules.KEY_TRIES


def planted(n, seed=4):
    """g (10 values) -> h, and fee of (region, tier) together; nothing else holds."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 10, n)
    region = rng.choice(["north", "south", "east", "west"], n)
    tier = rng.integers(1, 4, n)
    fee = [5.0 * (("north", "south", "east", "west").index(r) + t) % 20
           for r, t in zip(region, tier)]
    return pd.DataFrame({"g": g, "h": np.array(list("uvwxyzuvwx"))[g], "fee": fee,
                         "region": region, "tier": tier})


def kinds(found):
    return {(tuple(a) if isinstance(a, list) else a, b) for a, b, _ in found}


def test_continuous_columns_of_a_wide_table_cost_nothing(work):
    """2,000 columns of floats around the planted columns: no float has a value in
    RARE_MIN rows, so none is read (the search's work is the planted table's alone), and
    the rules are exactly those of the planted table on its own."""
    n = 200
    rng = np.random.default_rng(0)
    small = planted(n)
    floats = pd.DataFrame(rng.standard_normal((n, 2000)), columns=[f"x{i}" for i in range(2000)])
    wide = pd.concat([floats.iloc[:, :1000], small, floats.iloc[:, 1000:]], axis=1)
    want = _reference_find(small, schema_of(small))
    assert kinds(want) == {("g", "h"), (("region", "tier"), "fee")}
    alone = dict(work)
    same(rules.find(small, schema_of(small)), want)
    alone = {k: work[k] - alone[k] for k in work}
    before = dict(work)
    same(rules.find(wide, schema_of(wide)), want)
    assert {k: work[k] - before[k] for k in work} == alone


@pytest.mark.slow
def test_few_valued_columns_beyond_the_bounds_keep_the_planted_rules(work):
    """2,000 columns of two values on 600 rows (a full search would read 1.2 billion cells
    and try some 16 million keys): the search stops at its bounds, the columns of most
    values searched first, so the planted rules among them are kept; the same table gives
    the same rules."""
    n = 600
    wide = pd.concat([planted(n), binary(n, 2000)], axis=1)
    schema = schema_of(wide)
    found = rules.find(wide, schema)
    assert kinds(found) == {("g", "h"), (("region", "tier"), "fee")}
    assert rules.SEARCH_CELLS * 0.9 < work["cells"] <= rules.SEARCH_CELLS
    sought = 2005  # (a first pass for each column sought, beside the keys tried)
    assert rules.KEY_TRIES * 0.9 < work["passes"] <= rules.KEY_TRIES + sought
    same(rules.find(wide, schema), found)


def test_a_column_of_few_values_sets_one_of_more_unless_that_closes_a_cycle():
    """attrition: every single employee has stock option level 0 (3 values setting 4): a
    rule against the values' order is kept, and samples keep it; the same pair both ways
    keeps one direction only, and the rules apply in an order where each column is final
    before it sets another."""
    rng = np.random.default_rng(5)
    n = 600
    status = rng.choice(["single", "married", "divorced"], n)
    option = np.where(status == "single", 0, rng.integers(0, 4, n))
    both = rng.choice(["x", "y", "z"], n)  # (x <-> 0 both ways: one rule is kept)
    mirror = np.where(both == "x", "0", rng.choice(["1", "2"], n))
    df = pd.DataFrame({"status": status, "option": option, "both": both, "mirror": mirror})
    found = rules.find(df, schema_of(df))
    pairs = {(a, b): p for a, b, p in found}
    assert pairs[("status", "option")] == [["single", 0]]
    assert len({("both", "mirror"), ("mirror", "both")} & set(pairs)) == 1
    seen = set()
    for a, b, _ in found:  # (a column is read only once no later rule sets it)
        assert b not in seen, (a, b)
        seen.add(a)
    frame = df.sample(300, random_state=1, ignore_index=True)
    frame["option"] = rng.integers(0, 4, 300)
    rules.apply(frame, found)
    assert (frame.option[frame.status == "single"] == 0).all()
