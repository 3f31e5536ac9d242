"""fastvae.tabular (issue 20): TabularVAE on pandas tables, CSV and Parquet files.

Small models (one hidden layer of 32, a latent of 4), a few hundred to a few thousand rows
and at most a hundred epochs on the cpu backend: the whole file runs in seconds.  The
statistical tolerances were checked on several seeds and hold with a wide margin.
"""
import pickle

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import fastvae.tabular as tabular  # noqa: E402
from fastvae.tabular import TableError, TabularVAE  # noqa: E402

NUMERIC = ["x1", "x2", "x3"]


def tvae(**kw):
    kw.setdefault("hidden", (32,))
    kw.setdefault("latent_dim", 4)
    kw.setdefault("backend", "cpu")
    return TabularVAE(**kw)


def fit(tv, df, epochs=100, batch_size=128, **kw):
    return tv.fit(df, epochs=epochs, batch_size=batch_size, progress=False, **kw)


def structured(rng, n):
    """x1 ~ N(0, 1), x2 = 2 x1 + noise, x3 = -x1 + noise, c = the sign of x1."""
    x1 = rng.standard_normal(n)
    return pd.DataFrame({"x1": x1, "x2": 2 * x1 + 0.1 * rng.standard_normal(n),
                         "x3": -x1 + 0.1 * rng.standard_normal(n),
                         "c": np.where(x1 > 0, "pos", "neg")})


def every_dtype(n=400, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "f64": rng.normal(10, 2, n),
        "f32": rng.normal(0, 1, n).astype(np.float32),
        "i64": rng.integers(0, 100, n).astype(np.int64),
        "I64": pd.array(rng.integers(-5, 5, n), dtype="Int64"),
        "flag": rng.random(n) < 0.3,
        # categories in their own (non-alphabetical) order, one of them never seen
        "size": pd.Categorical(rng.choice(["lo", "mid", "hi"], n),
                               categories=["lo", "mid", "hi", "huge"], ordered=True),
        "name": rng.choice(["ann", "bob", "cy"], n).astype(object),
        "day": pd.to_datetime("2020-01-01") + pd.to_timedelta(rng.integers(0, 365, n),
                                                               unit="D"),
        "when": (pd.to_datetime("2021-06-01 12:00")
                 + pd.to_timedelta(rng.integers(0, 1000, n), unit="h")
                 ).tz_localize("Europe/Paris"),
        "took": pd.to_timedelta(rng.integers(1, 600, n), unit="m"),
        "gappy": np.where(rng.random(n) < 0.2, np.nan, rng.normal(0, 1, n)),
    })
    df.loc[rng.random(n) < 0.1, "I64"] = pd.NA
    return df


RANGED = ["f64", "f32", "i64", "I64", "day", "when", "took", "gappy"]


def assert_like(s, df, n):
    """s is a synthetic table shaped as the training table df."""
    assert len(s) == n
    assert list(s.columns) == list(df.columns)
    assert list(s.dtypes) == list(df.dtypes), (s.dtypes, df.dtypes)
    for c in df.columns:  # gaps only where the training table has them
        assert df[c].isna().any() or not s[c].isna().any(), c
    assert list(s["size"].cat.categories) == ["lo", "mid", "hi", "huge"]
    assert s["size"].cat.ordered
    assert set(s["name"]) <= {"ann", "bob", "cy"}
    assert set(s["flag"]) <= {False, True}
    for c in RANGED:
        assert s[c].min() >= df[c].min() and s[c].max() <= df[c].max(), c
    for c in ["i64", "I64"]:
        assert pd.api.types.is_integer_dtype(s[c].dtype)
    assert (s["day"] == s["day"].dt.normalize()).all()  # dates stay dates
    assert str(s["when"].dt.tz) == "Europe/Paris"


# ------------------------------------------------------------------ schema round trip
@pytest.fixture(scope="module")
def every_model():
    df = every_dtype()
    return df, fit(tvae(seed=0), df, epochs=5, batch_size=64)


