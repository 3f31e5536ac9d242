"""The joint distribution of a model's condition columns: what a sample draws for the
conditions the caller does not give.

With two conditions or more, drawing each from its own training frequencies loses how they
go together: given rank "AsstProf", Salaries' discipline came out "A" in 44% of the samples,
its share over all rows, where among assistant professors it is 36%; and a sample with no
conditions given paired region and gender independently.  :class:`ConditionJoint` is their
joint, and drawing from it given the conditions that are given is exact for that density:

- **Components.**  Every combination of the categorical conditions' values held by at least
  RARE_MIN training rows is a component, weighted by its rows.  Rarer combinations are left
  out under the rare-value rule (a combination in 2 rows can point at a person).  When the
  kept combinations hold less than MIN_COVER of the rows, the categorical condition with
  the most values leaves the joint and is drawn on its own (from its frequencies, under
  the rare-value rule), until they do.  With no categorical condition in the joint there
  is one component.
- **Numbers.**  A numeric condition is sent to a normal score through its own quantiles (the
  protected range its lone draws already use; a repeated value's rows spread over its run of
  the quantiles, so that the scores are standard normal however discrete the values).  The
  scores are Gaussian within a component, with the component's mean and covariance; the
  covariance is shrunk toward the one pooled over all components by PRIOR_ROWS rows' worth
  (a component of 5 rows does not get a covariance of its own 5 points).  Left alone,
  a score maps back through the same quantiles, so each numeric condition keeps its
  training marginal up to the mixture's departure from a standard normal.
- **Given values.**  A given categorical value keeps the components that hold it.  A given
  number reweights them by its density under each, and the scores still to draw follow the
  Gaussian's regression on it.  Given values that no kept component holds (a rare or unseen
  combination) leave the categorical draws to their own frequencies and the numbers to the
  scores' overall Gaussian, given the numbers that are given.

So a combination the joint draws is one held by RARE_MIN rows or more; where given values
leave the joint, or a condition is drawn on its own, the conditions meet as their own
frequencies make them, and may meet in a combination a few training rows hold.

A model with one condition keeps no joint: its lone draw is its marginal.  Fitting reads at
most FIT_ROWS rows (a seeded subsample).  Shapes: :meth:`ConditionJoint.draw` gives m rows.
"""
from __future__ import annotations

import math

import numpy as np

from .column import RARE_MIN, pandas_module, pick
from .transforms import normal_ppf

#: rows the joint is fit on, at most (a seeded subsample beyond)
FIT_ROWS = 50_000
#: components kept, at most (the most frequent combinations)
MAX_COMPONENTS = 2000
#: the share of the rows the kept combinations must hold: below it, the categorical
#: condition with the most values leaves the joint and is drawn on its own (a column of
#: thousands of values, e.g. flights' tail numbers, would leave a joint of its few common
#: combinations, which skews every other condition's shares)
MIN_COVER = 0.9
#: rows x components evaluated at once when given numbers reweight the components
BLOCK_CELLS = 1 << 20
#: added to the covariances' diagonal (a numeric condition constant within a component
#: would make its covariance singular)
RIDGE = 1e-6
#: rows' worth of the pooled covariance in each component's (shrinkage toward it)
PRIOR_ROWS = 10

_erfc = np.frompyfunc(math.erfc, 1, 1)


def _normal_cdf(z):
    """Phi(z) for z (n,) float64."""
    z = np.asarray(z, dtype=np.float64)
    return _erfc(-z / math.sqrt(2.0)).astype(np.float64) * 0.5


def _unit_run(v, q):
    """(start, end) (n,) each of where numbers v (n,) sit in the quantiles q (G,) on the
    grid 0..1: linear between quantiles (start = end), the ends of a run of equal ones (a
    repeated value), 0 or 1 past the ends."""
    g = np.linspace(0.0, 1.0, q.size)
    down = 1.0 - np.interp(-v, -q[::-1], g)  # (the decreasing interpolation: a run's start)
    return np.minimum(down, np.interp(v, q, g)), np.maximum(down, np.interp(v, q, g))


