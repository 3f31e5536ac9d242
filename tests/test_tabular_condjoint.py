"""The conditions' joint (fastvae.tabular.condjoint): conditions a sample does not give are
drawn from their training joint given the ones given, under the rare-value rule, and the
joint is saved with the model."""
import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import TabularVAE, load  # noqa: E402
from fastvae.tabular.schema import Schema, infer  # noqa: E402
from fastvae.tabular.sampling import draw_conditions  # noqa: E402
from fastvae.tabular.column import RARE_MIN  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::fastvae.tabular.CollapseWarning")


def _staff(n=3000, seed=0):
    """rank -> discipline (shares differ by rank), rank -> years (means differ by rank),
    years ~ age (correlated numbers), and a value column."""
    rng = np.random.default_rng(seed)
    rank = rng.choice(["asst", "assoc", "prof"], n, p=[0.2, 0.2, 0.6])
    disc = np.where(rng.random(n) < np.select([rank == "asst", rank == "assoc"], [0.2, 0.5],
                                              0.8), "A", "B")
    years = np.round(np.select([rank == "asst", rank == "assoc"], [4.0, 12.0], 25.0)
                     + rng.normal(0, 2, n), 1)
    age = np.round(30 + years + rng.normal(0, 1.5, n), 1)
    return pd.DataFrame({"rank": rank, "disc": disc, "years": years, "age": age,
                         "pay": rng.normal(100, 10, n)})


def _draw(schema, n, given=None, seed=1):
    frame = None if given is None else pd.DataFrame({k: [v] for k, v in given.items()})
    return draw_conditions(schema, n, np.random.default_rng(seed),
                           skip=() if given is None else list(given), given=frame)


def test_drawn_categories_follow_the_given_one():
    df = _staff()
    schema = infer(df, conditions=["rank", "disc"])
    for r in ("asst", "assoc", "prof"):
        s = _draw(schema, 20000, {"rank": r})
        assert list(s.columns) == ["disc"]
        real = (df.disc[df["rank"] == r] == "A").mean()
        assert abs((s.disc == "A").mean() - real) < 0.02, r


def test_nothing_given_keeps_the_joint_of_categories():
    df = _staff()
    schema = infer(df, conditions=["rank", "disc"])
    s = _draw(schema, 40000)
    got = pd.crosstab(s["rank"], s.disc, normalize=True)
    real = pd.crosstab(df["rank"], df.disc, normalize=True)
    assert np.abs(got.to_numpy() - real.to_numpy()).max() < 0.015
    # the independent product of the marginals is far from it (what was drawn before)
    indep = np.outer(real.sum(axis=1), real.sum(axis=0))
    assert np.abs(indep - real.to_numpy()).max() > 0.05


def test_numbers_follow_categories_and_each_other():
    df = _staff()
    schema = infer(df, conditions=["rank", "years", "age"])
    s = _draw(schema, 20000)
    means = s.groupby("rank")["years"].mean()
    real = df.groupby("rank")["years"].mean()
    assert np.abs(means - real).max() < 1.0
    assert np.corrcoef(s.years, s.age)[0, 1] > 0.9
    # each number keeps its marginal
    for c in ("years", "age"):
        assert abs(s[c].median() - df[c].median()) < 0.05 * df[c].std() + 0.5
        assert abs(s[c].std() - df[c].std()) < 0.1 * df[c].std()
    # a given category moves the numbers; a given number moves the category and the other number
    young = _draw(schema, 5000, {"rank": "asst"})
    assert abs(young.years.mean() - real["asst"]) < 1.0
    old = _draw(schema, 5000, {"years": 26.0})
    assert (old["rank"] == "prof").mean() > 0.95
    assert abs(old.age.mean() - df.age[df.years.between(25, 27)].mean()) < 1.5


def test_per_row_given_values_condition_each_row():
    df = _staff()
    schema = infer(df, conditions=["rank", "disc"])
    given = pd.DataFrame({"rank": ["asst", "prof"] * 5000})
    s = draw_conditions(schema, 10000, np.random.default_rng(0), skip=["rank"], given=given)
    for r in ("asst", "prof"):
        got = (s.disc[given["rank"] == r] == "A").mean()
        assert abs(got - (df.disc[df["rank"] == r] == "A").mean()) < 0.02, r


