"""Maps between a numeric column's values and the real line the Gaussian block models.

Two maps, chosen per model (``TabularVAE(numeric=...)``):

- :class:`QuantileNormal` (the default): a value's rank among the training values, sent
  through the standard normal's inverse CDF.  Any marginal (skewed, heavy-tailed, several
  modes, spikes of repeated values) becomes a standard normal one, so a Gaussian block can
  fit it, and the inverse map sends a standard normal back onto the training marginal:
  sampling keeps each column's distribution and never leaves its training range.
- :class:`Standardize`: (value - mean) / std; sampling clips to the training range.

Measured on ggplot2's diamonds (benchmarks/bench_tables.py): the quantile map scores higher
on SDMetrics' column shapes than standardization at the same epochs (the price and carat
marginals are skewed), so it is the default.  Both are plain NumPy and JSON-serializable
(:meth:`config`).

Shapes: ``forward`` and ``inverse`` take and return float64 arrays (N,); NaN stays NaN.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

#: knots of the quantile map (fewer when the column has fewer rows)
N_KNOTS = 1000
#: empty stretches stay empty: a gap between neighbouring training values wider than
#: GAP_SPACINGS mean spacings of the other values in its knot interval gets a knot at each
#: end (the MAX_GAP_KNOTS / 2 widest such gaps), so that the map does not spread samples
#: over it (the nights of a year of flight times: 6 empty hours a day inside 13-hour knot
#: intervals of 40 values each).  The widest of m random spacings is about log(m) of their
#: mean (4 for 50 values), so a column without empty stretches gets few added knots, and
#: those follow its own values.
GAP_SPACINGS, MAX_GAP_KNOTS = 8.0, 2000
#: mapped values are clipped to +-ZMAX: a float32 model's Gaussian cell squares them, and
#: an absurd cell (1e300) must score as very unlikely, not as inf (its score saturates at
#: about 5e29 nats)
ZMAX = 1e15


def normal_ppf(p):
    """Standard normal quantiles of p (n,) in (0, 1), float64 (the standard library's)."""
    nd = NormalDist()
    return np.array([nd.inv_cdf(float(v)) for v in p])


class QuantileNormal:
    """The quantile map to a standard normal, piecewise linear between ``knots`` pairs
    (value quantile q_i, normal quantile z_i).

    Repeated values (an integer column, a spike at 0) are a run of equal q_i: forward sends
    such a value to the middle of its run's z interval, and inverse sends the whole interval
    back to the value, so a spike keeps its mass.  The outermost z are the normal quantiles of
    probability 1/(2n) and 1 - 1/(2n) for n training values (about +-4.4 for 50,000 rows).
    """

    name = "quantile"

    def __init__(self, q, z):
        self.q = np.asarray(q, dtype=np.float64)
        self.z = np.asarray(z, dtype=np.float64)

    @classmethod
    def fit(cls, values):
        """values (n,) float64, finite, at least two distinct."""
        v = np.sort(values)
        n = v.size
        k = min(N_KNOTS, n)
        p = np.linspace(0.0, 1.0, k)
        q = np.quantile(v, p)
        p, q = _gap_knots(v, p, q)
        lo = 0.5 / n
        z = normal_ppf(lo + (1.0 - 2.0 * lo) * p)
        keep = np.r_[True, np.diff(z) > 0]  # (levels a float step apart can share a z)
        return cls(q[keep], z[keep])

    def _tails(self):
        """(slope below, slope above): value per unit of z over the outer 1% of knots (the
        whole range when those knots are one repeated value)."""
        q, z = self.q, self.z
        k = max(1, (q.size - 1) // 100)
        out = []
        for a, b in ((0, k), (q.size - 1 - k, q.size - 1)):
            # (halves: -1e308 .. 1e308 spans more than a float64 holds)
            s = (q[b] / 2 - q[a] / 2) / ((z[b] - z[a]) / 2)
            out.append(s if s > 0 else max((q[-1] / 2 - q[0] / 2) / ((z[-1] - z[0]) / 2),
                                           1e-300))
        return out

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        # the mean of the increasing and the decreasing interpolation: a value that is a
        # run of equal knots maps to the middle of the run (np.interp alone would take the
        # run's last knot going up)
        up = np.interp(x, self.q, self.z)
        down = -np.interp(-x, -self.q[::-1], -self.z[::-1])
        z = 0.5 * (up + down)
        # past the training range the map goes on linearly with its outer slope, so a value
        # far outside scores as unlikely (np.interp would clamp it to the range's edge)
        lo, hi = self._tails()
        below, above = x < self.q[0], x > self.q[-1]
        z[below] = self.z[0] + (x[below] / 2 - self.q[0] / 2) / lo * 2
        z[above] = self.z[-1] + (x[above] / 2 - self.q[-1] / 2) / hi * 2
        # (a float32 model squares these: beyond ZMAX its score would be inf)
        return np.clip(z, -ZMAX, ZMAX)

    def inverse(self, z):
        """Back onto the training values; z past the outer knots gives the range's edges."""
        return np.interp(z, self.z, self.q)

    def config(self):
        return {"map": self.name, "q": self.q.tolist(), "z": self.z.tolist()}


def _gap_knots(v, p, q):
    """The knots (p, q) of sorted values v (n,) with a knot added at each end of the gaps
    wider than GAP_SPACINGS mean spacings of their knot interval's other values.  The near
    end v[j] sits at p = j / (n - 1), where np.quantile puts it; the far end v[j + 1] just
    above it, so that the gap holds next to no mass."""
    n = v.size
    last = np.flatnonzero(v[1:] != v[:-1])  # v[j] < v[j + 1]: a gap after j
    if n < 3 or last.size == 0:
        return p, q
    # (halves: the difference of -1e308 and 1e308 overflows)
    gap = v[last + 1] / 2 - v[last] / 2
    seg = np.clip(np.searchsorted(q, v[last], side="right"), 1, q.size - 1)
    # the mean spacing of the interval's other values: a gap inflates its own interval
    per = (n - 1) / (p.size - 1)
    if per < 2:
        return p, q  # (every value, or nearly, is a knot already)
    rest = np.maximum(q[seg] / 2 - q[seg - 1] / 2 - gap, 0.0)
    with np.errstate(over="ignore"):  # (inf: a gap that fills its interval)
        rel = gap / np.maximum(rest / (per - 1), 1e-300)
    big = np.flatnonzero(rel > GAP_SPACINGS)
    if big.size == 0:
        return p, q
    if big.size > MAX_GAP_KNOTS // 2:
        big = np.sort(big[np.argsort(-rel[big], kind="stable")[:MAX_GAP_KNOTS // 2]])
    j = last[big]
    # the far end sits just above the near one: linear between neighbours, a gap would get
    # a value's share of the mass (1 / (n - 1): 4% of the samples over 200 nights of 4,800
    # values); knots np.quantile put inside a gap go
    lo, hi = j / (n - 1), (j + 1) / (n - 1)
    inside = np.zeros(p.size, bool)
    at = np.searchsorted(lo, p, side="left") - 1  # the gap whose near end is below p
    ok = at >= 0
    inside[ok] = (p[ok] > lo[at[ok]]) & (p[ok] < hi[at[ok]])
    P = np.concatenate([p[~inside], lo, lo + 1e-3 / (n - 1)])
    Q = np.concatenate([q[~inside], v[j], v[j + 1]])
    order = np.lexsort((Q, P))
    P, Q = P[order], np.maximum.accumulate(Q[order])
    keep = np.r_[True, np.diff(P) > 0]
    return P[keep], Q[keep]


class Standardize:
    """(x - mean) / std, with the inverse clipped to the training range [lo, hi]."""

    name = "standard"

    def __init__(self, mean, std, lo, hi):
        self.mean, self.std, self.lo, self.hi = float(mean), float(std), float(lo), float(hi)

    @classmethod
    def fit(cls, values):
        # moments of the values divided by a power of two (exact), so that 1e308 does not
        # overflow the sum of squares
        scale = _power_of_two(values)
        v = values / scale
        return cls(v.mean() * scale, v.std() * scale, values.min(), values.max())

    def forward(self, x):
        # (x - mean could overflow; a float32 model squares the result)
        return np.clip(x / self.std - self.mean / self.std, -ZMAX, ZMAX)

    def inverse(self, z):
        return np.clip(z * self.std + self.mean, self.lo, self.hi)

    def config(self):
        return {"map": self.name, "mean": self.mean, "std": self.std, "lo": self.lo,
                "hi": self.hi}


def _power_of_two(values):
    """A power of two at least half the largest magnitude of ``values`` (1.0 when they are
    all zero): dividing by it is exact and brings them into [-2, 2] (2**1024 itself would
    overflow)."""
    m = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if not np.isfinite(m) or m == 0.0:
        return 1.0
    return float(np.ldexp(1.0, int(np.frexp(m)[1]) - 1))


MAPS = {"quantile": QuantileNormal, "standard": Standardize}


def map_from_config(cfg):
    cfg = dict(cfg)
    kind = cfg.pop("map")
    if kind == "quantile":
        return QuantileNormal(cfg["q"], cfg["z"])
    return Standardize(**cfg)


def decimals(values, most=6):
    """The fewest decimals (0..most) that write every value of ``values`` (finite float64)
    exactly to 1e-9 of its own size, or None when more are needed: sampled values are
    rounded to it, so a price in cents stays in cents (and 1e-300 is not rounded to 0)."""
    values = values[np.abs(values) < 1e15]  # (beyond, every float is a whole number)
    for d in range(most + 1):
        f = 10.0 ** d
        vf = values * f
        if np.all(np.abs(vf - np.round(vf)) <= 1e-9 * np.abs(vf)):
            return d
    return None


def time_unit(ns):
    """The coarsest of day, hour, minute, second, ms, us that divides every int64 time
    ``ns`` (nanoseconds), in nanoseconds (1 when none does): sampled times are rounded to it,
    so a date column stays dates."""
    for unit in (86_400 * 10**9, 3_600 * 10**9, 60 * 10**9, 10**9, 10**6, 10**3):
        if np.all(ns % unit == 0):
            return unit
    return 1


def calendar_unit(ns):
    """"year" when every int64 time ``ns`` (nanoseconds, naive: wall-clock) is midnight of
    a January 1st, "month" when every one is midnight of a month's first day, else None:
    sampled times are rounded to it, so monthly data stays on the first of the month (a
    month is no whole number of nanoseconds, so time_unit cannot say it)."""
    t = np.asarray(ns, dtype=np.int64).astype("datetime64[ns]")
    months = t.astype("datetime64[M]")
    if not np.all(months.astype("datetime64[ns]") == t):
        return None
    years = t.astype("datetime64[Y]")
    return "year" if np.all(years.astype("datetime64[ns]") == t) else "month"


def round_calendar(ns, unit):
    """float64 times ``ns`` (nanoseconds) rounded to the nearest first of a month
    (``unit`` "month") or of a year ("year"), as float64 nanoseconds."""
    step = "datetime64[Y]" if unit == "year" else "datetime64[M]"
    t = np.asarray(ns, dtype=np.float64).astype(np.int64)
    lo = t.astype("datetime64[ns]").astype(step)
    a = lo.astype("datetime64[ns]").astype(np.int64)
    b = (lo + 1).astype("datetime64[ns]").astype(np.int64)
    return np.where(t - a <= b - t, a, b).astype(np.float64)


__all__ = ["QuantileNormal", "Standardize", "MAPS", "map_from_config", "decimals",
           "time_unit", "calendar_unit", "round_calendar"]
