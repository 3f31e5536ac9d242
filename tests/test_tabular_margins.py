"""Samples with the table's numeric distributions and gap shares (fastvae.tabular.margins,
the observed heads in fastvae.tabular.calibrate): after a short fit, whose decoder alone
gets them wrong, the sampled distributions are the training rows'; the maps keep each
column's order of the draws; they are saved with the model."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import fastvae.tabular as tabular  # noqa: E402
from fastvae.tabular import margins  # noqa: E402
from tables_util import fitted as fit_small  # noqa: E402


def fitted(df, epochs=2, **kw):
    return fit_small(df, epochs, **kw)


def skewed(n=3000, seed=3):
    """A right-skewed amount, a bimodal score that goes with it, a class, and gaps in the
    score."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.0, 0.9, n)
    mode = rng.random(n) < 0.3
    score = np.where(mode, 80.0, 20.0) + 5.0 * rng.standard_normal(n) + 0.05 * amount
    df = pd.DataFrame({"amount": amount, "score": score,
                       "kind": np.where(mode, "a", "b").astype(object)})
    df.loc[rng.random(n) < 0.15, "score"] = np.nan
    return df


def ks(a, b):
    """The largest gap between the distribution functions of samples a and b."""
    a, b = np.sort(a[~np.isnan(a)]), np.sort(b[~np.isnan(b)])
    x = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, x, side="right") / a.size -
                        np.searchsorted(b, x, side="right") / b.size).max())


def factor(n=3000, seed=0):
    """Six columns of one factor with a step in it (as a season's games, wins and runs go
    together)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return pd.DataFrame({f"c{i}": x * (1 + i) + 0.1 * rng.standard_normal(n) +
                         3.0 * (x > 0.5) for i in range(6)})


def test_sampled_numeric_distributions_are_the_tables(monkeypatch):
    """Two epochs leave the decoder's sampled distributions of columns that share a factor
    away from the table's (a Kolmogorov-Smirnov gap of about 0.05); the maps bring each
    within what 20,000 samples explain."""
    df = factor()
    tv = fitted(df, rules=False)
    assert len(tv.margins_) == 6
    s = tv.sample(20000, seed=0)
    monkeypatch.setattr(margins, "MAX_KNOTS", 1)  # (no map: the decoder's own draws)
    raw = fitted(df, rules=False)
    assert not raw.margins_
    r = raw.sample(20000, seed=0)
    for c in df.columns:
        got, before = ks(s[c].to_numpy(), df[c].to_numpy()), ks(r[c].to_numpy(),
                                                                df[c].to_numpy())
        assert got < 0.02 and before > 0.035, (c, got, before)


def test_sampled_gaps_are_the_tables(monkeypatch):
    """A column missing on 25% of rows, more often where the factor is high: after two
    epochs the decoder's observed head alone draws it missing on about 40% of samples;
    with its log-odds shifted (the same amount in every row), on the table's share."""
    from fastvae.tabular import calibrate
    rng = np.random.default_rng(1)
    df = factor()
    df["gappy"] = df["c1"]
    high = df["c1"].to_numpy() > 1
    df.loc[(rng.random(len(df)) < 0.1) | (high & (rng.random(len(df)) < 0.5)), "gappy"] = np.nan
    want = df["gappy"].isna().mean()
    s = fitted(df, rules=False).sample(20000, seed=0)
    assert abs(s["gappy"].isna().mean() - want) < 0.01
    monkeypatch.setattr(calibrate, "ROUNDS", 0)
    r = fitted(df, rules=False).sample(20000, seed=0)
    assert abs(r["gappy"].isna().mean() - want) > 0.05


def test_a_map_keeps_the_order_of_the_draws():
    """The same seed draws the same values; mapped, every numeric column keeps their order
    (a monotone map: the rank correlations between columns are the decoder's), and
    categorical columns and gaps are untouched."""
    tv = fitted(skewed(), rules=False)
    maps = tv.margins_
    a = tv.sample(5000, seed=4)
    tv.margins_ = None
    b = tv.sample(5000, seed=4)
    tv.margins_ = maps
    pd.testing.assert_series_equal(a["kind"], b["kind"])
    pd.testing.assert_series_equal(a["score"].isna(), b["score"].isna())
    for c in ("amount", "score"):  # (the middle 90%: draws past the protected range are
        ok = a[c].notna().to_numpy()  # mirrored back inside it, mapped or not)
        u, v = b[c].to_numpy()[ok], a[c].to_numpy()[ok]
        mid = (u > np.quantile(u, 0.05)) & (u < np.quantile(u, 0.95))
        order = np.argsort(u[mid], kind="stable")
        assert np.all(np.diff(v[mid][order]) >= 0), c
    ra = a[["amount", "score"]].rank().corr().iloc[0, 1]
    rb = b[["amount", "score"]].rank().corr().iloc[0, 1]
    assert abs(ra - rb) < 0.01


def test_apply_is_monotone_and_keeps_the_tails_shape():
    xs, ys = np.array([0.0, 1.0, 3.0]), np.array([10.0, 10.0, 20.0])
    v = np.array([[-2.0], [0.0], [0.5], [2.0], [3.0], [5.0]])
    out = margins.apply(v.copy(), {0: (xs, ys)})[:, 0]
    np.testing.assert_allclose(out, [8.0, 10.0, 10.0, 15.0, 20.0, 22.0])
    assert np.all(np.diff(out) >= 0)
    q = margins.knots(1000)
    assert q.size == min(margins.MAX_KNOTS, 1000 // margins.ROWS_PER_KNOT)
    assert 0 < q[0] < q[-1] < 1 and np.all(np.diff(q) > 0)
    assert margins.knots(2 * margins.ROWS_PER_KNOT - 1).size == 0


def test_maps_are_saved_and_an_older_model_samples_without(tmp_path):
    tv = fitted(skewed(800), rules=False)
    back = tabular.load(tv.save(tmp_path / "m.npz"))
    assert set(back.margins_) == set(tv.margins_)
    pd.testing.assert_frame_equal(back.sample(300, seed=2), tv.sample(300, seed=2))
    # (a model saved before the maps: its metadata has no "margins"; it samples unmapped)
    back.model_.metadata["tabular"].pop("margins")
    old = tabular.from_model(back.model_)
    assert old.margins_ is None
    tv.margins_ = None
    pd.testing.assert_frame_equal(old.sample(300, seed=2), tv.sample(300, seed=2))


def test_a_float32_model_maps_onto_the_training_values_themselves():
    """A column that is 0 on 70% of rows: the map piles draws on the training rows' own
    value (fit on the rows in float64; the standard map's round trip is float64's), not
    on its float32 rounding (1.8e-08)."""
    rng = np.random.default_rng(6)
    n = 2000
    v = np.where(rng.random(n) < 0.7, 0.0, rng.standard_normal(n) * 3.7)
    df = pd.DataFrame({"v": v, "w": v + rng.standard_normal(n)})
    tv = fitted(df, numeric="standard", rules=False)
    assert tv.model_.dtype == np.float32
    s = tv.sample(20000, seed=0)
    assert abs((s["v"].abs() < 1e-12).mean() - 0.7) < 0.03