def test_schema_round_trip(every_model, tmp_path):
    df, tv = every_model
    s = tv.sample(300, seed=1)
    assert_like(s, df, 300)

    loaded = tabular.load(tv.save(tmp_path / "every.npz"))
    s2 = loaded.sample(300, seed=1)
    assert_like(s2, df, 300)
    pd.testing.assert_frame_equal(s2, s, check_exact=True)

    unpickled = pickle.loads(pickle.dumps(tv))
    s3 = unpickled.sample(300, seed=1)
    assert_like(s3, df, 300)
    pd.testing.assert_frame_equal(s3, s, check_exact=True)


def test_sample_is_a_valid_table_and_reproducible():
    rng = np.random.default_rng(1)
    df = structured(rng, 600)
    df["k"] = rng.choice(["a", "b", "c"], len(df))
    tv = fit(tvae(seed=1), df, epochs=10)
    s = tv.sample(500, seed=3)
    assert list(s.columns) == list(df.columns)
    assert not s.isna().any().any()
    assert set(s["c"]) <= {"pos", "neg"} and set(s["k"]) <= {"a", "b", "c"}
    pd.testing.assert_frame_equal(tv.sample(500, seed=3), s, check_exact=True)
    other = tv.sample(500, seed=4)
    for c in NUMERIC:
        assert not np.array_equal(other[c].to_numpy(), s[c].to_numpy())
    assert not other["k"].equals(s["k"])


# ------------------------------------------------------------------ marginals
@pytest.mark.parametrize("seed", [0, 1])
def test_marginals_are_kept(seed):
    rng = np.random.default_rng(seed)
    n, cats, p = 3000, ["a", "b", "c", "d"], np.array([0.5, 0.25, 0.15, 0.1])
    df = pd.DataFrame({"amount": rng.lognormal(0.0, 1.0, n), "kind": rng.choice(cats, n, p=p),
                       "z": rng.standard_normal(n)})
    tv = fit(tvae(seed=seed), df, epochs=50)
    s = tv.sample(5000, seed=seed)
    qs = [0.1, 0.5, 0.9]
    real, synth = np.quantile(df["amount"], qs), np.quantile(s["amount"], qs)
    # the skewed column: each quantile within 15% (seen: 3.5% at most)
    np.testing.assert_allclose(np.log(synth / real), 0.0, atol=0.15)
    np.testing.assert_allclose(np.quantile(s["z"], qs), np.quantile(df["z"], qs), atol=0.15)
    freq = s["kind"].value_counts(normalize=True).reindex(cats, fill_value=0.0).to_numpy()
    real_freq = df["kind"].value_counts(normalize=True).reindex(cats).to_numpy()
    np.testing.assert_allclose(freq, real_freq, atol=0.04)  # seen: 1.5 points at most


# ------------------------------------------------------------------ impute and scores
@pytest.fixture(scope="module")
def structured_model():
    rng = np.random.default_rng(0)
    df = structured(rng, 2000)
    return df, fit(tvae(seed=0, missing=True), df, epochs=100)


def with_gaps(df, rng, frac=0.1, cols=NUMERIC):
    gappy, mask = df.copy(), rng.random((len(df), len(cols))) < frac
    for j, c in enumerate(cols):
        gappy.loc[mask[:, j], c] = np.nan
    return gappy, mask


def test_impute_beats_the_column_mean(structured_model):
    df, tv = structured_model
    gappy, mask = with_gaps(df, np.random.default_rng(5))
    filled = tv.impute(gappy)
    assert list(filled.columns) == list(df.columns) and not filled.isna().any().any()
    for j, c in enumerate(NUMERIC):
        gap = mask[:, j]
        assert gap.sum() > 100
        # observed cells are kept exactly
        np.testing.assert_array_equal(filled[c].to_numpy()[~gap], df[c].to_numpy()[~gap])
        truth = df[c].to_numpy()[gap]
        rmse = np.sqrt(np.mean((filled[c].to_numpy()[gap] - truth) ** 2))
        base = np.sqrt(np.mean((gappy[c].mean() - truth) ** 2))
        # seen 0.37-0.52 over four seeds (the model never saw a gap in training)
        assert rmse < 0.7 * base, (c, rmse, base)
    assert filled["c"].equals(df["c"])
    pd.testing.assert_frame_equal(tv.impute(gappy), filled, check_exact=True)


