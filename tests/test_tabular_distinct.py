"""Table inference reads each distinct value once (fastvae.tabular.kinds, rules): the
checks give what their cell-by-cell definitions give, on random columns."""
import numpy as np
import pytest

pd = pytest.importorskip("pandas")

from fastvae.tabular import kinds, rules  # noqa: E402
from fastvae.tabular.column import Column  # noqa: E402
from fastvae.tabular.kinds import TableError  # noqa: E402

POOL = ["1", "2.5", "-", "?", "a b c d", "one two three four five", "x", "1e3", " 7 ", "",
        "NaN", "inf", "99999999999999999999999", "3,5", None, np.nan, "a  b   c d", "True",
        "0x1A", "42", "7", "see the notes below"]


def _columns(seed, count):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 60))
        pool = [POOL[i] for i in rng.choice(len(POOL), int(rng.integers(1, 8)), replace=False)]
        vals = [pool[i] for i in rng.integers(0, len(pool), n)]
        yield pd.Series(vals, dtype=object, index=rng.permutation(n) + 3)


def test_free_text_counts_rows_not_distinct_values():
    for s in _columns(0, 400):
        present = s[s.notna()]
        if not len(present):
            continue
        words = present.astype(str).str.split().str.len()  # cell by cell
        assert kinds._free_text(present) == bool((words >= kinds.TEXT_WORDS).mean() >= 0.5)
    # one long text in most rows, many short ones once each
    s = pd.Series(["a b c d e"] * 6 + [f"v{i}" for i in range(5)], dtype=object)
    assert kinds._free_text(s)
    assert not kinds._free_text(pd.Series(["a b c d e"] * 5 + [f"v{i}" for i in range(6)]))


def _reference_numbers_as_text(s, miss):
    """The check cell by cell, as it was: the message it raises, or None."""
    num = pd.to_numeric(s.where(~pd.Series(miss, index=s.index)), errors="coerce")
    ok = num.notna().to_numpy()
    n = int((~miss).sum())
    bad = ~ok & ~miss
    if not (n and bad.any() and bad.sum() <= kinds.STRAY_SHARE * n):
        return None
    counts = pd.Series(s[bad].astype(str)).value_counts()
    typos = {t for t, c in counts.items()
             if not (c >= kinds.RARE_MIN and any(ch.isalnum() for ch in str(t)))}
    if not typos:
        return None
    i = next(int(j) for j in np.flatnonzero(bad) if str(s.iloc[j]) in typos)
    return f"{s.iloc[i]!r} is not a number, but {int(ok.sum())} of the column's {n} values are"


def test_numbers_as_text_fails_exactly_where_the_cell_by_cell_check_does():
    rng = np.random.default_rng(1)
    strays = ["-", "?", "n/a", "abc", "7 kg", None, np.nan, "", "1,5"]
    seen = {True: 0, False: 0}
    for _ in range(300):
        n = int(rng.integers(20, 200))
        vals = [str(v) for v in rng.integers(0, 50, n)]
        for j in rng.choice(n, int(rng.integers(0, max(1, n // 8))), replace=False):
            vals[j] = strays[int(rng.integers(0, len(strays)))]
        s = pd.Series(vals, dtype=object, index=rng.permutation(n) + 3)
        miss = s.isna().to_numpy()
        want = _reference_numbers_as_text(s, miss)
        col = Column("c", None, "object", "object", "data")
        try:
            kinds._numbers_as_text(col, s, miss, lambda i: f"row {i}")
            got = None
        except TableError as e:
            got = str(e)
        assert (got is None) == (want is None), (vals, got, want)
        assert want is None or want in got
        seen[want is not None] += 1
    assert seen[True] > 20 and seen[False] > 20  # (both outcomes were tried)


@pytest.mark.parametrize("bound", [7, 300, 100_000])
def test_ranks_are_np_unique_s_inverse(bound):
    rng = np.random.default_rng(bound)
    for _ in range(50):
        k = rng.integers(0, bound, int(rng.integers(1, 2000)))
        want = np.unique(k, return_inverse=True)[1].reshape(-1)
        assert np.array_equal(rules._ranks(k, bound), want)
