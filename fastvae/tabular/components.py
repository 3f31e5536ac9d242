"""Columns that are a part of a date column (its year, month, weekday ...), kept exactly
in samples.

Tables often carry a date beside its parts: mosaicData's Births has ``date`` and ``year``,
``month``, ``day_of_month``, ``day_of_year``, ``day_of_week`` and ``wday`` ("Wed").  Each
date is one row, so no value rule (:mod:`~fastvae.tabular.rules`) can tie a part to it,
and the decoder draws the date and each part on its own given the code: 55% of the
sampled dates had another year than their ``year`` cell, 96% another day of the month.

A *component rule* ``C = part(D)``: on every training row where the time column D is
present, column C holds that part of D (one of :data:`PARTS`: calendar numbers, weekday
numbers in four conventions, month and day names in English).  A sample's C is then
computed from its D where D is present.  D is a column of dates or date-times (a datetime
column in its own zone's wall time, or date text in its layout; text with UTC offsets
takes no part), with at least 2 RARE_MIN present cells; C is a column that rules may read
and that is not constant there.  One rule per C: the first D in the table's order, the
first part in PARTS' order.  A column that a value or key rule sets is never D.

Component rules are applied first (:func:`apply`), before the interval, value and key
rules, so a part is final before it sets another column, and no interval rule sets a
part.  A sampled date whose part a categorical column never held (a month the training
dates do not reach) leaves that cell as drawn.  Saved with the model as
``[{"component": D, "layout": L}, C, part]`` in the list of rules (L: D's date text
layout, "" for a datetime column).
"""
from __future__ import annotations

import numpy as np

from .cells import eligible, put
from .column import RARE_MIN, pandas_module
from .values import parse_dates

#: the parts a column may be, in the order they are tried: name -> (kind, how)
PARTS = {
    "year": ("number", lambda t: t.dt.year), "month": ("number", lambda t: t.dt.month),
    "day": ("number", lambda t: t.dt.day), "hour": ("number", lambda t: t.dt.hour),
    "minute": ("number", lambda t: t.dt.minute), "second": ("number", lambda t: t.dt.second),
    "day_of_year": ("number", lambda t: t.dt.day_of_year),
    "quarter": ("number", lambda t: t.dt.quarter),
    # weekdays: Monday 0 (pandas, Python), Monday 1 (ISO), Sunday 0 (C), Sunday 1 (R)
    "weekday": ("number", lambda t: t.dt.day_of_week),
    "isoweekday": ("number", lambda t: t.dt.day_of_week + 1),
    "weekday_sunday0": ("number", lambda t: (t.dt.day_of_week + 1) % 7),
    "weekday_sunday1": ("number", lambda t: (t.dt.day_of_week + 1) % 7 + 1),
    "month_name": ("text", lambda t: t.dt.strftime("%B")),
    "month_abbr": ("text", lambda t: t.dt.strftime("%b")),
    "day_name": ("text", lambda t: t.dt.strftime("%A")),
    "day_abbr": ("text", lambda t: t.dt.strftime("%a")),
}


def is_component(rule):
    """Whether ``rule`` (an entry of a model's rules) is a component rule."""
    return isinstance(rule[0], dict) and "component" in rule[0]


def _layout(col):
    """The date text layout a component rule reads column ``col`` with ("" for a datetime
    column), or None when its parts cannot be read from its cells."""
    if col.source == "datetime":
        return ""
    fmt = col.layout.get("format", "") if col.source == "datetext" else None
    if not fmt or "%z" in fmt or fmt.endswith("Z"):
        return None  # (UTC offsets: the text's wall times are not one zone's)
    return fmt


def _times(s, fmt):
    """Series ``s`` of a time column's cells as datetimes in its wall time (NaT where
    missing): date text in layout ``fmt``, or a datetime column (``fmt`` "")."""
    pd = pandas_module()
    if fmt:
        return pd.Series(parse_dates(s, fmt, pd), index=s.index)
    return pd.to_datetime(s, errors="coerce")


def find(df, schema, rules=()):
    """The component rules of training table ``df`` (see the module docstring), none with
    a D that one of ``rules`` (the value and key rules found) sets."""
    pd = pandas_module()
    set_by = {r[1] for r in rules}
    dates = [c for c in schema.columns if c.modeled and c.is_time and
             c.source in ("datetime", "datetext") and c.name not in set_by]
    parts = [c for c in schema.columns if eligible(c) and c.kind != "constant"]
    out, done = [], set()
    for d in dates:
        fmt = _layout(d)
        if fmt is None:
            continue
        try:
            t = _times(df[d.name], fmt)
        except (ValueError, TypeError):
            continue
        have = t.notna().to_numpy()
        if have.sum() < 2 * RARE_MIN:
            continue
        t = t[have]
        cache = {}
        for c in parts:
            if c.name in done or c.name == d.name:
                continue
            cells = df[c.name][have]
            if cells.isna().any() or cells.nunique() < 2:
                continue
            nums = pd.to_numeric(cells, errors="coerce") if c.source in ("int", "float") \
                else None
            for name, (kind, how) in PARTS.items():
                if (kind == "number") != (nums is not None):
                    continue
                if name not in cache:
                    cache[name] = how(t).to_numpy()
                got = cache[name]
                same = (nums.to_numpy(np.float64) == got) if nums is not None else \
                    (cells.astype(str).to_numpy() == got.astype(str))
                if same.all():
                    out.append([{"component": d.name, "layout": fmt}, c.name, name])
                    done.add(c.name)
                    break
    return out


def apply(frame, rule):
    """Set, in DataFrame ``frame`` (a sample, in place), component rule ``rule``'s column C
    from its time column D where D is present; returns the rows set (bool)."""
    d, c, part = rule[0]["component"], rule[1], rule[2]
    if d not in frame or c not in frame:
        return np.zeros(len(frame), bool)
    t = _times(frame[d], rule[0]["layout"])
    hit = t.notna().to_numpy()
    vals = PARTS[part][1](t[hit]).to_numpy()
    vals = np.array([int(v) for v in vals] if PARTS[part][0] == "number" else list(vals),
                    dtype=object)
    cats = getattr(frame[c].dtype, "categories", None)
    if cats is not None:  # (a category the column never had stays as drawn, not NaN)
        known = np.isin(vals, np.asarray(cats, dtype=object))
        rows = np.flatnonzero(hit)
        hit = np.zeros(len(frame), bool)
        hit[rows[known]] = True
        vals = vals[known]
    frame[c] = put(frame[c], np.flatnonzero(hit), vals)
    return hit


__all__ = ["PARTS", "is_component", "find", "apply"]