def test_impute_with_a_seed_draws(structured_model):
    df, tv = structured_model
    gappy, mask = with_gaps(df.head(500), np.random.default_rng(6))
    a, b, other = tv.impute(gappy, seed=1), tv.impute(gappy, seed=1), tv.impute(gappy, seed=2)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for j, c in enumerate(NUMERIC):
        gap = mask[:, j]
        assert not a[c].isna().any()
        np.testing.assert_array_equal(a[c].to_numpy()[~gap], df[c].to_numpy()[:500][~gap])
        np.testing.assert_array_equal(other[c].to_numpy()[~gap], df[c].to_numpy()[:500][~gap])
        assert not np.array_equal(a[c].to_numpy()[gap], other[c].to_numpy()[gap])


def test_impute_needs_the_mask():
    df = structured(np.random.default_rng(2), 300)
    tv = fit(tvae(missing=False), df, epochs=2)
    gappy, _ = with_gaps(df, np.random.default_rng(3))
    with pytest.raises(TableError, match="has missing cells.*missing=True"):
        tv.impute(gappy)
    # (a table with no gaps: nothing to fill, the table back as it was)
    pd.testing.assert_frame_equal(tv.impute(df.head(50)), df.head(50))


def planted(rng, held_out=300, n_bad=10):
    """held-out normal rows, then n_bad rows where x2 = -2 x1 (x1, x3 and c agree)."""
    bad = structured(rng, n_bad)
    x1 = rng.choice([-1.0, 1.0], n_bad) * rng.uniform(1.0, 2.0, n_bad)
    bad["x1"], bad["x3"] = x1, -x1 + 0.1 * rng.standard_normal(n_bad)
    bad["c"], bad["x2"] = np.where(x1 > 0, "pos", "neg"), -2 * x1
    return pd.concat([structured(rng, held_out), bad], ignore_index=True)


def test_score_samples_ranks_planted_outliers(structured_model):
    _, tv = structured_model
    rows = planted(np.random.default_rng(7))
    bad = np.arange(len(rows)) >= 300
    score = tv.score_samples(rows)
    assert isinstance(score, pd.Series) and score.index.equals(rows.index)
    assert np.isfinite(score).all()
    rank = score.rank(ascending=False).to_numpy()  # 1: the least likely row
    assert rank[bad].mean() <= 15, rank[bad]  # seen: exactly the top 10
    assert score[bad].min() > np.quantile(score[~bad], 0.9)

    pc = tv.score_samples(rows, per_column=True)
    assert list(pc.columns) == [("score", ""), ("column", "x1"), ("column", "x2"),
                                ("column", "x3"), ("column", "c"), ("kl", "")]
    np.testing.assert_allclose(pc["score"], score, rtol=0, atol=0)
    top = pc["column"].idxmax(axis=1)[bad]
    assert (top == "x2").mean() >= 0.7, top.tolist()
    # the engine's split: the column shares plus the KL are the negative ELBO
    np.testing.assert_allclose(pc["column"].sum(axis=1) + pc["kl"], pc["score"],
                               rtol=1e-5, atol=1e-4)
    assert (pc["kl"] >= 0).all()


# ------------------------------------------------------------------ conditions
@pytest.fixture(scope="module")
def batch_model():
    rng = np.random.default_rng(0)
    n = 2000
    batch = np.where(rng.random(n) < 0.5, "A", "B")
    x = rng.standard_normal(n)
    df = pd.DataFrame({"batch": batch, "x": x,
                       "y": x + 0.3 * rng.standard_normal(n) + 3.0 * (batch == "B")})
    return df, fit(tvae(seed=0), df, conditions="batch")