def test_rare_combinations_are_never_drawn():
    rng = np.random.default_rng(0)
    n = 2000
    df = pd.DataFrame({"site": rng.choice(["x", "y"], n), "kind": rng.choice(["p", "q"], n),
                       "v": rng.normal(size=n)})
    df.loc[:RARE_MIN - 2, ["site", "kind"]] = ["z", "r"]  # one combination in 4 rows
    df.loc[RARE_MIN - 1:RARE_MIN + 1, "site"] = "z"  # z also with other kinds, 3 rows
    schema = infer(df, conditions=["site", "kind"])
    s = _draw(schema, 50000)
    assert not ((s.site == "z") & (s.kind == "r")).any()
    assert not (s.site == "z").any()  # (z holds no combination in RARE_MIN rows)
    # a given rare value: the other condition from its own frequencies, no error
    s = _draw(schema, 2000, {"site": "z"})
    assert set(s.kind) <= {"p", "q", "r"} and len(s) == 2000


def test_sample_with_one_condition_given_and_the_joint_saved(tmp_path):
    df = _staff(1500)
    tv = TabularVAE(seed=0).fit(df, conditions=["rank", "disc"], epochs=1, progress=False)
    s = tv.sample(3000, conditions={"rank": "asst"}, seed=2)
    assert (s["rank"] == "asst").all()
    assert abs((s.disc == "A").mean() - (df.disc[df["rank"] == "asst"] == "A").mean()) < 0.03
    path = tmp_path / "m.npz"
    tv.save(path)
    back = load(path)
    pd.testing.assert_frame_equal(back.sample(500, conditions={"rank": "asst"}, seed=3),
                                  tv.sample(500, conditions={"rank": "asst"}, seed=3))
    pd.testing.assert_frame_equal(back.sample(500, seed=4), tv.sample(500, seed=4))


def test_a_schema_saved_without_the_joint_draws_each_on_its_own():
    df = _staff()
    schema = infer(df, conditions=["rank", "disc"])
    cfg = json.loads(json.dumps(schema.config()))
    assert cfg["joint"] is not None
    cfg.pop("joint")
    old = Schema.from_config(cfg)
    assert old.joint is None
    s = _draw(old, 20000, {"rank": "asst"})
    assert abs((s.disc == "A").mean() - (df.disc == "A").mean()) < 0.02  # the marginal


def test_one_condition_keeps_no_joint():
    df = _staff()
    assert infer(df, conditions=["rank"]).joint is None
    assert infer(df, conditions=["rank", "years"]).joint is not None


def test_time_and_integer_conditions_come_back_in_their_dtypes():
    rng = np.random.default_rng(0)
    n = 1000
    day = pd.Timestamp("2024-01-01", tz="Europe/Paris") + pd.to_timedelta(
        rng.integers(0, 300, n), unit="D")
    df = pd.DataFrame({"day": day, "count": rng.integers(0, 9, n),
                       "site": rng.choice(["a", "b"], n), "v": rng.normal(size=n)})
    schema = infer(df, conditions=["day", "count", "site"])
    s = _draw(schema, 500, {"site": "a"})
    assert s["day"].dtype == df["day"].dtype
    assert s["count"].dtype == df["count"].dtype
    assert s["day"].between(df["day"].min(), df["day"].max()).all()


def test_no_common_combination_draws_each_on_its_own():
    """Every combination in fewer than RARE_MIN rows (datasets' esoph): the category with
    the most values leaves the joint; sampling works, given any of them or none."""
    rng = np.random.default_rng(0)
    n = 80
    df = pd.DataFrame({"age": np.repeat([f"a{i}" for i in range(20)], 4),
                       "tob": np.tile(["t0", "t1", "t2", "t3"], 20),
                       "v": rng.normal(size=n)})
    schema = infer(df, conditions=["age", "tob"])
    assert [schema.conditions[i].name for i in schema.joint.lone] == ["age"]
    s = _draw(schema, 4000)
    assert set(s.age) == set(df.age) and set(s.tob) == set(df.tob)
    assert len(_draw(schema, 10, {"age": "a3"})) == 10
    tv = TabularVAE(seed=0).fit(df, conditions=["age", "tob"], epochs=1, progress=False)
    assert len(tv.sample(5, conditions={"age": "a3", "tob": "t1"}, seed=0)) == 5


