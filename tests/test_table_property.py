"""A property of fastvae.tabular over random small frames (issue 29): any frame of supported
dtypes either fits and samples a table with the same column labels, dtypes and ranges, or
raises the documented error (a TableError naming what is wrong).  Never another exception,
a gap where the column had none, a value outside the training range, or a value the
column never held (but for :data:`fastvae.tabular.RARE`, a string column's documented
stand-in for values too rare to copy)."""
import warnings

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from fastvae.tabular import RARE, RARE_MIN, CollapseWarning, TableError, TabularVAE  # noqa: E402

KINDS = ["float", "float-gaps", "int", "int-extremes", "Int64-gaps", "bool", "bool-gaps",
         "strings", "strings-gaps", "category", "datetime", "datetime-tz", "timedelta",
         "date-text", "constant", "empty", "ids"]


@st.composite
def frames(draw):
    n = draw(st.integers(2, 40))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    cols = {}
    for j in range(k):
        kind = draw(st.sampled_from(KINDS))
        cols[f"{kind}{j}"] = column(kind, n, rng)
    return pd.DataFrame(cols)


def gaps(values, rng, share=0.25):
    s = pd.Series(values)
    s[rng.random(len(s)) < share] = None
    return s


def column(kind, n, rng):
    if kind == "float":
        return rng.normal(size=n) * 10.0 ** rng.integers(-3, 4)
    if kind == "float-gaps":
        return gaps(rng.normal(size=n), rng).astype("float64")
    if kind == "int":
        return rng.integers(-50, 50, n)
    if kind == "int-extremes":
        return rng.choice(np.array([-2**63, -1, 0, 2**62, 2**63 - 1], dtype=np.int64), n)
    if kind == "Int64-gaps":
        return gaps(rng.integers(0, 9, n), rng).astype("Int64")
    if kind == "bool":
        return rng.random(n) < 0.5
    if kind == "bool-gaps":
        return gaps((rng.random(n) < 0.5).astype(object), rng).astype(object)
    if kind == "strings":
        return rng.choice(["a", "b", "c"], n).astype(object)
    if kind == "strings-gaps":
        return gaps(rng.choice(["x", "y"], n).astype(object), rng).astype(object)
    if kind == "category":
        return pd.Categorical(rng.choice(["lo", "hi"], n), categories=["lo", "hi", "never"])
    if kind == "datetime":
        return pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 500, n), unit="D")
    if kind == "datetime-tz":
        return (pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 500, n),
                                                             unit="h")).tz_localize("UTC")
    if kind == "timedelta":
        return pd.to_timedelta(rng.integers(0, 100, n), unit="s")
    if kind == "date-text":
        d = pd.Timestamp("2021-03-01") + pd.to_timedelta(rng.integers(0, 60, n), unit="D")
        return pd.Series(d.strftime("%Y-%m-%d"), dtype=object)
    if kind == "constant":
        return np.full(n, 7.5)
    if kind == "empty":
        return pd.Series([None] * n, dtype=object)
    return pd.Series([f"id{i:03d}-{rng.integers(10)}" for i in range(n)], dtype=object)


def withheld(real):
    """Whether the rare-value rule keeps every value of column ``real`` out of samples: a
    column of numbers or times with fewer than 2 * RARE_MIN values (or one value in fewer
    than RARE_MIN rows) comes back empty."""
    dt = real.dtype
    numbers = (pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt)
               or pd.api.types.is_datetime64_any_dtype(dt)
               or pd.api.types.is_timedelta64_dtype(dt))
    n = int(real.notna().sum())
    return numbers and 0 < n and (n < 2 * RARE_MIN or real.nunique() == 1 and n < RARE_MIN)


def check_sample(df, s):
    assert list(s.columns) == list(df.columns)
    for c in df.columns:
        want, got = str(df[c].dtype), str(s[c].dtype)
        # (an integer column comes back empty as float64 NaN)
        assert got == want or withheld(df[c]) and got == "float64", (c, got, want)
    for c in df.columns:
        real, syn = df[c], s[c]
        if withheld(real):
            assert syn.isna().all(), c
            continue
        if not real.isna().any():
            assert not syn.isna().any(), c
        present = syn.dropna()
        if present.empty:
            continue
        if c.startswith("ids"):
            continue  # new identifiers, by design
        dt = real.dtype
        if pd.api.types.is_numeric_dtype(dt) and not pd.api.types.is_bool_dtype(dt) \
                or pd.api.types.is_datetime64_any_dtype(dt) \
                or pd.api.types.is_timedelta64_dtype(dt):
            assert present.min() >= real.min() and present.max() <= real.max(), c
        elif c.startswith("date-text"):
            t, r = pd.to_datetime(present), pd.to_datetime(real.dropna())
            assert t.min() >= r.min() and t.max() <= r.max(), c
        else:
            allowed = set(real.dropna()) | ({RARE} if c.startswith("strings") else set())
            assert set(present) <= allowed, (c, set(present) - allowed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(frames())
def test_a_frame_fits_and_samples_alike_or_says_why(df):
    tv = TabularVAE(hidden=(8,), latent_dim=2, backend="cpu", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)
        try:
            tv.fit(df, epochs=1, progress=False)
        except TableError as e:
            assert str(e)  # the documented error, with its reason
            return
        s = tv.sample(50, seed=0)
    check_sample(df, s)
