"""Component rules (fastvae.tabular.components): a column that is a part of a date column
(its year, month, weekday ...) is found, kept exactly in samples and saved, and never found
where it is not a part on every row."""
import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import TabularVAE, components, load  # noqa: E402
from fastvae.tabular.schema import infer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::fastvae.tabular.CollapseWarning")


def _births(n=400, seed=0):
    """mosaicData's Births: a date as text and its parts, and the day's births."""
    rng = np.random.default_rng(seed)
    day = pd.Timestamp("1969-01-01") + pd.to_timedelta(rng.permutation(3000)[:n], unit="D")
    return pd.DataFrame({
        "date": day.strftime("%Y-%m-%d"), "births": rng.integers(7000, 11000, n),
        "wday": day.strftime("%a"), "year": day.year, "month": day.month,
        "day_of_month": day.day, "day_of_week": day.day_of_week + 1,
        "noise": rng.integers(1, 13, n)})  # (months' numbers, not a part)


def test_parts_of_a_date_are_found_and_kept_exactly(tmp_path):
    df = _births()
    found = {r[1]: r[2] for r in components.find(df, infer(df))}
    assert found == {"wday": "day_abbr", "year": "year", "month": "month",
                     "day_of_month": "day", "day_of_week": "isoweekday"}
    tv = TabularVAE(seed=0).fit(df, epochs=3, progress=False)
    s = tv.sample(1000, seed=1)
    t = pd.to_datetime(s["date"])
    assert (t.dt.year == s["year"]).all() and (t.dt.month == s["month"]).all()
    assert (t.dt.day == s["day_of_month"]).all() and (t.dt.strftime("%a") == s["wday"]).all()
    assert (t.dt.day_of_week + 1 == s["day_of_week"]).all()
    assert s["year"].dtype == df["year"].dtype and s["wday"].dtype == df["wday"].dtype
    tv.save(tmp_path / "m.npz")
    pd.testing.assert_frame_equal(load(tmp_path / "m.npz").sample(300, seed=2),
                                  tv.sample(300, seed=2))
    off = TabularVAE(seed=0, rules=False).fit(df, epochs=3, progress=False).sample(1000, seed=1)
    assert (pd.to_datetime(off["date"]).dt.year != off["year"]).any()  # (what it fixes)


def test_a_zoned_datetime_gives_its_wall_time_parts_and_offsets_give_none():
    rng = np.random.default_rng(1)
    n = 300
    when = pd.Timestamp("2013-01-01", tz="America/New_York") + pd.to_timedelta(
        rng.integers(0, 365 * 24, n), unit="h")
    df = pd.DataFrame({"t": when, "hour": when.hour, "v": rng.normal(size=n)})
    assert [r[1:] for r in components.find(df, infer(df))] == [["hour", "hour"]]
    utc = df.assign(t=when.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert components.find(utc, infer(utc)) == []  # (UTC text: another zone's hours)


def test_no_rule_where_a_part_breaks_on_one_row_or_the_date_has_gaps():
    df = _births()
    df.loc[7, "month"] = (df.loc[7, "month"] % 12) + 1
    df.loc[9, "wday"] = None
    found = {r[1] for r in components.find(df, infer(df))}
    assert "month" not in found and "wday" not in found and "year" in found
    gappy = _births()
    gappy.loc[[3, 5], "date"] = None  # (a missing date sets nothing: the part is drawn)
    tv = TabularVAE(seed=0).fit(gappy, epochs=2, progress=False)
    s = tv.sample(500, seed=0)
    has = s["date"].notna()
    assert (pd.to_datetime(s["date"][has]).dt.year == s["year"][has]).all()