def _to_unit(v, q):
    """Where numbers v (n,) sit in the quantiles q (G,) on the grid 0..1: the middle of a
    run of equal ones (a repeated value), see :func:`_unit_run`."""
    lo, hi = _unit_run(v, q)
    return 0.5 * (lo + hi)


class ConditionJoint:
    """The joint of condition columns (see the module docstring).

    names : every condition's name, in the schema's order; cats, nums : the positions in
    names of the categorical ones in the joint and of the numeric ones; lone : of the
    categorical ones drawn on their own (too many values to combine); combos (K, len(cats)) int : each
    component's category codes; weights (K,) : the components' shares; means (K, len(nums)),
    covs (K, len(nums), len(nums)) and total (len(nums), len(nums)) : the scores' component
    means and covariances, and their overall covariance; eps : the unit interval's clip
    (half a row's share)."""

    def __init__(self, names, cats, nums, combos, weights, means, covs, total, eps, lone=()):
        self.names, self.cats, self.nums = list(names), list(cats), list(nums)
        self.lone = list(lone)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.combos = np.asarray(combos, dtype=np.int64).reshape(self.weights.size,
                                                                 len(self.cats))
        k, d = self.weights.size, len(self.nums)
        self.means = np.asarray(means, dtype=np.float64).reshape(k, d)
        self.covs = np.asarray(covs, dtype=np.float64).reshape(k, d, d)
        self.total = np.asarray(total, dtype=np.float64).reshape(d, d)
        self.eps = float(eps)

    # ------------------------------------------------------------------ fit
    @classmethod
    def fit(cls, conditions, df):
        """The joint of Column objects ``conditions`` (two or more) over DataFrame ``df``'s
        rows (no missing condition cells: the schema refuses them)."""
        n = len(df)
        rows = np.arange(n)
        if n > FIT_ROWS:
            rows = np.sort(np.random.default_rng(0x0C0D).permutation(n)[:FIT_ROWS])
        sub = df.iloc[rows]
        names = [c.name for c in conditions]
        cats = [i for i, c in enumerate(conditions) if c.kind == "categorical"]
        nums = [i for i, c in enumerate(conditions) if c.kind != "categorical"]
        m = len(rows)
        eps = 0.5 / m
        Z = np.empty((m, len(nums)))
        jitter = np.random.default_rng(0x5C0E)
        for j, i in enumerate(nums):
            c = conditions[i]
            q = _quantiles(c)
            # a repeated value's rows spread evenly over its run of the unit interval (a
            # value outside the protected range is its end's), so that the scores are
            # standard normal and a draw's Phi(z) lands in each run at its share: at the
            # run's middle, a 0/1 flag of 10% ones came back as 1.3% ones
            lo, hi = _unit_run(np.clip(c.numbers(sub[c.name]), q[0], q[-1]), q)
            u = lo + (hi - lo) * jitter.random(m)
            Z[:, j] = normal_ppf(np.clip(u, eps, 1.0 - eps))
        codes = {i: conditions[i].codes(sub[conditions[i].name]).astype(np.int64) for i in cats}
        joint = list(cats)
        while joint:  # (the categories with the most values leave until combinations cover)
            combos, comp, counts = _components(np.stack([codes[i] for i in joint], axis=1))
            if counts.sum() >= MIN_COVER * m:
                break
            joint.remove(max(reversed(joint), key=lambda i: len(conditions[i].categories)))
        if not joint:  # one component: every row
            combos, comp, counts = np.zeros((1, 0), np.int64), np.zeros(m, int), np.array([m])
        lone = [i for i in cats if i not in joint]
        d = len(nums)
        total = np.cov(Z, rowvar=False).reshape(d, d) if m > 1 and d else np.eye(d)
        K = counts.size
        inside = comp >= 0
        means, covs = np.zeros((K, d)), np.zeros((K, d, d))
        ridge = RIDGE * np.eye(d)
        if d:
            np.add.at(means, comp[inside], Z[inside])
            means /= counts[:, None]
            R = Z[inside] - means[comp[inside]]
            np.add.at(covs, comp[inside], R[:, :, None] * R[:, None, :])  # (scatter)
            pooled = covs.sum(0) / max(1, int(inside.sum()) - K)
            covs = (covs + PRIOR_ROWS * pooled) / (counts + PRIOR_ROWS)[:, None, None] + ridge
        return cls(names, joint, nums, combos, counts / counts.sum(), means, covs,
                   total + ridge, eps, lone)

    # ------------------------------------------------------------------ draw
    def draw(self, conditions, m, rng, given=None):
        """The conditions not in ``given`` for m rows: a DataFrame of those columns, in the
        training dtypes.  ``conditions``: the schema's condition Columns (in ``names``'
        order); ``given``: a DataFrame of the given columns (1 row, for every row, or m
        rows), or None."""
        pd = pandas_module()
        given = given if given is not None else pd.DataFrame(index=range(1))
        gcat = [j for j, i in enumerate(self.cats) if self.names[i] in given.columns]
        gnum = [j for j, i in enumerate(self.nums) if self.names[i] in given.columns]
        dcat = [j for j in range(len(self.cats)) if j not in gcat]
        dnum = [j for j in range(len(self.nums)) if j not in gnum]
        g_rows = len(given) if len(given.columns) else 1
        # the given values: category codes and normal scores, (g_rows, .)
        gc = np.stack([conditions[self.cats[j]].codes(given[self.names[self.cats[j]]])
                       .astype(np.int64) for j in gcat], axis=1) if gcat else \
            np.zeros((g_rows, 0), np.int64)
        gz = np.stack([self._score(conditions[self.nums[j]], given[self.names[self.nums[j]]])
                       for j in gnum], axis=1) if gnum else np.zeros((g_rows, 0))
        comp = self._components(gc, gz, gcat, gnum, g_rows, m, rng)  # (m,), -1: none holds
        rows = np.zeros(m, dtype=np.intp) if g_rows == 1 else np.arange(m)
        out = {}
        for j in dcat:
            c = conditions[self.cats[j]]
            codes = np.zeros(m, dtype=np.int64)
            inside = comp >= 0
            codes[inside] = self.combos[comp[inside], j]
            if not inside.all():
                codes[~inside] = marginal_codes(c, int((~inside).sum()), rng)
            out[c.name] = c.series(codes.astype(np.int32))
        for i in self.lone:
            c = conditions[i]
            if c.name not in given.columns:
                out[c.name] = c.series(marginal_codes(c, m, rng))
        if dnum:
            z = self._scores(comp, gz[rows], gnum, dnum, rng)
            for k, j in enumerate(dnum):
                c = conditions[self.nums[j]]
                u = _normal_cdf(z[:, k])
                q = _quantiles(c)
                v = np.interp(u, np.linspace(0.0, 1.0, q.size), q)
                out[c.name] = c.series(c.finish(v))
        return pd.DataFrame({n: out[n] for n in self.names if n in out})

    def _score(self, col, values):
        """Given numbers (a Series) of numeric condition ``col`` as normal scores (a
        repeated value: its run's middle)."""
        u = _to_unit(col.numbers(values), _quantiles(col))
        return normal_ppf(np.clip(u, self.eps, 1.0 - self.eps))

    def _components(self, gc, gz, gcat, gnum, g_rows, m, rng):
        """Each of the m rows' component (-1 where no kept component holds its given
        categories), drawn given the given codes gc and scores gz (g_rows rows)."""
        K = self.weights.size
        if K == 0:
            return np.full(m, -1)
        logw = np.log(np.maximum(self.weights, 1e-300))
        out = np.empty(m, dtype=np.int64)
        block = max(1, BLOCK_CELLS // K)
        if gnum:  # each component's precision and log-determinant over the given scores
            S = self.covs[:, gnum][:, :, gnum]
            Sinv = np.linalg.inv(S)
            logdet = np.linalg.slogdet(S)[1]
        for a in range(0, g_rows, block):
            b = min(g_rows, a + block)
            lw = np.broadcast_to(logw, (b - a, K)).copy()
            if gcat:
                hold = (self.combos[None, :, gcat] == gc[a:b, None, :]).all(-1)
                lw[~hold] = -np.inf
            if gnum:
                r = gz[a:b, None, :] - self.means[None, :, gnum]
                lw += -0.5 * (np.einsum("rki,kij,rkj->rk", r, Sinv, r) + logdet)
            top = lw.max(1)
            ok = np.isfinite(top)
            p = np.exp(lw - np.where(ok, top, 0.0)[:, None])
            p[~ok] = 0.0
            cum = np.cumsum(p, axis=1)
            if g_rows == 1:  # one set of given values for every row
                if not ok[0]:
                    return np.full(m, -1)
                u = rng.random(m) * cum[0, -1]
                return np.minimum(np.searchsorted(cum[0], u, side="right"), K - 1)
            u = rng.random(b - a) * cum[:, -1]
            pick = np.minimum((cum < u[:, None]).sum(1), K - 1)
            out[a:b] = np.where(ok, pick, -1)
        return out

    def _scores(self, comp, gz, gnum, dnum, rng):
        """Standardized scores (m, len(dnum)) of the numbers to draw: Gaussian given the
        given scores gz (m, len(gnum)), within each row's component (the overall Gaussian,
        mean 0, where comp is -1)."""
        m = comp.size
        out = np.empty((m, len(dnum)))
        eps = rng.standard_normal((m, len(dnum)))
        for k in np.unique(comp):
            rows = np.flatnonzero(comp == k)
            mu = self.means[k] if k >= 0 else np.zeros(len(self.nums))
            cov = self.covs[k] if k >= 0 else self.total
            Sdd, mean = cov[np.ix_(dnum, dnum)], np.broadcast_to(mu[dnum], (rows.size, len(dnum)))
            if gnum:
                Sdg, Sgg = cov[np.ix_(dnum, gnum)], cov[np.ix_(gnum, gnum)]
                B = np.linalg.solve(Sgg, Sdg.T).T  # (regression of the drawn on the given)
                mean = mean + (gz[rows] - mu[gnum]) @ B.T
                Sdd = Sdd - B @ Sdg.T
            L = np.linalg.cholesky(0.5 * (Sdd + Sdd.T) + RIDGE * np.eye(len(dnum)))
            out[rows] = mean + eps[rows] @ L.T
        return out

    # ------------------------------------------------------------------ files
    def config(self):
        return {"names": self.names, "cats": self.cats, "nums": self.nums, "lone": self.lone,
                "combos": self.combos.tolist(), "weights": self.weights.tolist(),
                "means": self.means.tolist(), "covs": self.covs.tolist(),
                "total": self.total.tolist(), "eps": self.eps}

    @classmethod
    def from_config(cls, d):
        return cls(d["names"], d["cats"], d["nums"], d["combos"], d["weights"], d["means"],
                   d["covs"], d["total"], d["eps"], d.get("lone", ()))


def _components(codes):
    """(combos (K, c), each row's component (n,) or -1, counts (K,)) of category codes
    (n, c): the combinations in RARE_MIN rows or more (the MAX_COMPONENTS most frequent)."""
    combos, inverse, counts = np.unique(codes, axis=0, return_inverse=True,
                                        return_counts=True)
    keep = np.flatnonzero(counts >= RARE_MIN)
    if keep.size > MAX_COMPONENTS:
        keep = np.sort(keep[np.argsort(-counts[keep], kind="stable")[:MAX_COMPONENTS]])
    place = np.full(len(combos), -1)
    place[keep] = np.arange(keep.size)
    return combos[keep], place[inverse.reshape(-1)], counts[keep]


def _quantiles(col):
    """A numeric condition's quantiles (its protected range), in its numbers' space."""
    return np.asarray(col.freq["quantiles"], dtype=np.float64)


def marginal_codes(col, n, rng):
    """n codes of categorical condition ``col`` from its own frequencies (string values in
    fewer than RARE_MIN rows left out, unless that leaves none)."""
    p = np.asarray(col.freq["p"], dtype=np.float64)
    if col.strings:
        keep = np.asarray(col.freq["counts"]) >= RARE_MIN
        if keep.any():
            p = np.where(keep, p, 0.0)
    return pick(p, rng.random(n)).astype(np.int32)


__all__ = ["ConditionJoint", "marginal_codes", "FIT_ROWS", "MAX_COMPONENTS"]
