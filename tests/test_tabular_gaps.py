"""Gaps that imply gaps are kept in samples (fastvae.tabular.gaps): a follow-up question is
unanswered wherever the first one is, in samples as in the table, at the table's shares;
found where chance cannot explain it and nowhere else; saved."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import gaps  # noqa: E402
from tables_util import fitted as fit_small, saved_and_older  # noqa: E402


def fitted(df, epochs=3, **kw):
    return fit_small(df, epochs, **kw)


def survey(n=3000, seed=0):
    """uses (missing on 20% of rows), days (missing wherever uses is, and on 15% more),
    hours (missing wherever days is, and on 10% more), an unrelated gappy score."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    df = pd.DataFrame({"uses": np.where(x > 0, "yes", "no").astype(object),
                       "days": np.round(np.abs(10 * x + rng.standard_normal(n)), 1),
                       "hours": np.round(np.abs(3 * x + rng.standard_normal(n)), 2),
                       "score": rng.standard_normal(n)})
    first = rng.random(n) < 0.2
    second = first | (rng.random(n) < 0.15)
    third = second | (rng.random(n) < 0.10)
    df.loc[first, "uses"] = None
    df.loc[second, "days"] = np.nan
    df.loc[third, "hours"] = np.nan
    df.loc[rng.random(n) < 0.3, "score"] = np.nan
    return df


def test_implied_gaps_are_found_and_ordered():
    tv = fitted(survey(), epochs=1)
    assert tv.gaps_ == [[["uses"], ["days"]], [["uses"], ["hours"]], [["days"], ["hours"]]]


def test_samples_keep_the_implied_gaps_at_the_tables_shares():
    df = survey()
    tv = fitted(df)
    s = tv.sample(20000, seed=0)
    assert not (s["uses"].isna() & s["days"].notna()).any()
    assert not (s["days"].isna() & s["hours"].notna()).any()
    for c in df.columns:
        assert abs(s[c].isna().mean() - df[c].isna().mean()) < 0.015, c
    keep, tv.gaps_ = tv.gaps_, []  # (the heads alone: days without uses on many rows)
    r = tv.sample(20000, seed=0)
    tv.gaps_ = keep
    assert (r["uses"].isna() & r["days"].notna()).sum() > 200


def test_no_implication_when_broken_once_or_by_chance():
    df = survey()
    once = df.copy()
    i = int(np.flatnonzero(once["uses"].isna().to_numpy())[0])
    once.loc[i, "days"] = 1.5
    assert [["uses"], ["days"]] not in fitted(once, epochs=1).gaps_
    # (a column missing on nearly every row: being missing where another is, by chance)
    rng = np.random.default_rng(1)
    n = 400
    few = pd.DataFrame({"a": rng.standard_normal(n), "b": rng.standard_normal(n)})
    few.loc[:5, "a"] = np.nan
    few.loc[rng.random(n) < 0.9, "b"] = np.nan
    few.loc[:5, "b"] = np.nan
    assert fitted(few, epochs=1).gaps_ == []


def test_implied_by_follows_chains():
    heads = [["a"], ["b"], ["c"], ["d"]]
    imp = [[["a"], ["b"]], [["b"], ["c"]]]
    assert gaps.implied_by(imp, heads) == {1: [0], 2: [0, 1]}


def test_gaps_are_saved_and_an_older_model_has_none(tmp_path):
    saved_and_older(fitted(survey(800), epochs=1), "gaps", tmp_path)


def test_a_presence_rule_keeps_the_groups_share():
    """A group present on every row of one status and on 30% of the other's: the presence
    rule fills it on the first status's rows, and the head, fit through the sampler,
    draws fewer elsewhere (without that: present on 0.73 of samples against 0.58)."""
    rng = np.random.default_rng(5)
    n = 3000
    st = rng.choice(["h", "s"], n, p=[0.4, 0.6])
    cat = rng.normal(50, 10, n)
    cat[~((st == "h") | (rng.random(n) < 0.3))] = np.nan
    df = pd.DataFrame({"status": st, "cat": cat, "z": rng.standard_normal(n)})
    tv = fitted(df, epochs=1)
    assert [{"presence": "status"}, ["cat"]] in [r[:2] for r in tv.rules_]
    s = tv.sample(20000, seed=0)
    assert abs(s["cat"].notna().mean() - df["cat"].notna().mean()) < 0.015
    assert s.loc[s["status"] == "h", "cat"].notna().all()


def test_a_model_pickled_before_the_maps_orders_and_gaps_samples():
    import pickle
    tv = fitted(survey(600), epochs=1)
    want = tv.sample(200, seed=3)
    for k in ("margins_", "orders_", "gaps_"):
        del tv.__dict__[k]  # (what such a pickle holds)
    back = pickle.loads(pickle.dumps(tv))
    tv2 = fitted(survey(600), epochs=1)
    tv2.margins_, tv2.orders_, tv2.gaps_ = None, [], []
    pd.testing.assert_frame_equal(back.sample(200, seed=3), tv2.sample(200, seed=3))
    assert len(want) == 200
