"""Every column comes back (issue 28): gaps at the data's rate and in its pattern, constant,
ignored, identifier and high-cardinality columns with their dtypes, dates through CSV and
Parquet; sampling in chunks whose memory does not grow with n; an absurd cell blamed on
its own column."""
import tracemalloc

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import fastvae  # noqa: E402
import fastvae.tabular as tabular  # noqa: E402
from fastvae.tabular import RARE, TabularVAE  # noqa: E402
from fastvae.tabular import sampling  # noqa: E402
from tables_util import fitted as fit_small  # noqa: E402


def fitted(df, epochs=60, **kw):
    return fit_small(df, epochs, **kw)


def gappy(n=2000, seed=0):
    """x, y, z, c with planted gaps: x alone 10%; y and z together in 20% of rows (a joint
    pattern); c 5%, more often where x > 1."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    df = pd.DataFrame({"x": x, "y": x + 0.5 * rng.standard_normal(n),
                       "z": -x + 0.5 * rng.standard_normal(n),
                       "c": np.where(x > 0, "pos", "neg").astype(object)})
    df.loc[rng.random(n) < 0.10, "x"] = np.nan
    both = rng.random(n) < 0.20
    df.loc[both, ["y", "z"]] = np.nan
    df.loc[(rng.random(n) < 0.03) | ((x > 1) & (rng.random(n) < 0.3)), "c"] = None
    return df


def test_gaps_come_back_at_the_data_rate_and_in_its_pattern():
    df = gappy()
    tv = fitted(df)
    # y and z have their gaps on the same rows: one head for both
    assert [[c.name for c in g] for g in tv.schema.heads] == [["x"], ["y", "z"], ["c"]]
    s = tv.sample(6000, seed=0)
    real, syn = df.isna().mean(), s.isna().mean()
    for c in df.columns:  # seen: within 0.015
        assert abs(syn[c] - real[c]) < 0.04, (c, syn[c], real[c])
    # y and z are missing together (never one without the other in the data)
    assert (s["y"].isna() == s["z"].isna()).all()
    # and a gap in x does not go with y's
    assert abs(s.loc[s["x"].isna(), "y"].isna().mean() - real["y"]) < 0.08


def test_a_table_without_gaps_samples_none():
    df = gappy().dropna()
    s = fitted(df, epochs=5).sample(2000, seed=0)
    assert not s.isna().any().any()


def test_kinds_of_columns_come_back_with_their_dtypes():
    rng = np.random.default_rng(1)
    n = 800
    tails = [f"t{i:03d}" for i in range(300)]
    df = pd.DataFrame({
        "x": rng.standard_normal(n),
        "const_i": np.full(n, 4, dtype=np.int32), "const_s": "same", "const_b": True,
        "const_cat": pd.Categorical(["k"] * n, categories=["k", "j"]),
        "empty": np.nan, "ignored": rng.choice(["a", "b"], n),
        "ignored_t": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 99, n), "D"),
        "uid": [f"u-{i:06d}" for i in range(n)],
        "many": rng.choice(["frequent1", "frequent2"] + tails, n, p=[0.3, 0.3] + [0.4 / 300] * 300),
    })
    tv = fitted(df, epochs=3, types={"ignored": "ignore", "ignored_t": "ignore"})
    kinds = {c.name: c.kind for c in tv.schema.columns}
    assert kinds == {"x": "numeric", "const_i": "constant", "const_s": "constant",
                     "const_b": "constant", "const_cat": "constant", "empty": "constant",
                     "ignored": "independent", "ignored_t": "independent", "uid": "id",
                     "many": "categorical"}
    s = tv.sample(1000, seed=0)
    assert list(s.columns) == list(df.columns)
    assert list(s.dtypes.astype(str)) == list(df.dtypes.astype(str))
    assert (s["const_i"] == 4).all() and (s["const_s"] == "same").all() and s["const_b"].all()
    assert list(s["const_cat"].cat.categories) == ["k", "j"] and (s["const_cat"] == "k").all()
    assert s["empty"].isna().all()
    assert s["ignored_t"].between(df["ignored_t"].min(), df["ignored_t"].max()).all()
    assert s["uid"].str.fullmatch(r"u-\d{6}").all() and not set(s["uid"]) & set(df["uid"])
    # the frequent values are modelled, the rare ones (fewer than RARE_MIN rows) are RARE
    assert set(s["many"]) <= {"frequent1", "frequent2", RARE}
    assert abs((s["many"] == RARE).mean() - 0.4) < 0.08


@pytest.mark.parametrize("tz", [None, "Europe/Paris"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_dates_round_trip_through_csv_and_parquet(tmp_path, fmt, tz):
    rng = np.random.default_rng(2)
    n = 400
    day = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 365, n), unit="D")
    when = pd.Timestamp("2023-01-01 08:00") + pd.to_timedelta(rng.integers(0, 5000, n),
                                                              unit="min")
    df = pd.DataFrame({"day": day, "when": when.tz_localize(tz) if tz else when,
                       "v": rng.standard_normal(n)})
    path = tmp_path / f"t.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    read = tabular.read_table(path)
    tv = fitted(path, epochs=3)
    s = tv.sample(300, seed=0)
    assert list(s.dtypes.astype(str)) == list(read.dtypes.astype(str))
    if fmt == "csv":  # text, written back in the file's own layouts
        assert s["day"].str.fullmatch(r"\d{4}-\d\d-\d\d").all()
        # (an offset column is written at its most common offset)
        pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d" + (r"\+01:00" if tz else "")
        assert s["when"].str.fullmatch(pattern).all(), s["when"].head()
        day_s = pd.to_datetime(s["day"])
    else:  # datetimes of the training dtype, time zone included
        assert str(s["when"].dtype) == str(df["when"].dtype)
        day_s = s["day"]
    assert day_s.min() >= day.min() and day_s.max() <= day.max()
    out = tmp_path / f"s.{fmt}"
    tabular.write_table(s, out)
    again = tabular.read_table(out)
    assert list(again.dtypes.astype(str)) == list(read.dtypes.astype(str))


def test_sample_memory_does_not_grow_with_n():
    """The model's work for a sample is CHUNK rows at a time, and what a sample allocates
    beyond the table it returns is the same for 10x the rows (traced by tracemalloc: the
    NumPy and Python allocations)."""
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.standard_normal(500), "b": rng.integers(0, 9, 500),
                       "c": rng.choice(["x", "y", "z"], 500).astype(object),
                       "d": rng.random(500) < 0.5, "e": rng.exponential(size=500)})
    tv = fitted(df, epochs=2)
    sizes = []
    decode = tv.model.decode_values

    def watched(z, *a, **k):
        sizes.append(len(z))
        return decode(z, *a, **k)
    tv.model.decode_values = watched
    excess = {}
    for n in (30_000, 300_000):
        tracemalloc.start()
        s = tv.sample(n, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        excess[n] = peak - s.memory_usage(deep=True, index=False).sum()
        del s
    assert max(sizes) <= sampling.CHUNK
    # seen: 9 MB at both sizes (the chunk's arrays); the frame grows by 40 MB in between
    assert excess[300_000] < excess[30_000] + 4e6, excess


def test_sample_with_given_conditions_builds_nothing_of_n_rows():
    """One value per condition is kept as one row and handed out chunk by chunk (the
    conditions not given are drawn chunk by chunk), so no frame of more than CHUNK rows
    is built for 10x the rows (a property of the frames' sizes, not a timing)."""
    rng = np.random.default_rng(5)
    n = 600
    df = pd.DataFrame({"g": rng.choice(["u", "v"], n), "h": rng.choice(["p", "q", "r"], n),
                       "a": rng.standard_normal(n)})
    tv = TabularVAE(hidden=(16,), latent_dim=3, backend="cpu").fit(
        df, conditions=["g", "h"], epochs=2, batch_size=64, progress=False)
    schema = tv.schema
    rows = []
    encode = schema.encode_conditions

    def watched(frame, *a, **k):
        rows.append(len(frame))
        return encode(frame, *a, **k)
    schema.encode_conditions = watched
    for given in ({"g": "v"}, {"g": "u", "h": "r"}, {"h": "p"}):
        rows.clear()
        s = tv.sample(3 * sampling.CHUNK + 5, conditions=given, seed=0)
        assert max(rows) <= sampling.CHUNK, (given, max(rows))
        for k, v in given.items():
            assert (s[k] == v).all()
        free = [c for c in ("g", "h") if c not in given]
        for c in free:  # drawn from the training shares
            assert s[c].nunique() > 1


def test_an_importance_weighted_score_still_adds_up():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(400)
    df = pd.DataFrame({"x": x, "y": x + 0.1 * rng.standard_normal(400),
                       "c": np.where(x > 0, "hi", "lo")})
    tv = fitted(df, epochs=10)
    for k in (None, 1, 8):
        sc = tv.score_samples(df.head(30), k=k, per_column=True)
        parts = sc["column"].sum(axis=1) + sc["kl"]
        assert ("importance" in sc) == (k is not None)
        if k is not None:
            parts = parts + sc["importance"]
        np.testing.assert_allclose(parts, sc["score"], rtol=1e-5, atol=1e-4)


def test_an_absurd_cell_is_blamed_on_its_own_column():
    rng = np.random.default_rng(4)
    n = 1500
    x = rng.standard_normal(n)
    df = pd.DataFrame({"mass": 4000 + 500 * x, "flipper": 200 + 10 * x + rng.normal(size=n),
                       "bill": 45 + 3 * x + rng.normal(size=n),
                       "kind": np.where(x > 0, "big", "small")})
    tv = fitted(df, epochs=80)
    rows = df.head(20).copy()
    span = df["mass"].max() - df["mass"].min()
    rows.loc[3, "mass"] = df["mass"].max() + 1000 * span
    sc = tv.score_samples(rows, per_column=True)
    parts = sc["column"]
    np.testing.assert_allclose(parts.sum(axis=1) + sc["kl"], sc["score"], rtol=1e-5,
                               atol=1e-3)
    assert parts.loc[3].idxmax() == "mass"
    assert parts.loc[3, "mass"] > 0.999 * sc.loc[3, ("score", "")]
    # the code reads the cell at its column's edge (the heaviest training mass): the KL
    # stays that of an ordinary row, and the other columns are blamed as much as an unusual
    # row's would be (tens of nats, where reading the absurd value made them millions)
    normal = sc.drop(index=3)
    assert sc.loc[3, ("kl", "")] < 3 * normal["kl"].max()
    for c in ("flipper", "bill", "kind"):
        assert parts.loc[3, c] < 100, (c, parts.loc[3, c])


def test_values_beyond_the_category_cap_come_back_by_their_frequencies(monkeypatch):
    """A column of more frequent values than MAX_CATEGORIES models the most frequent; the
    rest share a bucket, drawn as one of them by its training frequency (they are not
    rare: writing them is allowed), so the column's marginal is kept."""
    import importlib
    monkeypatch.setattr(importlib.import_module("fastvae.tabular.kinds"), "MAX_CATEGORIES", 4)
    rng = np.random.default_rng(5)
    vals = [f"v{i}" for i in range(10)]
    p = np.array([0.3, 0.2, 0.15, 0.1, 0.08, 0.06, 0.05, 0.03, 0.02, 0.01])
    df = pd.DataFrame({"v": rng.choice(vals, 4000, p=p), "x": rng.standard_normal(4000)})
    tv = fitted(df, epochs=10)
    col = tv.schema.columns[0]
    assert col.categories == ["v0", "v1", "v2", "v3"] and col.others == vals[4:]
    assert tv.model.config()["likelihood"][1]["classes"] == [5]
    s = tv.sample(20000, seed=0)
    freq = s["v"].value_counts(normalize=True).reindex(vals, fill_value=0).to_numpy()
    real = df["v"].value_counts(normalize=True).reindex(vals).to_numpy()
    np.testing.assert_allclose(freq, real, atol=0.02)  # seen: 0.012 at most
    assert RARE not in set(s["v"])
    # a row with one of the others scores as that bucket
    assert np.isfinite(tv.score_samples(df[df["v"] == "v9"].head(3))).all()


def test_numbers_of_few_values_come_back_as_those_values_at_their_rates():
    """A count of children (0..8, a quarter of rows 0): modelled as categories of numbers,
    its samples are its own values at their rates (a Gaussian on the quantile map gave 0
    40% of the samples where the data has 27%); a number of more values (up to
    DISCRETE_MAX, each seen often) samples only its own values too."""
    rng = np.random.default_rng(6)
    n = 6000
    p = np.array([0.27, 0.16, 0.25, 0.155, 0.08, 0.036, 0.019, 0.01, 0.02])
    childs = rng.choice(np.arange(9), n, p=p / p.sum()).astype(float)
    minute = rng.choice(np.arange(0, 60, 1), n)  # 60 values; more with DISCRETE_CATEGORIES=10
    df = pd.DataFrame({"childs": childs, "age": 20 + 3 * childs + rng.normal(0, 5, n),
                       "minute": minute, "w": rng.standard_normal(n)})
    df.loc[rng.random(n) < 0.02, "childs"] = np.nan
    tv = fitted(df, epochs=20)
    kinds = {c.name: (c.kind, c.support is not None) for c in tv.schema.columns}
    assert kinds["childs"] == ("categorical", False) and kinds["w"] == ("numeric", False)
    s = tv.sample(20000, seed=0)
    assert s["childs"].dtype == np.float64
    assert set(s["childs"].dropna()) <= set(df["childs"].dropna())
    real = df["childs"].value_counts(normalize=True)
    syn = s["childs"].value_counts(normalize=True).reindex(real.index, fill_value=0)
    np.testing.assert_allclose(syn, real, atol=0.02)  # seen: 0.01
    import importlib
    kinds_mod = importlib.import_module("fastvae.tabular.kinds")
    old = kinds_mod.DISCRETE_CATEGORIES
    kinds_mod.DISCRETE_CATEGORIES = 10
    try:
        tv2 = fitted(df, epochs=5)
    finally:
        kinds_mod.DISCRETE_CATEGORIES = old
    col = next(c for c in tv2.schema.columns if c.name == "minute")
    assert col.kind == "numeric" and col.support is not None
    assert set(tv2.sample(3000, seed=0)["minute"]) <= set(range(60))


def test_the_quantile_map_keeps_empty_stretches_empty():
    """Times of business hours (9:00-17:59) over 300 days: the 15 empty hours of each night
    fall inside the quantile map's knot intervals, and interpolating across them put a
    third of the samples at night.  Knots at the ends of such gaps keep them empty; the
    map still sends every training value back to itself, and a column without empty
    stretches keeps (nearly) its plain knots."""
    from fastvae.tabular import transforms
    rng = np.random.default_rng(5)
    n = 30000
    t = (rng.integers(0, 300, n) * 86400 + rng.integers(9 * 3600, 18 * 3600, n)).astype(float)
    m = transforms.QuantileNormal.fit(t)
    assert np.all(np.diff(m.q) >= 0) and np.all(np.diff(m.z) > 0)
    np.testing.assert_allclose(m.inverse(m.forward(t)), t, rtol=0, atol=1e-6)
    hour = (m.inverse(rng.standard_normal(100000)) % 86400) // 3600
    assert np.mean((hour < 9) | (hour > 17)) < 0.01
    plain = transforms.QuantileNormal.fit(rng.standard_normal(n))
    assert plain.q.size <= 1.1 * transforms.N_KNOTS


def test_a_timestamp_of_business_hours_is_sampled_in_business_hours():
    """The same through a table: a date-time text column with no calendar columns beside
    it comes back in its own hours."""
    rng = np.random.default_rng(6)
    n = 6000
    t = pd.Timestamp("2024-01-01") + pd.to_timedelta(
        rng.integers(0, 200, n) * 86400 + rng.integers(9 * 60, 18 * 60, n) * 60, unit="s")
    df = pd.DataFrame({"at": t.strftime("%Y-%m-%d %H:%M"), "x": rng.standard_normal(n)})
    s = fitted(df, epochs=5).sample(5000, seed=0)
    hour = pd.to_datetime(s["at"]).dt.hour
    assert hour.between(9, 17).mean() > 0.98


@pytest.mark.parametrize("freq,first", [("MS", "month"), ("YS", "year")])
def test_monthly_and_yearly_dates_stay_on_the_first(freq, first, tmp_path):
    """A column of firsts of months (a monthly series) or of years: samples are firsts of
    months (of years) too, as text and as datetime64, and the rule survives save and
    load.  Times that are not all firsts keep the day unit."""
    rng = np.random.default_rng(13)
    n = 600 if first == "month" else 200  # (years within datetime64[ns]: 1967-2166)
    t = pd.Series(pd.date_range("1967-07-01", periods=n, freq=freq))
    df = pd.DataFrame({"when": t, "as_text": t.dt.strftime("%Y-%m-%d"),
                       "x": rng.standard_normal(n).cumsum()})
    tv = fitted(df, epochs=3)
    s = tv.sample(2000, seed=0)
    back = tabular.load(tv.save(tmp_path / "c.npz")).sample(500, seed=1)
    for col in (s["when"], pd.to_datetime(s["as_text"]), back["when"]):
        assert (col.dt.day == 1).all()
        if first == "year":
            assert (col.dt.month == 1).all()
    assert s["when"].dtype == df["when"].dtype
    daily = pd.DataFrame({"when": pd.Series(pd.date_range("2020-01-01", periods=n,
                                                          freq="D")),
                          "x": rng.standard_normal(n)})
    assert (fitted(daily, epochs=3).sample(2000, seed=0)["when"].dt.day != 1).mean() > 0.5
    from fastvae.tabular.transforms import round_calendar
    ns = pd.to_datetime(["2023-02-14 01:00", "2023-02-15 01:00", "1955-12-20 00:00",
                         "1955-06-30 00:00"]
                        ).to_numpy().astype("datetime64[ns]").astype(np.int64).astype(float)
    got = pd.to_datetime(round_calendar(ns, "month").astype(np.int64), unit="ns")
    assert [str(t.date()) for t in got] == ["2023-02-01", "2023-03-01", "1956-01-01",
                                            "1955-07-01"]
    got = pd.to_datetime(round_calendar(ns[2:], "year").astype(np.int64), unit="ns")
    assert [str(t.date()) for t in got] == ["1956-01-01", "1955-01-01"]


def test_sampled_class_shares_are_the_tables(monkeypatch):
    """After training, the categorical biases are shifted so that the class shares of
    samples are the training rows' (fastvae.tabular.calibrate): far closer than the
    decoder alone gives them after a short fit, and what the decoder says of how the
    columns go together is kept (a class's logit moves by the same amount in every row)."""
    from fastvae.tabular import calibrate
    rng = np.random.default_rng(14)
    n = 4000
    a = rng.choice(["x", "y", "z", "w"], n, p=[0.55, 0.25, 0.15, 0.05])
    b = np.where(rng.random(n) < 0.8, a, rng.choice(["x", "y", "z", "w"], n))
    df = pd.DataFrame({"a": a, "b": b, "v": rng.standard_normal(n)})
    want = df["a"].value_counts(normalize=True)

    def error(tv):
        s = tv.sample(40000, seed=0)
        got = s["a"].value_counts(normalize=True).reindex(want.index, fill_value=0)
        return float(np.abs(got - want).max()), float((s["a"] == s["b"]).mean())

    err, same = error(fitted(df, epochs=2))
    monkeypatch.setattr(calibrate, "ROUNDS", 0)
    raw, raw_same = error(fitted(df, epochs=2))
    assert err < 0.01 < raw
    assert abs(same - raw_same) < 0.05  # (how often a and b agree: the decoder's, kept)

    model = fitted(df, epochs=1).model_
    z = np.zeros((3, model.latent_dim), np.float32)
    P = model.columns.P
    np.testing.assert_array_equal(model.decode(z, shift=np.zeros(P)), model.decode(z))
    for bad in (np.zeros(P - 1), np.full(P, np.nan)):
        with pytest.raises(ValueError, match=f"shift must be {P} finite values"):
            model.decode(z, shift=bad)
    with pytest.raises(ValueError, match="shift is for block models"):
        fastvae.VAE(6, (4,), 2, backend="numpy").decode(np.zeros((1, 2), np.float32),
                                                        shift=np.zeros(6))


def test_relations_that_hold_on_every_row_hold_in_samples(tmp_path):
    """internet = 'no' -> addon = 'no internet' on every training row, and plan ->
    price (each plan one price): kept exactly in samples (fastvae.tabular.rules), saved with
    the model; rules=False leaves the cells as the decoder draws them."""
    rng = np.random.default_rng(7)
    n = 3000
    internet = rng.choice(["no", "dsl", "fiber"], n, p=[0.2, 0.4, 0.4])
    addon = np.where(internet == "no", "no internet", rng.choice(["yes", "no"], n))
    plan = rng.choice(["basic", "plus", "pro", "max"], n)
    price = pd.Series(plan).map({"basic": 9.99, "plus": 19.99, "pro": 29.99, "max": 49.99})
    df = pd.DataFrame({"internet": internet, "addon": addon, "plan": plan, "price": price,
                       "x": rng.standard_normal(n)})
    tv = fitted(df, epochs=3)
    found = {(a, b) for a, b, _ in tv.rules_}
    assert ("internet", "addon") in found and ("plan", "price") in found
    assert not any(b == "x" for _, b in found)
    s = tv.sample(5000, seed=0)
    assert (s.loc[s["internet"] == "no", "addon"] == "no internet").all()
    assert (s.groupby("plan")["price"].nunique() == 1).all()
    assert (s["price"] == s["plan"].map({"basic": 9.99, "plus": 19.99, "pro": 29.99,
                                         "max": 49.99})).all()
    back = tabular.load(tv.save(tmp_path / "m.npz"))
    pd.testing.assert_frame_equal(back.sample(500, seed=1), tv.sample(500, seed=1))
    loose = fitted(df, epochs=3, rules=False)
    assert loose.rules_ == []


def test_a_column_fixed_by_several_columns_together_keeps_that_relation(tmp_path):
    """fee is a function of (region, tier) and of neither alone (a price table), and
    fixes neither (region is a function of (fee, tier) as well): a key rule over the three
    keeps the relation exactly in samples; saved with the model."""
    from test_rules_wide import fees  # (the table the rule search's tests share)
    df = fees()
    tv = fitted(df, epochs=3)
    keyed = [r for r in tv.rules_ if isinstance(r[0], list)]
    assert [sorted(a + [b]) for a, b, _ in keyed] == [["fee", "region", "tier"]]
    s = tv.sample(3000, seed=0)
    table = df.groupby(["region", "tier"])["fee"].first().to_dict()  # (the price table)
    want = np.array([table[(r, t)] for r, t in zip(s["region"], s["tier"])])
    assert (s["fee"].to_numpy() == want).all()
    back = tabular.load(tv.save(tmp_path / "k.npz"))
    pd.testing.assert_frame_equal(back.sample(500, seed=1), tv.sample(500, seed=1))
    assert not [r for r in fitted(df, epochs=1, rules=False).rules_]
    # one row off the relation (the hour a daylight-saving change repeats has two
    # timestamps): the rule holds on the other groups, and that row's group is left alone
    odd = df.copy()
    odd.loc[0, "fee"] = 99.0
    keyed = [r for r in fitted(odd, epochs=1).rules_ if isinstance(r[0], list)]
    assert [sorted(a + [b]) for a, b, _ in keyed] == [["fee", "region", "tier"]]
    a, b, pairs = keyed[0]
    row = odd.loc[0]
    assert [row[c] for c in a] not in [p[0] for p in pairs]


def menu(n=4000, seed=13):
    """A pizza shop's orders: price is a function of (name, size); a name sold in one size
    fixes its price alone (value rules name -> price), and some prices belong to one size
    only (value rules price -> size, which close a cycle with the key)."""
    rng = np.random.default_rng(seed)
    names = [f"p{i}" for i in range(8)]
    sizes = {nm: (["M"] if i < 2 else ["S", "M", "L"]) for i, nm in enumerate(names)}
    # (names share prices: no price fixes a name)
    price = {(nm, sz): 10.0 + i % 3 + {"S": 0.0, "M": 4.25, "L": 9.5}[sz]
             for i, nm in enumerate(names) for sz in sizes[nm]}
    name = rng.choice(names, n)
    size = np.array([rng.choice(sizes[nm]) for nm in name])
    return pd.DataFrame({"name": name, "size": size,
                         "price": [price[(a, b)] for a, b in zip(name, size)],
                         "x": rng.standard_normal(n)})


def test_a_key_rule_sets_a_column_that_value_rules_also_read_and_set(tmp_path):
    """price is set by value rules (a name sold in one size) and read by others (a price
    only one size has): the key rule (name, size) -> price is kept all the same, after
    the value rules price -> size (which read the price as drawn), and every sampled
    price is its name's and size's, every size its price's; saved with the model."""
    df = menu()
    tv = fitted(df, epochs=3)
    keyed = [r for r in tv.rules_ if isinstance(r[0], list)]
    assert [(sorted(a), b) for a, b, _ in keyed] == [(["name", "size"], "price")]
    where = {(str(r[0]), r[1]): i for i, r in enumerate(tv.rules_)}
    assert where[("price", "size")] < where[(str(keyed[0][0]), "price")]
    assert ("name", "price") in where
    s = tv.sample(4000, seed=0)
    table = df.groupby(["name", "size"])["price"].first()
    got = s.join(table.rename("want"), on=["name", "size"])
    assert got["want"].notna().mean() > 0.99
    seen = got["want"].notna()
    assert (got.loc[seen, "price"] == got.loc[seen, "want"]).all()
    one = df.groupby("price")["size"].agg(lambda v: v.iloc[0] if v.nunique() == 1 else None)
    want = s["price"].map(one.dropna())
    assert (s.loc[want.notna(), "size"] == want[want.notna()]).all()
    back = tabular.load(tv.save(tmp_path / "menu.npz"))
    pd.testing.assert_frame_equal(back.sample(500, seed=1), tv.sample(500, seed=1))


def test_a_rule_set_column_keeps_its_shares():
    """A value rule (failures = 0 -> bankrupt = 0) overwrites the column it sets on the rows
    where its key holds; the calibration fits that column's shares among the rows no rule
    sets, so the sampled shares stay the table's even where the decoder did not learn
    the relation (it drew bankrupt = 1 beside failures = 0, and the rule took it away)."""
    rng = np.random.default_rng(8)
    n = 3000
    failures = np.where(rng.random(n) < 0.85, 0, rng.integers(1, 4, n))
    bankrupt = np.where(failures == 0, 0, (rng.random(n) < 0.8).astype(int))
    df = pd.DataFrame({"failures": failures, "bankrupt": bankrupt,
                       "x": rng.standard_normal(n), "y": rng.standard_normal(n)})
    tv = fitted(df, epochs=2)
    assert any(r[:2] == ["failures", "bankrupt"] for r in tv.rules_)
    s = tv.sample(20000, seed=0)
    assert (s.loc[s["failures"] == 0, "bankrupt"] == 0).all()
    assert abs((s["bankrupt"] == 1).mean() - (df["bankrupt"] == 1).mean()) < 0.02
    assert abs((s["failures"] > 0).mean() - (df["failures"] > 0).mean()) < 0.02


def test_a_key_of_tiny_groups_is_not_a_rule():
    """Any column is a function of enough columns when their groups hold a row or two:
    with most rows in groups below RARE_MIN rows there is no key rule."""
    rng = np.random.default_rng(12)
    n = 600
    df = pd.DataFrame({"a": rng.integers(0, 30, n), "b": rng.integers(0, 30, n),
                       "v": rng.integers(0, 1000, n).astype(str)})
    tv = fitted(df, epochs=1)
    assert not [r for r in tv.rules_ if isinstance(r[0], list)]


def test_a_relation_that_holds_by_chance_is_not_a_rule():
    """Groups of a few rows agree on a common value by chance: no rule (the chance of the
    agreement under the column's own frequencies must be below rules.ALPHA)."""
    rng = np.random.default_rng(8)
    n = 400
    df = pd.DataFrame({"g": rng.integers(0, 60, n).astype(str),
                       "flag": rng.choice(["y", "n"], n, p=[0.9, 0.1]),
                       "x": rng.standard_normal(n)})
    tv = fitted(df, epochs=1)
    assert not [r for r in tv.rules_ if r[1] == "flag"]


def test_zoned_times_keep_their_wall_clock_unit(tmp_path):
    """A zoned date column holds local midnights, whose UTC times are 4 or 5 hours past
    midnight across a clock change, and India's whole hours are half past in UTC: samples
    are rounded on the zone's wall clock (US/Eastern dates: 22% of samples were at local
    midnight; Asia/Kolkata hours: 2% on the hour), and come back in the zone; saved."""
    rng = np.random.default_rng(0)
    n = 1500
    base = pd.Timestamp("2019-01-01")
    days = base + pd.to_timedelta(rng.integers(0, 900, n), unit="D")
    hours = base + pd.to_timedelta(rng.integers(0, 900 * 24, n), unit="h")
    df = pd.DataFrame({"day": days.tz_localize("US/Eastern"),
                       "hour": hours.tz_localize("Asia/Kolkata"),
                       "month": days.to_period("M").to_timestamp().tz_localize("Europe/Berlin"),
                       "x": rng.standard_normal(n)})
    tv = fitted(df, epochs=10)
    s = tv.sample(3000, seed=0)
    for c in df.columns[:3]:
        assert s[c].dtype == df[c].dtype
        assert ((s[c] >= df[c].min()) & (s[c] <= df[c].max())).all()
    assert (s["day"].dt.hour.eq(0) & s["day"].dt.minute.eq(0)).all()
    assert (s["hour"].dt.minute.eq(0) & s["hour"].dt.second.eq(0)).all()
    assert (s["month"].dt.day.eq(1) & s["month"].dt.hour.eq(0)).all()
    assert s["day"].nunique() > 300  # (not snapped to a few values)
    back = tabular.load(tv.save(tmp_path / "tz.npz"))
    pd.testing.assert_frame_equal(back.sample(300, seed=1), tv.sample(300, seed=1))


def test_wall_clock_times_round_trip_through_clock_changes():
    """Both instants of a repeated wall time come back as themselves (the one nearer the
    time before rounding); a skipped wall time moves to the change's end."""
    from fastvae.tabular.values import wall_times, zoned_times
    ns = np.array(["2024-11-03T05:30", "2024-11-03T06:30", "2024-03-10T07:00",
                   "2024-06-01T04:00"], dtype="datetime64[ns]").astype(np.int64)
    wall = wall_times(ns, "US/Eastern", pd)
    assert wall[0] == wall[1]  # (01:30 twice)
    np.testing.assert_array_equal(zoned_times(wall, "US/Eastern", pd, near=ns), ns)
    skipped = np.array(["2024-03-10T02:30"], dtype="datetime64[ns]").astype(np.int64)
    assert zoned_times(skipped, "US/Eastern", pd)[0] == \
        np.datetime64("2024-03-10T07:00", "ns").astype(np.int64)


def test_a_zoned_column_saved_before_the_wall_clock_rounds_as_it_did():
    """A column config without ``wall`` (saved before it) keeps its unit on UTC times."""
    rng = np.random.default_rng(1)
    days = pd.Timestamp("2019-01-01") + pd.to_timedelta(rng.integers(0, 400, 300), unit="D")
    df = pd.DataFrame({"day": days.tz_localize("US/Eastern"), "x": rng.standard_normal(300)})
    tv = fitted(df, epochs=2)
    col = next(c for c in tv.schema_.columns if c.name == "day")
    assert col.wall is True
    old = dict(col.config())
    old.pop("wall")
    old["unit"] = 3_600 * 10**9  # (local midnights are 4 or 5 AM UTC: an hour on UTC)
    from fastvae.tabular.column import Column
    before = Column.from_config(old)
    assert before.wall is None
    u = np.array([0.0, 3.6e12 * 7.4, 3.6e12 * 30.2])  # (offsets from lo, ns)
    hours = np.rint(u / 3.6e12).astype(np.int64) * 3_600 * 10**9
    np.testing.assert_array_equal(before.finish(u, "fit"), before.lo + hours)
    now = col.finish(u, "fit")  # (the wall clock's day: local midnights)
    assert (pd.to_datetime(now).tz_localize("UTC").tz_convert("US/Eastern").hour == 0).all()
