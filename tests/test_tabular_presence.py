"""Presence rules (fastvae.tabular.presence): a group of cells that a value of another
column says is present (storms' category, on every hurricane) is kept present in samples,
filled with the decoder's own draws; the rule is found only where it holds on every row
(and not for columns another rule reads: storms' category, which sets its status)."""
import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import TabularVAE, load, presence, rules  # noqa: E402
from fastvae.tabular.schema import infer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::fastvae.tabular.CollapseWarning")


def _storms(n=1200, seed=0):
    """status; a hurricane's eye diameter and its wind's gust, missing on the same rows
    (one observed head) for every other status; a pressure."""
    rng = np.random.default_rng(seed)
    status = rng.choice(["depression", "storm", "hurricane", "extratropical"], n,
                        p=[0.3, 0.3, 0.25, 0.15])
    hur = status == "hurricane"
    eye = np.where(hur, np.round(rng.gamma(4, 5, n), 1), np.nan)
    gust = np.where(hur, np.round(rng.normal(120, 15, n), 1), np.nan)
    return pd.DataFrame({"status": status, "eye": eye, "gust": gust,
                         "pressure": np.round(rng.normal(990, 15, n), 1)})


def test_a_value_that_says_cells_are_present_keeps_them_present(tmp_path):
    df = _storms()
    schema = infer(df)
    found = presence.find(df, schema, rules.find(df, schema))
    assert [[r[0]["presence"], r[1], r[2]] for r in found] == \
        [["status", ["eye", "gust"], ["hurricane"]]]
    tv = TabularVAE(seed=0).fit(df, epochs=3, progress=False)
    s = tv.sample(3000, seed=1)
    hur = s["status"] == "hurricane"
    assert s.loc[hur, ["eye", "gust"]].notna().all().all()
    assert s["eye"].dtype == df["eye"].dtype
    assert s.loc[hur, "eye"].between(df["eye"].min(), df["eye"].max()).all()
    assert (s["eye"].isna() == s["gust"].isna()).all()  # (the group together)
    tv.save(tmp_path / "m.npz")
    pd.testing.assert_frame_equal(load(tmp_path / "m.npz").sample(500, seed=2),
                                  tv.sample(500, seed=2))
    off = TabularVAE(seed=0, rules=False).fit(df, epochs=3, progress=False).sample(3000, seed=1)
    assert off.loc[off["status"] == "hurricane", "eye"].isna().any()  # (what it fixes)


def test_no_presence_rule_where_one_row_breaks_it_or_by_chance():
    df = _storms()
    df.loc[np.flatnonzero(df["status"] == "hurricane")[0], ["eye", "gust"]] = np.nan
    schema = infer(df)
    assert presence.find(df, schema, rules.find(df, schema)) == []
    rng = np.random.default_rng(3)  # (nearly always present: 6 rows of a value prove nothing)
    few = pd.DataFrame({"k": rng.choice(list("abcdefghij"), 300),
                        "x": np.where(rng.random(300) < 0.02, np.nan, rng.normal(size=300))})
    assert presence.find(few, infer(few)) == []
