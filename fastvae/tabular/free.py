"""The columns a table model does not hold, drawn when it samples.

- ``constant``: its value in every row (missing where its observed head, if it has one,
  says so; an all-missing column stays all missing);
- ``independent`` (an ignored column): each row drawn on its own from the training values'
  frequencies, or for numbers and times by interpolating their quantiles, under the
  rare-value rule (:data:`~fastvae.tabular.column.RARE_MIN`); missing at the training
  share;
- ``id``: new identifiers of the training values' shape, none a training one and none
  twice in a sampling run; integers continue above the training maximum.

:class:`FreeDraws` keeps what must not repeat over one sampling run (the identifier
counters), so a run drawn chunk by chunk gives unique identifiers in constant memory.
"""
from __future__ import annotations

import base64

import numpy as np

from .column import TableError, pick
from .values import IdDrawer, Taken


class FreeDraws:
    """Draws of one sampling run; ``rng`` seeds the identifier permutations."""

    def __init__(self, schema, rng, salt=None):
        self.drawers = {}
        self.next_int = {}
        for c in schema.free:
            if c.kind == "id" and c.pattern.get("int"):
                self.next_int[c.name] = int(c.hi) + 1
            elif c.kind == "id":
                h = np.frombuffer(base64.b64decode(c.pattern.get("hashes", "")), dtype="<u8")
                taken = Taken(h, salt or b"")
                self.drawers[c.name] = IdDrawer(c.pattern, taken, rng)

    def draw(self, col, n, rng):
        """(store (n,), missing (n,) bool or None) of free column ``col``."""
        if col.kind == "constant":
            return constant_cells(col, n)
        gap = None
        share = col.missing_share or 0.0
        if share >= 1.0:
            gap = np.ones(n, dtype=bool)
        elif share > 0.0:
            gap = rng.random(n) < share
        if col.kind == "id":
            return self._ids(col, n, rng), gap
        f = col.freq
        if "quantiles" in f:
            q = np.asarray(f["quantiles"], dtype=np.float64)
            u = np.interp(rng.random(n), np.linspace(0.0, 1.0, q.size), q)
            return col.finish(u), gap
        p = np.asarray(f["p"], dtype=np.float64)
        if p.size == 0:
            return np.full(n, -1, dtype=np.int32), np.ones(n, dtype=bool)
        codes = pick(p, rng.random(n)).astype(np.int32)
        return codes, gap

    def _ids(self, col, n, rng):
        if col.name in self.next_int:
            start = self.next_int[col.name]
            top = 2**63 - 1 if col.signed is not False else 2**64 - 1
            if start + n - 1 > top:
                raise TableError(f"column {col.name!r}: no {n} new identifiers fit above the "
                                 f"training maximum {col.hi} in 64 bits")
            self.next_int[col.name] = start + n
            dt = np.int64 if col.signed is not False else np.uint64
            return np.arange(start, start + n, dtype=object).astype(dt)
        return self.drawers[col.name].draw(n, rng)


def constant_cells(col, n):
    """(store (n,), missing) of constant column ``col``: its value in every row (all
    missing when it has none)."""
    store = col.store()
    if col.value is None:
        empty = {"code": np.full(n, -1, np.int32), "float": np.full(n, np.nan),
                 "int": np.zeros(n, np.int64), "ns": np.zeros(n, np.int64),
                 "object": np.full(n, None, dtype=object)}[store]
        return empty, np.ones(n, dtype=bool)
    if store == "code":
        return np.zeros(n, dtype=np.int32), None
    if store == "float":
        return np.full(n, float(col.value)), None
    if store in ("int", "ns"):
        dt = np.uint64 if col.signed is False else np.int64
        return np.full(n, int(col.value), dtype=dt), None
    return np.full(n, col.value, dtype=object), None


__all__ = ["FreeDraws", "constant_cells"]
