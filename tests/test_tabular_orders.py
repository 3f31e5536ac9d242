"""Orderings that hold on every training row are kept in samples (fastvae.tabular.orders):
found where chance cannot explain them and nowhere else, kept by swapping a broken row's
two cells (each as the other column holds it), for numbers and times, and saved."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import orders  # noqa: E402
from tables_util import fitted as fit_small, saved_and_older  # noqa: E402


def fitted(df, epochs=2, **kw):
    return fit_small(df, epochs, **kw)


def spans(n=2000, seed=0):
    """A start and an end a short while after it (floats of 2 decimals), a low and a high
    count (integers), an unrelated number whose range overlaps them, and a number far
    above every other (no draw can break its order: not an order)."""
    rng = np.random.default_rng(seed)
    start = np.round(rng.uniform(0, 100, n), 2)
    low = rng.integers(0, 500, n)
    return pd.DataFrame({"start": start, "end": np.round(start + rng.exponential(3.0, n), 2),
                         "low": low, "high": low + rng.integers(0, 30, n),
                         "other": rng.uniform(0, 100, n),
                         "far": rng.uniform(1000, 2000, n)})


def found(df, **kw):
    """The orders the search finds on ``df`` (before the trained decoder's check)."""
    tv = fitted(df, epochs=1, **kw)
    return sorted(orders.find(df, tv.schema_, tv.rules_))


def test_orders_are_found_where_chance_cannot_explain_them():
    assert found(spans()) == [["low", "high"], ["start", "end"]]


def test_an_order_the_decoder_breaks_often_is_dropped_and_the_columns_kept():
    """start and end a few units apart over a range of 100: two epochs' draws break the
    order on about 40% of rows; swapping them would pull the columns apart, so the order
    is dropped after training and each column keeps its distribution."""
    df = spans()
    tv = fitted(df)
    assert ["start", "end"] not in tv.orders_
    s = tv.sample(20000, seed=0)
    for c in ("start", "end"):
        a, b = np.sort(s[c].to_numpy()), np.sort(df[c].to_numpy())
        x = np.concatenate([a, b])
        gap = np.abs(np.searchsorted(a, x, side="right") / a.size -
                     np.searchsorted(b, x, side="right") / b.size).max()
        assert gap < 0.03, (c, gap)


def apart(n=3000, seed=0):
    """A start and an end 80 to about 100 units after it over a range of 100, a low and a
    high count 400 to 430 above it: orders independent draws break on a few rows."""
    rng = np.random.default_rng(seed)
    start = np.round(rng.uniform(0, 100, n), 2)
    low = rng.integers(0, 500, n)
    return pd.DataFrame({"start": start,
                         "end": np.round(start + 80 + rng.exponential(5.0, n), 2),
                         "low": low, "high": low + 400 + rng.integers(0, 30, n),
                         "other": rng.uniform(0, 100, n)})


def test_an_order_the_decoder_keeps_is_kept():
    """Columns 80 units apart and more: twenty epochs' draws break the orders on few rows
    (at most MAX_BROKEN), so both stay, and no sampled row breaks them."""
    tv = fitted(apart(), epochs=20)
    assert sorted(tv.orders_) == [["low", "high"], ["start", "end"]]
    s = tv.sample(5000, seed=1)
    assert not (s["start"] > s["end"]).any() and not (s["low"] > s["high"]).any()


def test_sampled_rows_keep_the_orders_and_the_draws():
    """Without the orders, the decoder's draws break start <= end and low <= high on many
    rows; with them on none, and each column's values are the draws moved between the
    two columns (a row's pair of values is the same pair)."""
    df = spans()
    tv = fitted(df)
    tv.orders_ = found(df)  # (applied here whatever the decoder's check would keep)
    s = tv.sample(5000, seed=1)
    keep, tv.orders_ = tv.orders_, []
    r = tv.sample(5000, seed=1)
    tv.orders_ = keep
    for a, b in (("start", "end"), ("low", "high")):
        assert (r[a] > r[b]).sum() > 100
        assert (s[a] > s[b]).sum() == 0
        np.testing.assert_array_equal(np.minimum(r[a], r[b]), s[a])
        np.testing.assert_array_equal(np.maximum(r[a], r[b]), s[b])
    assert s["start"].dtype == df["start"].dtype and s["low"].dtype == df["low"].dtype
    pd.testing.assert_series_equal(s["other"], r["other"])


def test_no_order_where_it_breaks_once_or_the_columns_are_equal_or_a_rule_writes_one():
    df = spans()
    once = df.copy()
    once.loc[7, "end"] = once.loc[7, "start"] - 1.0
    assert ["start", "end"] not in found(once)
    same = df.assign(end=df["start"])
    assert ["start", "end"] not in found(same)
    # (a rule: a flat plan fixes high, which some metered rows share; a swap would break it)
    ruled = df.assign(plan=np.where(np.arange(len(df)) % 5 == 0, "flat", "metered"))
    ruled.loc[(ruled["plan"] == "flat") | (np.arange(len(df)) % 7 == 1), "high"] = 600
    tv = fitted(ruled, epochs=1)
    assert any(r[1] == "high" for r in tv.rules_)
    got = orders.find(ruled, tv.schema_, tv.rules_)
    assert not [o for o in got if "high" in o]
    assert ["start", "end"] in got


def test_times_keep_their_order_and_zone():
    rng = np.random.default_rng(2)
    n = 1500
    start = pd.Timestamp("2024-01-01", tz="Europe/Paris") + pd.to_timedelta(
        rng.integers(0, 300 * 24, n), unit="h")
    df = pd.DataFrame({"opened": start,
                       "closed": start + pd.to_timedelta(rng.integers(1, 72, n), unit="h"),
                       "x": rng.standard_normal(n)})
    tv = fitted(df)
    assert orders.find(df, tv.schema_, tv.rules_) == [["opened", "closed"]]
    tv.orders_ = [["opened", "closed"]]  # (kept or not after two epochs: applied here)
    s = tv.sample(3000, seed=0)
    assert (s["opened"] <= s["closed"]).all()
    assert str(s["closed"].dtype) == str(df["closed"].dtype)


def test_a_time_and_a_number_or_two_zones_are_never_paired():
    rng = np.random.default_rng(3)
    n = 800
    t = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 1000, n), unit="D")
    df = pd.DataFrame({"a": t, "b": (t + pd.Timedelta(days=2)).tz_localize("UTC"),
                       "c": t + pd.Timedelta(days=1)})
    assert found(df) == [["a", "c"]]  # (b is zoned: its instants are not a and c's)