def test_conditions_shift_samples(batch_model):
    df, tv = batch_model
    a, b = tv.sample(2000, conditions="A", seed=0), tv.sample(2000, conditions="B", seed=0)
    for s, value in ((a, "A"), (b, "B")):
        assert list(s.columns) == ["batch", "x", "y"]
        assert (s["batch"] == value).all()
    assert abs(a["y"].mean() - df.loc[df.batch == "A", "y"].mean()) < 0.3
    assert abs(b["y"].mean() - df.loc[df.batch == "B", "y"].mean()) < 0.3
    assert abs(b["y"].mean() - a["y"].mean() - 3.0) < 0.4
    assert abs(b["x"].mean() - a["x"].mean()) < 0.2
    # drawn from the training marginal when not given
    assert set(tv.sample(200, seed=0)["batch"]) == {"A", "B"}


def test_reconstruct_counterfactual(batch_model):
    df, tv = batch_model
    rows = df[df.batch == "A"].head(500)
    same = tv.reconstruct(rows)
    moved = tv.reconstruct(rows, conditions="B")
    assert moved.index.equals(rows.index) and (moved["batch"] == "B").all()
    assert (same["batch"] == "A").all()
    assert abs((same["y"] - rows["y"]).mean()) < 0.3
    assert abs((moved["y"] - rows["y"]).mean() - 3.0) < 0.4  # seen: 2.91-3.04
    assert abs((moved["x"] - rows["x"]).mean()) < 0.3


def test_injected_conditions_move_the_counterfactual_and_survive_save(batch_model, tmp_path):
    """TabularVAE(encode_conditions=False, inject_conditions=True), scVI's setting with the
    condition in every decoder layer: decoding rows of batch A as batch B moves y by the
    batch effect (3) and x not at all, and a saved model loads with the setting and gives
    the same reconstruction."""
    df, _ = batch_model
    tv = fit(tvae(seed=1, encode_conditions=False, inject_conditions=True), df,
             conditions="batch")
    assert tv.model.inject_conditions and not tv.model.encode_conditions
    rows = df[df.batch == "A"].head(500)
    moved = tv.reconstruct(rows, conditions="B")
    assert abs((moved["y"] - rows["y"]).mean() - 3.0) < 0.4
    assert abs((moved["x"] - rows["x"]).mean()) < 0.3
    back = tabular.load(tv.save(tmp_path / "t.npz"))
    assert back.model.inject_conditions
    pd.testing.assert_frame_equal(back.reconstruct(rows, conditions="B"), moved)
    with pytest.raises(TableError, match="inject_conditions=True .*conditions=COLUMN"):
        fit(tvae(inject_conditions=True), df[["x", "y"]], epochs=0)
    with pytest.raises(TableError, match="encode_conditions=False keeps the condition "
                                         "columns out of the encoder, but none was given"):
        fit(tvae(encode_conditions=False), df[["x", "y"]], epochs=0)


def test_unseen_condition_is_an_error(batch_model):
    df, tv = batch_model
    with pytest.raises(TableError, match="'batch'"):
        tv.sample(10, conditions="C")
    with pytest.raises(TableError, match="'batch'"):
        tv.reconstruct(df.head(5), conditions="C")
    with pytest.raises(TableError, match="'batch'"):
        tv.score_samples(df.head(5).assign(batch="C"))


def test_latent_codes_carry_little_of_the_batch(batch_model):
    df, tv = batch_model
    z = tv.transform(df)
    assert z.shape == (len(df), 4)
    label = (df["batch"] == "B").to_numpy()
    train = np.arange(len(df)) < len(df) // 2
    ca, cb = z[train & ~label].mean(0), z[train & label].mean(0)
    pred = ((z - cb) ** 2).sum(1) < ((z - ca) ** 2).sum(1)
    accuracy = (pred[~train] == label[~train]).mean()
    # a nearest-centroid classifier in latent space: seen 0.49-0.51 over four seeds (the
    # same table without the condition: 0.66)
    assert accuracy < 0.6, accuracy


