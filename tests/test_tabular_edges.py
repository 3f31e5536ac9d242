"""Table models at the edges a new user reaches: samples beyond a column's protected range,
imputing a column given as nothing but gaps, times without a zone for a zoned column, and
conditions outside their training range."""
import warnings

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import TabularVAE  # noqa: E402
from fastvae.tabular.column import RARE_MIN  # noqa: E402


def _fit(df, epochs=30, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TabularVAE(seed=0, **kw).fit(df, progress=False, epochs=epochs)


def test_draws_beyond_the_protected_range_do_not_pile_on_its_edge_rows():
    """A small heavy-tailed table (like MASS Animals, 28 rows): the draws beyond the
    RARE_MIN-th smallest and largest values come back inside the range, not as the edge
    rows' values, and no sample copies a training row."""
    rng = np.random.default_rng(0)
    body = np.round(np.exp(rng.normal(3, 3, 28)), 3)
    df = pd.DataFrame({"body": body, "brain": np.round(body ** 0.75 * np.exp(
        rng.normal(0, 0.3, 28)), 1)})
    s = _fit(df, epochs=200).sample(2000, seed=1)
    for c in df:
        v = np.sort(df[c].to_numpy())
        lo, hi = v[RARE_MIN - 1], v[-RARE_MIN]
        assert s[c].min() >= lo and s[c].max() <= hi
        # about 4/28 of the mass lies beyond each edge: as one value it would be ~14%
        assert (s[c] == lo).mean() < 0.02 and (s[c] == hi).mean() < 0.02, c
    assert len(s.merge(df)) == 0


def test_impute_a_column_given_as_gaps_only_keeps_its_dtype():
    rng = np.random.default_rng(1)
    n = 200
    df = pd.DataFrame({
        "a": rng.normal(size=n), "flag": rng.random(n) < 0.3, "sex": rng.choice(["M", "F"], n),
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 10 ** 6, n), "min"),
        "dur": pd.to_timedelta(rng.integers(0, 1000, n), unit="s"),
        "day": pd.Series(pd.date_range("2020-01-01", periods=n)).dt.strftime("%d/%m/%Y")})
    tv = _fit(df, missing=True, epochs=2)
    for c in ["flag", "sex", "when", "dur", "day"]:
        out = tv.impute(df.head(4).assign(**{c: np.nan}))  # (an all-NaN column is float64)
        assert out[c].notna().all(), c
        assert out[c].dtype.kind == df[c].dtype.kind or (
            c in ("sex", "day") and isinstance(out[c].iloc[0], str)), (c, out[c].dtype)
        if c == "day":
            pd.to_datetime(out[c], format="%d/%m/%Y")  # (in the column's layout)


def test_times_without_a_zone_are_the_zoned_column_s_wall_times():
    rng = np.random.default_rng(2)
    n = 300
    df = pd.DataFrame({"a": rng.normal(size=n),
                       "e": pd.Timestamp("2024-01-01", tz="US/Eastern")
                       + pd.to_timedelta(rng.integers(0, 10 ** 4, n), unit="min")})
    tv = _fit(df, missing=True, epochs=2)
    naive = df.assign(e=df.e.dt.tz_localize(None))
    np.testing.assert_array_equal(tv.transform(naive), tv.transform(df))
    np.testing.assert_array_equal(tv.score_samples(naive), tv.score_samples(df))
    gap = naive.head(3).copy()
    gap.loc[0, "e"] = pd.NaT
    out = tv.impute(gap)
    zoned = tv.impute(df.head(3).assign(e=[pd.NaT] + df.e.iloc[1:3].tolist()))
    assert out.e.dt.tz is None
    assert out.e.iloc[0] == zoned.e.iloc[0].tz_localize(None)  # (the same wall time)
    assert (out.e.iloc[1:] == gap.e.iloc[1:]).all()


