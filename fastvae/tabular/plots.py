"""Pictures of a table model: the real table beside synthetic rows, as PNG files.

- :func:`plot_marginals`: one panel per modeled column.  Numeric, count, datetime and
  timedelta columns: histograms of the real and the synthetic values over the same bins
  (one bin per value for integers with few values), as densities so that tables of
  different lengths compare; when far outliers would squeeze the rest, the bins span the
  real values' 0.5% .. 99.5% quantiles and the tails are counted in the end bins.
  Categorical (and boolean) columns: the share of rows in each category side by side, the
  :data:`MAX_CATEGORIES` most frequent categories of the real table shown and the rest
  summed as "other".  A column's missing cells are left out of its shares and said in its
  title.
- :func:`plot_correlations`: three heatmaps over the modeled and condition columns: the
  association of each pair of columns in the real table, in the synthetic rows, and their
  difference (synthetic - real).  The association of a pair is
    * numeric - numeric: Pearson's correlation r (-1 .. 1, signed);
    * categorical - categorical: Cramér's V = sqrt(chi² / (n (min(r, c) - 1))) (0 .. 1);
    * numeric - categorical: the correlation ratio eta = sqrt(between-category sum of
      squares / total sum of squares) of the numeric column (0 .. 1);
  over the rows where both cells are present (V and eta are not corrected for bias: with
  many categories and few rows they read a little above 0 for independent columns);
  categories as in the marginals (at most :data:`MAX_CATEGORIES`, the rest one "other");
  datetimes as numbers.  A pair with no spread (a constant column among the synthetic
  rows) is grey, as is the diagonal.
- :func:`write_all`: both, and the loss curves (:func:`fastvae.viz.plot_history`), for a
  trained :class:`~fastvae.tabular.TabularVAE` ('fastvae train --data table.csv').

Needs matplotlib (``pip install 'fastvae[viz]'``); only its object-oriented API is used.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..viz import figure, plot_history
from .blocktypes import BY_KIND, COUNT_KINDS

#: categories shown per categorical column; the rest are summed as "other"
MAX_CATEGORIES = 20
#: bins of a numeric histogram (integers with fewer distinct values get one bin each)
BINS = 40
REAL, SYNTH = "C0", "C1"


def _short(text, n=14):
    """``text`` in at most n characters: its start and its end around an ellipsis (labels
    that share a prefix, "city 1" .. "city 30", stay apart)."""
    text = str(text)
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    return text[:head] + "\u2026" + text[len(text) - (n - 1 - head):]


def _kind(col):
    if col.kind == "categorical":
        return "bool" if col.source == "bool" else "categorical"
    if col.is_time:
        return "timedelta" if col.source == "timedelta" else "datetime"
    return BY_KIND[col.kind].label if col.kind in BY_KIND else "numeric"


def _labels(col, s):
    """Series ``s`` of categorical column ``col`` as strings (None for missing cells)."""
    return s.astype(object).where(s.notna(), None).map(lambda v: None if v is None else str(v))


def _top(col, real):
    """The categories shown for ``col``: the most frequent in the real table (then the
    rest of the schema's, in order, while there is room), and whether an "other" is
    needed."""
    counts = _labels(col, real).value_counts()
    cats = [str(c) for c in col.categories]
    order = list(counts.index) + [c for c in cats if c not in counts.index]
    return order[:MAX_CATEGORIES], len(order) > MAX_CATEGORIES


def _codes(col, s, shown):
    """Codes (N,) float: the index in ``shown``, len(shown) for "other", NaN if missing."""
    lab = _labels(col, s)
    idx = {c: i for i, c in enumerate(shown)}
    return np.array([np.nan if v is None else idx.get(v, len(shown)) for v in lab],
                    dtype=np.float64)


def _numbers(col, s):
    """Float values (N,), NaN for missing cells: datetimes and timedeltas in ns."""
    return col.absolute(s)


def _columns(schema, conditions=False):
    return list(schema.data) + (list(schema.conditions) if conditions else [])


# ------------------------------------------------------------------------- marginals
def _hist_panel(ax, col, real, synth):
    r, s = _numbers(col, real), _numbers(col, synth)
    r, s = r[np.isfinite(r)], s[np.isfinite(s)]
    lo, hi = float(r.min()), float(r.max())
    # a few far outliers (a typo, a 0 for unknown) would squeeze the rest into a bin or
    # two: then the bins span the real values' 0.5% .. 99.5% quantiles, and the values
    # beyond go to the end bins (the panel says so)
    qlo, qhi = np.quantile(r, [0.005, 0.995])
    clipped = (qhi > qlo) and (qlo - lo > 0.5 * (qhi - qlo) or hi - qhi > 0.5 * (qhi - qlo))
    if clipped:
        lo, hi = float(qlo), float(qhi)
        r, s = np.clip(r, lo, hi), np.clip(s, lo, hi)
    scale, xlabel = 1.0, "end bins: the 0.5% tails" if clipped else None
    if col.source == "timedelta":
        for unit, name in ((86_400e9, "days"), (3_600e9, "hours"), (60e9, "minutes"),
                           (1e9, "seconds"), (1.0, "ns")):
            if hi - lo >= 3 * unit:
                scale, xlabel = unit, name + (f"; {xlabel}" if xlabel else "")
                break
    integer = col.source == "int" or col.kind in COUNT_KINDS
    if integer and hi - lo + 1 <= BINS:
        edges = np.arange(lo - 0.5, hi + 1.5)
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
    dates = col.is_time and col.source != "timedelta"
    if dates:
        from matplotlib import dates as mdates
        def conv(v):  # ns -> matplotlib's dates
            return mdates.date2num(v.astype("int64").astype("datetime64[ns]"))
        r, s, edges = conv(r), conv(s), conv(np.rint(edges))
        loc = mdates.AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    elif scale != 1.0:
        r, s, edges = r / scale, s / scale, edges / scale
    ax.hist(r, bins=edges, density=True, color=REAL, alpha=0.45, label="real")
    ax.hist(s, bins=edges, density=True, histtype="step", color=SYNTH, linewidth=1.4,
            label="synthetic")
    ax.set_yticks([])
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(axis="x", labelsize=7)
    if not dates:
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 5), useOffset=False)
        ax.xaxis.get_offset_text().set_fontsize(7)


def _bar_panel(ax, col, real, synth):
    shown, other = _top(col, real)
    k = len(shown) + other
    rc, sc = _codes(col, real, shown), _codes(col, synth, shown)
    share = lambda c: np.bincount(c[np.isfinite(c)].astype(np.int64), minlength=k)[:k] \
        / max(1, np.isfinite(c).sum())  # noqa: E731
    x = np.arange(k)
    ax.bar(x - 0.2, share(rc), width=0.4, color=REAL, alpha=0.75, label="real")
    ax.bar(x + 0.2, share(sc), width=0.4, color=SYNTH, alpha=0.75, label="synthetic")
    names = [_short(c, 12) for c in shown] + (["other"] if other else [])
    ax.set_xticks(x)
    long = k > 5 or max(len(n) for n in names) > 6
    ax.set_xticklabels(names, rotation=90 if long else 0, fontsize=7 if k <= 12 else 6)
    ax.set_ylabel("share of rows", fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


#: each column type's marginal panel (blocktypes.ColumnType.panel)
_PANELS = {"bars": _bar_panel, "histogram": _hist_panel}


def plot_marginals(real_df, synth_df, schema, path):
    """One panel per modeled column of ``schema``: the real table's values (``real_df``)
    against the synthetic rows' (``synth_df``); see the module docstring.  Returns the
    path."""
    cols = _columns(schema)
    n = len(cols)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = figure(3.3 * ncols, 2.9 * nrows + 0.7)
    fig.set_layout_engine("constrained")
    handles = None
    for i, col in enumerate(cols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        real, synth = real_df[col.name], synth_df[col.name]
        panel = BY_KIND[col.kind].panel if col.kind in BY_KIND else "histogram"
        _PANELS[panel](ax, col, real, synth)
        miss, smiss = float(real.isna().mean()), float(synth.isna().mean())
        title = f"{_short(col.name, 24)}  [{_kind(col)}]"
        if miss > 0 or smiss > 0:  # the gaps come back too: their rate, side by side
            title += f"\nmissing: {miss:.1%} real, {smiss:.1%} synthetic"
        ax.set_title(title, fontsize=8)
        if handles is None:
            handles = ax.get_legend_handles_labels()
    fig.suptitle(f"marginals: real table ({len(real_df)} rows) against synthetic rows "
                 f"({len(synth_df)})", fontsize=10)
    fig.legend(*handles, loc="outside upper right", fontsize=8, ncols=2)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------- associations
def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    d = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else np.nan


def _cramers_v(a, b):
    a, b = a.astype(np.int64), b.astype(np.int64)
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    r, c = a.max() + 1, b.max() + 1
    if min(r, c) < 2:
        return np.nan
    obs = np.bincount(a * c + b, minlength=r * c).reshape(r, c).astype(np.float64)
    n = obs.sum()
    exp = obs.sum(1, keepdims=True) * obs.sum(0, keepdims=True) / n
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    return math.sqrt(chi2 / (n * (min(r, c) - 1)))


def _eta(x, cat):
    """The correlation ratio of numeric x (N,) over the categories ``cat`` (N,)."""
    _, g = np.unique(cat.astype(np.int64), return_inverse=True)
    total = float(((x - x.mean()) ** 2).sum())
    if total <= 0 or g.max() < 1:
        return np.nan
    n = np.bincount(g).astype(np.float64)
    means = np.bincount(g, weights=x) / n
    between = float((n * (means - x.mean()) ** 2).sum())
    return math.sqrt(min(1.0, between / total))


def associations(df, cols, shown):
    """The (k, k) association matrix of ``df``'s columns ``cols`` (schema Columns);
    ``shown``: each categorical column's categories (the rest: "other")."""
    vals = [(_codes(c, df[c.name], shown[c.name]) if c.kind == "categorical"
             else _numbers(c, df[c.name])) for c in cols]
    k = len(cols)
    m = np.full((k, k), np.nan)  # the diagonal stays grey: a column with itself
    for i in range(k):
        for j in range(i + 1, k):
            a, b = vals[i], vals[j]
            ok = np.isfinite(a) & np.isfinite(b)
            a, b = a[ok], b[ok]
            ci, cj = cols[i].kind == "categorical", cols[j].kind == "categorical"
            if a.size < 2:
                v = np.nan
            elif ci and cj:
                v = _cramers_v(a, b)
            elif ci:
                v = _eta(b, a)
            elif cj:
                v = _eta(a, b)
            else:
                v = _pearson(a, b)
            m[i, j] = m[j, i] = v
    return m


def plot_correlations(real_df, synth_df, schema, path):
    """Heatmaps of the pairwise associations of the real table, the synthetic rows and
    their difference (see the module docstring for the measures).  Returns the path."""
    cols = _columns(schema, conditions=True)
    shown = {c.name: _top(c, real_df[c.name])[0] for c in cols if c.kind == "categorical"}
    real = associations(real_df, cols, shown)
    synth = associations(synth_df, cols, shown)
    k = len(cols)
    side = min(6.0, max(2.6, 0.42 * k + 1.2))
    fig = figure(3 * side + 1.0, side + 1.3)
    fig.set_layout_engine("constrained")
    names = [_short(c.name, 16) for c in cols]
    font = 8 if k <= 8 else 7 if k <= 14 else 6 if k <= 24 else 5
    import matplotlib
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.8")
    im = None
    for i, (m, title) in enumerate(((real, f"real ({len(real_df)} rows)"),
                                    (synth, f"synthetic ({len(synth_df)} rows)"),
                                    (synth - real, "synthetic \u2212 real"))):
        ax = fig.add_subplot(1, 3, i + 1)
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=-1, vmax=1)
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=90, fontsize=font)
        ax.set_yticklabels(names if i == 0 else [], fontsize=font)
        ax.set_title(title, fontsize=9)
        if k <= 12:
            for r in range(k):
                for c in range(k):
                    if np.isfinite(m[r, c]) and r != c:
                        ax.text(c, r, f"{m[r, c]:.2f}", ha="center", va="center",
                                fontsize=max(5, font - 1),
                                color="white" if abs(m[r, c]) > 0.6 else "black")
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="association")
    fig.suptitle("associations between columns: Pearson r (numeric pairs), Cramér's V "
                 "(categorical pairs), correlation ratio \u03b7 (numeric-categorical)",
                 fontsize=9)
    fig.savefig(path)
    return path


def write_all(tv, real_df, outdir, n=5000, seed=0):
    """marginals.png, correlations.png (``real_df`` against min(len(real_df), n) rows of
    ``tv.sample(..., seed=seed)``) and loss.png (when ``tv`` has a history) in ``outdir``;
    returns the paths."""
    os.makedirs(outdir, exist_ok=True)
    synth = tv.sample(min(len(real_df), n), seed=seed)
    paths = [plot_marginals(real_df, synth, tv.schema, os.path.join(outdir, "marginals.png")),
             plot_correlations(real_df, synth, tv.schema,
                               os.path.join(outdir, "correlations.png"))]
    if tv.history:
        paths.append(plot_history(tv.history, os.path.join(outdir, "loss.png")))
    return paths


__all__ = ["plot_marginals", "plot_correlations", "associations", "write_all",
           "MAX_CATEGORIES"]