def test_given_condition_keeps_its_training_dtype():
    """sample's docstring: the columns have the training table's dtypes and categories,
    condition columns included, whether conditions are drawn or given."""
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"batch": pd.Categorical(rng.choice(["A", "B"], n)),
                       "x": rng.standard_normal(n)})
    tv = fit(tvae(), df, conditions="batch", epochs=2)
    s = tv.sample(20, conditions="B", seed=0)
    assert (s["batch"] == "B").all()
    assert s["batch"].dtype == df["batch"].dtype, s["batch"].dtype


@pytest.mark.parametrize("column, given, want", [
    ("age", 30, 30.0), ("kids", {"kids": 2}, 2), ("since", "2020-02-01",
                                                   pd.Timestamp("2020-02-01", tz="UTC")),
    ("local", "2020-02-01 12:00", pd.Timestamp("2020-02-01 12:00", tz="America/New_York")),
    ("local", pd.Timestamp("2020-02-01 17:00", tz="UTC"),
     pd.Timestamp("2020-02-01 12:00", tz="America/New_York"))])
def test_a_given_numeric_or_time_condition_takes_the_training_dtype(column, given, want):
    """A number or time given as a condition comes back in the training column's dtype
    (float64, Int64, a zoned datetime), not in the given value's (int, str); a time
    given without a zone is a time in the column's zone."""
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"age": rng.uniform(20, 60, n), "x": rng.standard_normal(n),
                       "kids": pd.array(rng.integers(0, 60, n), dtype="Int64"),
                       "since": pd.Timestamp("2020-01-01", tz="UTC")
                       + pd.to_timedelta(rng.integers(0, 100, n), unit="D"),
                       "local": pd.Timestamp("2020-01-01", tz="America/New_York")
                       + pd.to_timedelta(rng.integers(0, 100, n), unit="D")})
    tv = fit(tvae(), df, conditions=column, epochs=2)
    s = tv.sample(5, conditions=given, seed=0)
    assert s[column].dtype == df[column].dtype, (s[column].dtype, df[column].dtype)
    assert (s[column] == want).all()
    r = tv.reconstruct(df.head(3), conditions=given)
    assert r[column].dtype == df[column].dtype


# ------------------------------------------------------------------ save and load
def test_save_load_is_exact_and_training_continues(tmp_path):
    rng = np.random.default_rng(0)
    df = structured(rng, 600)
    df["batch"] = rng.choice(["A", "B"], len(df))
    tv = fit(tvae(seed=2), df, conditions="batch", epochs=3, batch_size=64)
    loaded = tabular.load(tv.save(tmp_path / "m.npz"))
    pd.testing.assert_series_equal(loaded.score_samples(df), tv.score_samples(df),
                                   check_exact=True)
    pd.testing.assert_frame_equal(loaded.score_samples(df, per_column=True),
                                  tv.score_samples(df, per_column=True), check_exact=True)
    np.testing.assert_array_equal(loaded.transform(df), tv.transform(df))
    pd.testing.assert_frame_equal(loaded.sample(200, seed=5), tv.sample(200, seed=5),
                                  check_exact=True)
    pd.testing.assert_frame_equal(loaded.sample(50, conditions="B", seed=5),
                                  tv.sample(50, conditions="B", seed=5), check_exact=True)

    before = loaded.score_samples(df)
    tv.fit(df, epochs=2, progress=False)
    loaded.fit(df, epochs=2, progress=False)
    assert len(loaded.history) == 5
    assert not loaded.score_samples(df).equals(before)  # it trained
    # and exactly as the original went on
    pd.testing.assert_series_equal(loaded.score_samples(df), tv.score_samples(df),
                                   check_exact=True)
    pd.testing.assert_frame_equal(loaded.sample(100, seed=1), tv.sample(100, seed=1),
                                  check_exact=True)


# ------------------------------------------------------------------ bad tables
@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    n = 200
    x = rng.standard_normal(n)
    return pd.DataFrame({"x": x, "y": x + 0.3 * rng.standard_normal(n),
                         "c": rng.choice(["u", "v", "w"], n)})


def _with(df, **cols):
    return df.assign(**cols)


