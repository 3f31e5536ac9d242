"""Table models saved before schema version 2 (fastvae before observed heads and exact
integers), read as version 2 schemas so that they load and sample as they did.

Version 1 kept integer and time columns' numeric maps on their raw values; version 2 maps
offsets from the column's minimum: the knots (or the standardization's mean) move by that
minimum.  Version 1 had no rare-value rule (the ranges samples are clipped to are the
training ranges) and left ignored columns out of samples (they stay out).
"""
from __future__ import annotations

import numpy as np

from .blocktypes import COUNT_KINDS
from .transforms import map_from_config

_TIMES = ("datetime", "timedelta")


def _shift_map(m, lo):
    """A version 1 map config on raw values as a map config on offsets from lo."""
    m = dict(m)
    if m["map"] == "quantile":
        m["q"] = (np.asarray(m["q"], dtype=np.float64) - float(lo)).tolist()
    else:
        m["mean"], m["lo"], m["hi"] = m["mean"] - float(lo), m["lo"] - float(lo), \
            m["hi"] - float(lo)
    map_from_config(m)  # (checked)
    return m


def _column_v1(d):
    d = dict(d)
    src, kind = d["source"], d["kind"]
    out = {k: d.get(k) for k in ("name", "kind", "source", "dtype", "role", "categories",
                                 "ordered", "decimals", "unit", "tz", "mean", "std")}
    out["map"] = d.get("map")
    if kind == "categorical":
        out["rare_values"] = []
        if src == "category":
            out["declared"] = list(d["categories"])
        out["freq"] = {"p": [1.0 / len(d["categories"])] * len(d["categories"])}
        return out
    integral = src == "int" or src in _TIMES or kind in COUNT_KINDS
    lo, hi = d.get("lo"), d.get("hi")
    if integral and lo is not None:
        lo, hi = int(round(lo)), int(round(hi))
        out["signed"] = not str(d["dtype"]).lower().startswith("uint")
    out["lo"], out["hi"], out["slo"], out["shi"] = lo, hi, lo, hi
    if kind == "numeric" and out["map"] is not None and (src == "int" or src in _TIMES):
        out["map"] = _shift_map(out["map"], lo)
    if d.get("role") == "condition" and integral and out["mean"] is not None:
        out["mean"] = out["mean"] - float(lo)  # (version 2 reads offsets from lo)
    return out


def schema_v1(d):
    """A version 1 schema config as a version 2 one."""
    ignored = set(d.get("ignored") or [])
    return {"version": 2, "columns": [_column_v1(c) for c in d["data"]],
            "conditions": [_column_v1(c) for c in d["conditions"]],
            "order": [n for n in d["order"] if n not in ignored], "salt": None}


def marginals_v1(schema, marginals):
    """The conditions' training distributions, kept beside a version 1 schema: category
    frequencies, or 1001 quantiles of raw values."""
    for c in schema.conditions:
        m = marginals.get(str(c.name), marginals.get(c.name))
        if m is None:
            continue
        if c.kind == "categorical":
            c.freq = {"p": list(m), "counts": [10**9] * len(m)}
        else:
            off = 0.0 if c.source == "float" else float(c.lo or 0)
            c.freq = {"quantiles": (np.asarray(m, dtype=np.float64) - off).tolist()}


__all__ = ["schema_v1", "marginals_v1"]