def test_a_condition_of_many_values_leaves_the_joint_and_the_shares_hold():
    """A categorical condition of thousands of values (flights' tail numbers) would leave a
    joint of its few common combinations; it is drawn on its own, and the other
    conditions keep their shares and their joint."""
    rng = np.random.default_rng(1)
    n = 6000
    origin = rng.choice(["EWR", "JFK", "LGA"], n, p=[0.36, 0.33, 0.31])
    carrier = np.where(origin == "EWR", rng.choice(["UA", "EV"], n), rng.choice(["B6", "DL"], n))
    df = pd.DataFrame({"origin": origin, "carrier": carrier,
                       "tail": [f"N{v}" for v in rng.integers(0, 2000, n)],
                       "delay": rng.normal(size=n)})
    schema = infer(df, conditions=["origin", "carrier", "tail"])
    assert [schema.conditions[i].name for i in schema.joint.lone] == ["tail"]
    s = _draw(schema, 30000)
    got = s.origin.value_counts(normalize=True).sort_index()
    real = df.origin.value_counts(normalize=True).sort_index()
    assert np.abs(got - real).max() < 0.015
    assert (s.carrier[s.origin == "EWR"].isin(["UA", "EV"])).all()


def test_empty_and_positional_conditions():
    df = _staff(800)
    tv = TabularVAE(seed=0).fit(df, conditions=["rank", "disc"], epochs=1, progress=False)
    pd.testing.assert_frame_equal(tv.sample(4, conditions={}, seed=5), tv.sample(4, seed=5))
    s = tv.sample(3, conditions={"rank": pd.Series(["prof", "asst", "assoc"], index=[7, 8, 9]),
                                 "disc": pd.Series(["A", "B", "A"])}, seed=0)
    assert list(s["rank"]) == ["prof", "asst", "assoc"] and list(s.disc) == ["A", "B", "A"]


def test_time_conditions_refuse_numbers_and_warn_outside_their_range():
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"day": pd.date_range("2001-01-01", periods=n, freq="D"),
                       "site": rng.choice(["a", "b"], n), "v": rng.normal(size=n)})
    tv = TabularVAE(seed=0).fit(df, conditions=["day", "site"], epochs=1, progress=False)
    with pytest.raises(ValueError, match="condition column 'day', the given value: 5 is a "
                                         "number, not a date"):
        tv.sample(2, conditions={"day": 5})
    with pytest.warns(UserWarning, match=r"given value 2100-01-01 00:00:00 is outside its "
                                         r"training range \[2001-01-01") as rec:
        tv.sample(2, conditions={"day": "2100-01-01"})
    assert rec[0].filename == __file__  # (the warning points at the caller's line)


def test_numeric_conditions_only_and_a_category_that_leaves_the_joint():
    df = _staff(1000)
    schema = infer(df, conditions=["years", "age"])
    assert schema.joint.cats == [] and schema.joint.weights.size == 1
    s = _draw(schema, 5000)
    # (a Gaussian copula: the ranks' correlation is kept)
    rank = [x[["years", "age"]].corr(method="spearman").iloc[0, 1] for x in (s, df)]
    assert abs(rank[0] - rank[1]) < 0.03
    df["id"] = [f"t{i % 400}" for i in range(len(df))]  # (400 values of 2-3 rows each)
    schema = infer(df, conditions=["id", "years"])
    assert [schema.conditions[i].name for i in schema.joint.lone] == ["id"]
    assert len(_draw(schema, 100, {"years": 10.0})) == 100


def test_discrete_numbers_keep_their_shares():
    """A 0/1 flag and a small count as numeric conditions: each value at its training share
    (a value's rows spread over its run of the quantiles, not at its middle)."""
    rng = np.random.default_rng(3)
    n = 4000
    g = rng.choice(["a", "b"], n)
    df = pd.DataFrame({"g": g, "flag": (rng.random(n) < np.where(g == "a", 0.05, 0.15))
                       .astype(int), "k": rng.poisson(0.7, n), "v": rng.normal(size=n)})
    schema = infer(df, conditions=["g", "flag", "k"])
    s = _draw(schema, 60000)
    assert abs(s.flag.mean() - df.flag.mean()) < 0.01
    for v in range(4):
        assert abs((s.k == v).mean() - (df.k == v).mean()) < 0.015, v
    for lab in ("a", "b"):  # and given the category, its own share
        got = _draw(schema, 20000, {"g": lab}).flag.mean()
        assert abs(got - df.flag[df.g == lab].mean()) < 0.02, lab