def test_orders_are_saved_and_an_older_model_has_none(tmp_path):
    saved_and_older(fitted(spans(600)), "orders", tmp_path)


def test_passes_bound_and_a_chain():
    """Three columns in a chain broken every way: one apply sorts every row."""
    rng = np.random.default_rng(4)
    n = 1000
    a = rng.uniform(0, 10, n)
    df = pd.DataFrame({"a": a, "b": a + rng.uniform(0, 1, n), "c": a + rng.uniform(1, 2, n)})
    tv = fitted(df, epochs=1)
    tv.orders_ = sorted(orders.find(df, tv.schema_, tv.rules_))
    assert tv.orders_ == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert orders.passes(tv.orders_) == 4
    s = tv.sample(4000, seed=0)
    assert ((s["a"] <= s["b"]) & (s["b"] <= s["c"])).all()


def test_unsigned_columns_with_gaps_keep_their_order():
    """uint64 cells below the other column's lowest value (where it is missing): their
    offsets are negative, not wrapped around."""
    rng = np.random.default_rng(5)
    n = 2000
    b = rng.integers(0, 1000, n)
    a = np.where(b >= 500, b - rng.integers(0, 50, n), 0)
    df = pd.DataFrame({"a": pd.array(a, dtype="UInt64"), "b": b.astype("uint64"),
                       "x": rng.standard_normal(n)})
    df.loc[b < 500, "a"] = pd.NA
    tv = fitted(df)
    tv.orders_ = orders.find(df, tv.schema_, tv.rules_)
    assert tv.orders_ == [["a", "b"]]
    cells = {"a": (np.array([700], np.uint64), None), "b": (np.array([600], np.uint64), None)}
    orders.apply(cells, tv.orders_, tv.schema_)
    assert cells["a"][0][0] <= cells["b"][0][0]
    s = tv.sample(5000, seed=0)
    ok = s["a"].notna()
    assert (s.loc[ok, "a"].astype("uint64") <= s.loc[ok, "b"]).all()