BAD_FITS = {
    "complex": (lambda df: _with(df, z=df["x"] + 1j * df["y"]), {}, "'z'"),
    "str-and-int": (lambda df: _with(df, mix=pd.Series(["a", 1] * (len(df) // 2),
                                                       dtype=object)), {}, "'mix'"),
    "types-missing-column": (lambda df: df, {"types": {"nope": "numeric"}}, "'nope'"),
    "types-unknown-type": (lambda df: df, {"types": {"x": "gaussianish"}}, "'x'"),
    "count-negative": (lambda df: _with(df, k=np.arange(len(df)) % 5 - 2),
                       {"types": {"k": "count"}}, "'k'"),
    "count-fractional": (lambda df: _with(df, k=np.arange(len(df)) % 5 + 0.5),
                         {"types": {"k": "count"}}, "'k'"),
    "poisson-negative": (lambda df: _with(df, k=np.arange(len(df)) % 5 - 2),
                         {"types": {"k": "poisson"}}, "'k'"),
}


@pytest.mark.parametrize("case", list(BAD_FITS))
def test_bad_table_names_the_column(small, case):
    make, kw, name = BAD_FITS[case]
    with pytest.raises(TableError, match=name):
        fit(tvae(**kw), make(small), epochs=1)


def test_duplicate_column_names(small):
    df = small.copy()
    df.columns = ["x", "x", "c"]
    with pytest.raises(TableError, match=r"duplicate.*'x'"):
        fit(tvae(), df, epochs=1)


def test_condition_with_a_missing_value_when_fitting(small):
    df = small.assign(batch=np.where(np.arange(len(small)) % 2, "A", "B")).astype(
        {"batch": object})
    df.loc[7, "batch"] = None
    with pytest.raises(TableError, match="'batch'"):
        fit(tvae(), df, conditions="batch", epochs=1)


def test_condition_with_a_missing_value_when_scoring(small):
    df = small.assign(batch=np.where(np.arange(len(small)) % 2, "A", "B"))
    tv = fit(tvae(), df, conditions="batch", epochs=1)
    bad = df.head(10).astype({"batch": object})
    bad.loc[3, "batch"] = None
    with pytest.raises(TableError, match="'batch'"):
        tv.score_samples(bad)


def test_missing_column_when_scoring(small):
    tv = fit(tvae(), small, epochs=1)
    with pytest.raises(TableError, match="'y'"):
        tv.score_samples(small.drop(columns="y"))
    with pytest.raises(TableError, match="'y'"):
        tv.transform(small.drop(columns="y"))


def test_unknown_category_when_scoring(small):
    rows = small.head(6).copy()
    rows.loc[2, "c"] = "zz"
    as_gap = rows.copy()
    as_gap.loc[2, "c"] = None

    tv = fit(tvae(missing=True), small, epochs=2)
    with pytest.raises(TableError, match="'c'.*'zz'"):
        tv.score_samples(rows)
    score = tv.score_samples(rows, unknown="missing")
    assert np.isfinite(score).all()
    # scored as a missing cell: the same score as the row with that cell missing
    pd.testing.assert_series_equal(score, tv.score_samples(as_gap), check_exact=True)

    tm = fit(tvae(unknown="missing"), small, epochs=2)
    score = tm.score_samples(rows)
    assert np.isfinite(score).all()
    pd.testing.assert_series_equal(score, tm.score_samples(as_gap), check_exact=True)
    with pytest.raises(TableError, match="'c'.*'zz'"):
        tm.score_samples(rows, unknown="error")


def test_paths_that_are_not_tables(small, tmp_path):
    wrong = tmp_path / "table.json"
    wrong.write_text("{}")
    with pytest.raises(TableError, match="table.json"):
        fit(tvae(), wrong, epochs=1)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        fit(tvae(), tmp_path / "nowhere.csv", epochs=1)


# ------------------------------------------------------------------ files
def kinds(tv):
    return [(c.name, c.kind, c.source, c.categories) for c in tv.schema.data]


def test_csv_and_parquet_paths(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"f": rng.normal(size=n), "i": rng.integers(0, 9, n),
                       "b": rng.random(n) < 0.4, "s": rng.choice(["u", "v", "w"], n),
                       "k": rng.poisson(3.0, n)})
    types = {"k": "count"}
    want = kinds(fit(tvae(types=types), df, epochs=1))
    # (i: nine integers seen often: categories of numbers)
    assert [k[1] for k in want] == ["numeric", "categorical", "categorical", "categorical",
                                    "negbin"]
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    for path in (tmp_path / "t.csv", str(tmp_path / "t.parquet")):
        tv = fit(tvae(types=types), path, epochs=1)
        assert kinds(tv) == want, path
        assert tv.score_samples(path).shape == (n,)

    # Parquet keeps what CSV cannot: categories, datetimes, time zones
    rich = every_dtype(200).drop(columns=["I64"])
    rich.to_parquet(tmp_path / "rich.parquet")
    a = fit(tvae(), rich, epochs=1)
    b = fit(tvae(), tmp_path / "rich.parquet", epochs=1)
    assert kinds(b) == kinds(a)
    assert [(c.unit, c.tz) for c in b.schema.data] == [(c.unit, c.tz) for c in a.schema.data]


