"""Interval rules (fastvae.tabular.intervals): a label that a number's interval fixes is
found, kept exactly in samples, saved, and never found where the labels are not runs."""
import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import TabularVAE, intervals, load  # noqa: E402
from fastvae.tabular.schema import infer  # noqa: E402


def _table(n=600, seed=0):
    rng = np.random.default_rng(seed)
    weight = np.round(rng.normal(7.0, 1.3, n), 2)
    age = rng.integers(15, 50, n)
    bmi = np.round(rng.normal(25, 5, n), 1)
    return pd.DataFrame({
        "weight": weight,
        "low": np.where(weight < 5.5, "low", "not low"),
        "age": age,
        "mature": np.where(age >= 35, "mature", "younger"),
        # three runs, one label in two of them
        "bmi": bmi,
        "band": np.where(bmi < 20, "out", np.where(bmi < 30, "in", "out")),
        "noise": rng.choice(["a", "b"], n),
    })


def _found(df):
    schema = infer(df)
    return {(r[0]["interval"], r[1]): r[2] for r in intervals.find(df, schema)}


def test_threshold_labels_are_found_with_the_cut_between_their_runs():
    df = _table()
    found = _found(df)
    assert found[("weight", "low")][0] == [None, "low"]
    cut = found[("weight", "low")][1][0]  # (the first weight that is not low)
    assert df.weight[df.low == "low"].max() < cut == df.weight[df.low == "not low"].min()
    assert [p[1] for p in found[("age", "mature")]] == ["younger", "mature"]
    assert found[("age", "mature")][1][0] == 35
    assert [p[1] for p in found[("bmi", "band")]] == ["out", "in", "out"]
    # a label that no number fixes has no rule
    assert not any(y == "noise" for _, y in found)


def test_labels_that_are_no_runs_have_no_rule():
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    df = pd.DataFrame({"x": x, "y": np.where(x < 0, "neg", "pos")})
    flip = df.copy()
    flip.loc[flip.index[:3], "y"] = np.where(flip.y[:3] == "neg", "pos", "neg")  # 3 > SLACK
    assert _found(df) and not _found(flip)
    # a run of fewer than RARE_MIN rows at the top
    top = df.copy()
    top.loc[top.x.nlargest(3).index, "y"] = "top"
    assert not _found(top)
    # a label that changes within one value of the number
    tie = pd.DataFrame({"x": np.repeat(np.arange(40), 10), "y": ["a", "b"] * 200})
    assert not _found(tie)


def test_a_few_mislabelled_rows_are_forgiven():
    """One row in 500 may break a rule (a number on the threshold written with both
    labels): the rule is the rows' majority."""
    rng = np.random.default_rng(2)
    x = np.round(rng.uniform(0, 10, 1000), 1)
    df = pd.DataFrame({"x": x, "y": np.where(x < 5, "lo", "hi")})
    df.loc[int(np.flatnonzero(x == 5.0)[0]), "y"] = "lo"  # two labels at 5.0
    rule = _found(df)[("x", "y")]
    assert rule == [[None, "lo"], [5.0, "hi"]]


def test_samples_keep_the_rules_exactly_and_a_missing_number_sets_nothing():
    df = _table(800)
    df.loc[df.index[:40], "weight"] = np.nan
    tv = TabularVAE(seed=0).fit(df, epochs=3, progress=False)
    assert any(intervals.is_interval(r) for r in tv.rules_)
    s = tv.sample(3000, seed=1)
    w = s.weight.notna()
    assert ((s.weight[w] < 5.5) == (s.low[w] == "low")).all()
    assert ((s.age >= 35) == (s.mature == "mature")).all()
    inside = (s.bmi >= 20) & (s.bmi < 30)
    assert (inside == (s.band == "in")).all()
    # where the number is missing the label is the decoder's draw: both labels occur
    assert s.weight.isna().sum() > 20


def test_interval_rules_are_saved_and_can_be_turned_off(tmp_path):
    df = _table(300)
    tv = TabularVAE(seed=0).fit(df, epochs=2, progress=False)
    tv.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.rules_ == tv.rules_
    pd.testing.assert_frame_equal(back.sample(200, seed=3), tv.sample(200, seed=3))
    off = TabularVAE(seed=0, rules=False).fit(df, epochs=2, progress=False)
    assert off.rules_ == []


def test_a_missing_label_run_and_labels_of_other_types():
    """A run of missing labels sets missing cells; integer and boolean labels keep their
    dtype."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0, 100, 500)
    df = pd.DataFrame({"x": x, "y": pd.array(np.where(x < 20, 1, 2), dtype="Int64"),
                       "z": np.where(x < 50, None, "big"), "b": x >= 70})
    found = _found(df)
    assert [p[1] for p in found[("x", "y")]] == [1, 2]
    assert [p[1] for p in found[("x", "z")]] == [None, "big"]
    assert [p[1] for p in found[("x", "b")]] == [False, True]
    frame = pd.DataFrame({"x": [10.0, 60.0, np.nan, 90.0], "y": pd.array([2, 1, 2, 1], "Int64"),
                          "z": ["big", None, "big", None], "b": [True, True, True, False]})
    for (x_, y_), rule in found.items():
        intervals.apply(frame, [{"interval": x_}, y_, rule])
    assert frame.y.tolist()[:2] == [1, 2] and frame.y.dtype == "Int64"
    assert frame.z.isna().tolist() == [True, False, False, False]
    assert frame.b.tolist() == [False, False, True, True]