def test_a_condition_outside_its_training_range_is_warned_of():
    rng = np.random.default_rng(3)
    n = 300
    yrs = rng.integers(1, 57, n)
    df = pd.DataFrame({"yrs": yrs, "pay": 50 + yrs + rng.normal(0, 5, n)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv = TabularVAE(seed=0).fit(df, conditions=["yrs"], epochs=2, progress=False)
    lo, hi = int(yrs.min()), int(yrs.max())
    with pytest.warns(UserWarning, match=rf"'yrs'.*500.*\[{lo}, {hi}\]"):
        tv.sample(10, conditions=500, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tv.sample(10, conditions=30, seed=0)


def test_messages_name_what_is_wrong():
    from fastvae.tabular.column import TableError
    rng = np.random.default_rng(4)
    d = pd.DataFrame({"a": rng.normal(size=100), "b": ["x", "y"] * 50,
                      "d": pd.Series(pd.date_range("2020-01-01", periods=100)).dt.strftime(
                          "%d/%m/%Y")})
    tv = _fit(d, missing=True, epochs=1)
    for f in (tv.impute, tv.score_samples, tv.transform, tv.reconstruct):
        with pytest.raises(TableError, match="^the table has no rows$"):
            f(d.iloc[:0])
    with pytest.raises(TableError, match=r"'2024-01-05' is not a date in the column's layout "
                                         r"\(%d/%m/%Y\)"):
        tv.score_samples(d.head(1).assign(d="2024-01-05"))
    # a numeric column of two values is withheld, not "empty"
    with pytest.raises(TableError, match=r"'a': fewer than 10 values.*'c': empty"):
        TabularVAE().fit(pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [None, None]}),
                         progress=False)


def test_free_text_is_no_identifier():
    """Notes of several words each, all different: not drawn as identifiers from their
    characters' classes (garbage), but as rare values: "_RARE_"; names of a word or two
    are still identifiers."""
    from fastvae.tabular.column import RARE
    rng = np.random.default_rng(5)
    words = ["custom", "version", "not", "available", "on", "amazon", "used", "copy", "ok"]
    notes = [" ".join(rng.choice(words, rng.integers(4, 9))).capitalize() + f" {i}."
             for i in range(60)]
    names = [f"{a} {b}" for a, b in zip(rng.choice(["Ann", "Bo", "Cy"], 60),
                                        [f"Smith{i}" for i in range(60)])]
    df = pd.DataFrame({"x": rng.normal(size=60), "notes": notes, "name": names})
    tv = _fit(df, epochs=2)
    kinds = {c.name: c.kind for c in tv.schema_.columns}
    assert kinds["name"] == "id" and kinds["notes"] != "id"
    s = tv.sample(50, seed=0)
    assert set(s.notes) == {RARE}


def test_a_csv_column_of_integers_with_gaps_stays_integers(tmp_path):
    """pandas reads "19" beside an empty cell as 19.0: the table's reader makes such a
    column Int64 (whole numbers written without a point), and samples write "19"; a column
    written "19.0" stays float."""
    from fastvae.tabular import read_table
    rng = np.random.default_rng(6)
    n = 200
    yrs = pd.array(rng.integers(1, 40, n), dtype="Int64")
    yrs[rng.random(n) < 0.1] = pd.NA
    df = pd.DataFrame({"yrs": yrs, "pay": rng.normal(size=n).round(2),
                       "f": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 9, n) * 1.0)})
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    assert "19.0" not in path.read_text().split("\n")[1].split(",")[0]
    back = read_table(str(path))
    assert str(back.yrs.dtype) == "Int64" and back.f.dtype == np.float64
    assert back.yrs.isna().sum() == df.yrs.isna().sum()
    s = _fit(back, epochs=2).sample(50, seed=0)
    assert str(s.yrs.dtype) == "Int64"
    out = tmp_path / "s.csv"
    s.to_csv(out, index=False)
    assert not any(v.endswith(".0") for v in pd.read_csv(out, dtype=str).yrs.dropna())