# ------------------------------------------------------------------ counts
def test_count_columns():
    rng = np.random.default_rng(0)
    n = 1500
    x = rng.standard_normal(n)
    df = pd.DataFrame({"x": x, "nb": rng.negative_binomial(2, 0.3, n),
                       "po": rng.poisson(np.exp(0.5 * x + 1.0))})
    tv = fit(tvae(types={"nb": "count", "po": "poisson"}), df, epochs=40)
    assert [(c.name, c.kind) for c in tv.schema.data] == [("x", "numeric"), ("nb", "negbin"),
                                                          ("po", "poisson")]
    assert np.isfinite(tv.history[-1]["train_loss"])
    s = tv.sample(3000, seed=0)
    for c in ("nb", "po"):
        assert s[c].dtype == df[c].dtype and pd.api.types.is_integer_dtype(s[c].dtype)
        assert (s[c] >= 0).all()
        assert abs(s[c].mean() / df[c].mean() - 1) < 0.25, (c, s[c].mean(), df[c].mean())
    assert s["nb"].var() > 1.5 * s["nb"].mean()  # over-dispersed, as the data


def test_zero_inflated_count_columns_come_back_with_their_zeros():
    """types={"col": "zinb"}: a count column with many extra zeros is modelled with the
    ZINB block, comes back as integers of its dtype, with its share of zeros and its mean,
    and the plots draw it (as a count histogram)."""
    rng = np.random.default_rng(1)
    n = 1500
    x = rng.standard_normal(n)
    k = rng.negative_binomial(3, 3 / (3 + np.exp(1.5 + 0.5 * x)))
    k[rng.random(n) < 0.5] = 0
    df = pd.DataFrame({"x": x, "k": k})
    tv = fit(tvae(types={"k": "zinb"}), df, epochs=60)
    assert [(c.name, c.kind) for c in tv.schema.data] == [("x", "numeric"), ("k", "zinb")]
    assert [b.name for b in tv.model_.columns.blocks] == ["gaussian", "zinb"]
    s = tv.sample(4000, seed=0)
    assert s["k"].dtype == df["k"].dtype and (s["k"] >= 0).all()
    assert abs((s["k"] == 0).mean() - (df["k"] == 0).mean()) < 0.08
    assert abs(s["k"].mean() / df["k"].mean() - 1) < 0.25
    scores = tv.score_samples(df.head(50), per_column=True)
    assert np.isfinite(scores.to_numpy(dtype=float)).all()


def test_every_block_kind_has_a_table_column_entry():
    """A new likelihood block gets its entry in the tabular front end's one table
    (fastvae.tabular.blocktypes), and each entry's block is that kind."""
    from fastvae.core.blocks import BLOCKS
    from fastvae.tabular import blocktypes
    from fastvae.tabular.kinds import TYPES
    assert set(blocktypes.BY_BLOCK) == set(BLOCKS), "block kinds without a tabular entry"
    for name, t in blocktypes.BY_BLOCK.items():
        if t is None:
            continue
        cols = [type("C", (), {"classes": 3})()] * 2  # (a categorical column reads .classes)
        assert t.make(cols).name == name and t.make(cols).n == 2
        assert TYPES[t.kind] == t.kind and t.panel in ("bars", "histogram")


