"""Rules keyed on a numeric column's values: kept only where the trained decoder agrees
(fastvae.tabular.keycheck)."""
import numpy as np
import pandas as pd
import pytest

from fastvae.tabular import keycheck
from fastvae.tabular.presence import is_presence
from tables_util import fitted


def labour(n=3000, seed=0):
    """cps91's shape: women out of the labour force (40%) have an income on one of 12
    bracket midpoints spread over the whole range of the others' incomes, and hours 0."""
    rng = np.random.default_rng(seed)
    works = rng.random(n) < 0.6
    mids = np.round(np.linspace(6.25, 112.5, 12), 2)
    income = np.where(works, np.round(np.exp(rng.normal(3.3, 0.6, n)), 3),
                      rng.choice(mids, n))
    hours = np.where(works, rng.choice([20, 25, 30, 35, 40, 45, 50], n), 0)
    return pd.DataFrame({"income": income, "hours": hours,
                         "age": rng.integers(20, 60, n)})


def keyed(tv, a, b):
    return [r for r in tv.rules_ if not is_presence(r) and r[0] == a and r[1] == b]


def test_disagreement_counts_the_firing_rows_against_chance():
    frame = pd.DataFrame({"a": [1.5, 1.5, 2.5, 3.0, 1.5, 9.0],
                          "b": ["x", "y", "x", "x", None, "y"],
                          "v": [10.0, 12.0, 11.0, 30.0, 10.0, 0.0]})
    # a = 1.5 -> b = "x": fires on rows 0, 1, 4; two of them hold something else; b holds
    # "x" on 3 of 6 rows, so chance puts 3 * 0.5 firing rows elsewhere
    assert keycheck.disagreement(frame, ["a", "b", [[1.5, "x"]]]) == (2.0, 1.5)
    # a missing target: b is missing on 1 of 6 rows
    assert keycheck.disagreement(frame, ["a", "b", [[1.5, None]]]) == (2.0, 3 * 5 / 6)
    # a numeric target: distances, not equality
    seen, chance = keycheck.disagreement(frame, ["a", "v", [[1.5, 10.0]]], {"v"})
    assert seen == pytest.approx(2.0)
    assert chance == pytest.approx(3 * np.mean(np.abs(frame.v - 10.0)))
    assert keycheck.coverage(frame, ["a", "b", [[1.5, "x"], [2.5, "x"]]]) == 4 / 6
    # a presence rule: the group's first column missing where a is a key
    pres = [{"presence": "a"}, ["b"], [1.5]]
    assert keycheck.disagreement(frame, pres) == (1.0, 3 / 6)


def test_rules_from_scattered_atoms_are_dropped_and_the_shares_come_back():
    df = labour()
    tv = fitted(df, 30, seed=0)
    found = fitted(df, 0, seed=0).rules_  # (a build fit: the rules as found)
    assert any(r[0] == "income" and r[1] == "hours" for r in found if not is_presence(r))
    assert not keyed(tv, "income", "hours")
    zero = float((tv.sample(4000, seed=1)["hours"] == 0).mean())
    assert abs(zero - float((df.hours == 0).mean())) < 0.05


def test_a_numeric_key_of_discrete_values_keeps_its_rule():
    """An occupation code (numeric, 300 values) sets its score on every row: the rule
    covers every sampled row and is kept, and samples keep the pairs."""
    rng = np.random.default_rng(1)
    codes = np.sort(rng.choice(np.arange(1000, 9999), 300, replace=False))
    score = rng.integers(10, 90, 300)
    pick = rng.integers(0, 300, 4000)
    df = pd.DataFrame({"code": codes[pick], "score": score[pick],
                       "x": rng.standard_normal(4000)})
    tv = fitted(df, 5, seed=0)
    assert {c.name: c.kind for c in tv.schema_.columns}["code"] == "numeric"
    assert keyed(tv, "code", "score")
    s = tv.sample(2000, seed=0)
    table = dict(zip(codes.tolist(), score.tolist()))
    on = s["code"].isin(table)
    assert on.mean() > 0.9
    assert (s.loc[on, "score"].to_numpy() == s.loc[on, "code"].map(table).to_numpy()).all()


def test_models_without_numeric_keys_are_left_alone():
    rng = np.random.default_rng(2)
    kind = rng.choice(["a", "b", "c"], 1500)
    df = pd.DataFrame({"kind": kind, "flag": np.where(kind == "a", "yes", "no"),
                       "x": rng.standard_normal(1500)})
    tv = fitted(df, 3, seed=0)
    assert keycheck.numeric_keyed(tv.rules_, tv.schema_) == []
    assert keyed(tv, "kind", "flag")


def test_only_rules_keyed_on_a_number_and_setting_no_time_are_checked():
    """Rules hold times as text and samples hold times: a time takes no part, as key or
    as target (a presence rule's group may hold one: its cells are only tested for gaps)."""
    from types import SimpleNamespace as Col
    schema = Col(columns=[Col(name="n", kind="numeric", is_time=False),
                          Col(name="t", kind="numeric", is_time=True),
                          Col(name="c", kind="categorical", is_time=False)])
    rules = [["n", "c", [[1.0, "x"]]], ["n", "t", [[1.0, "2024-01-01"]]],
             ["t", "c", [["2024-01-01", "x"]]], [{"presence": "n"}, ["t"], [1.0]],
             ["c", "n", [["x", 1.0]]], [{"presence": "c"}, ["n"], ["x"]]]
    assert keycheck.numeric_keyed(rules, schema) == [0, 3]