@pytest.mark.parametrize("kw,message", [
    ({"hidden": 64}, r"hidden must be None \(by the row count\) or a sequence of layer widths"),
    ({"hidden": "64"}, r"hidden must be .*got '64'"),
    ({"hidden": (64, 0)}, r"hidden must be .*got \(64, 0\)"),
    ({"latent_dim": 0}, r"latent_dim must be None \(by the row count\) or a positive integer"),
    ({"seed": "a"}, r"seed must be an integer >= 0, got 'a'"),
    ({"seed": -1}, r"seed must be an integer >= 0, got -1"),
])
def test_a_bad_setting_is_named_at_fit(kw, message):
    tv = tvae(**kw)
    with pytest.raises(ValueError, match=message):
        tv.fit(pd.DataFrame({"x": np.arange(30.0)}), epochs=1)


def test_conditions_in_another_order_and_settings_after_load(tmp_path):
    """A model of two conditions takes them in any order on a later fit; a saved model's
    get_params() still has the VAE settings it was built with."""
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"region": rng.choice(["n", "s"], 300), "x": rng.normal(size=300),
                       "gender": rng.choice(["f", "m"], 300)})
    tv = fit(tvae(beta=0.5, activation="tanh"), df, conditions=["gender", "region"],
             epochs=1)
    assert [c.name for c in tv.schema.conditions] == ["region", "gender"]
    fit(tv, df, conditions=["gender", "region"], epochs=1)
    fit(tv, df, conditions=["region", "gender"], epochs=1)
    with pytest.raises(TableError, match="this model's conditions are"):
        fit(tv, df, conditions=["gender"], epochs=1)
    back = tabular.load(tv.save(tmp_path / "m.npz"))
    assert back.get_params()["beta"] == 0.5 and back.get_params()["activation"] == "tanh"


def test_bad_sampling_arguments_are_named():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"site": rng.choice(["A", "B"], 200), "age": rng.uniform(20, 60, 200),
                       "x": rng.normal(size=200)})
    tv = fit(tvae(), df, conditions=["site", "age"], epochs=1)
    with pytest.raises(ValueError, match=r"seed must be None, an integer >= 0 or a numpy "
                                         r"Generator, got 'a'"):
        tv.sample(3, seed="a")
    for chunk in (-1, 0, 2.5):
        with pytest.raises(ValueError, match=r"chunk must be a positive integer"):
            list(tv.iter_sample(10, chunk=chunk))
    with pytest.raises(TableError, match=r"conditions\['site'\] has 2 values, and 4 rows"):
        tv.sample(4, conditions={"site": ["A", "B"], "age": 30})
    with pytest.raises(TableError, match=r"conditions name 'nosuch', which is not a condition"):
        tv.sample(4, conditions={"nosuch": "B", "age": 3})
    assert sum(len(c) for c in tv.iter_sample(10, chunk=3)) == 10


@pytest.mark.parametrize("kw,message", [
    ({"epochs": 20}, r"unknown setting 'epochs'.*argument of fit"),
    ({"betta": 0.5}, r"unknown setting 'betta'.*fastvae.VAE"),
    ({"likelihood": "gaussian"}, r"sets likelihood= itself"),
])
def test_a_wrong_extra_setting_is_named_at_fit(kw, message):
    """Extra keywords go to fastvae.VAE: a misspelt one, a fit argument or one the table
    decides is one line naming it, at fit (scikit-learn's convention), before any work."""
    tv = tvae(**kw)  # (the constructor stores, fit checks)
    with pytest.raises(ValueError, match=message):
        tv.fit(pd.DataFrame({"x": np.arange(30.0)}), epochs=1)
    assert tv.model_ is None
    assert tvae(beta=0.5).fit(pd.DataFrame({"x": np.arange(30.0)}), epochs=1).model_.beta == 0.5
