"""Synthetic rows in chunks: conditions, codes, the decoder's draws, every column's cells.

:func:`sample_chunks` yields DataFrames of at most :data:`CHUNK` rows; :func:`assemble`
puts them into one table whose columns are filled in place (a NumPy-backed column is
allocated once at its final size and each chunk is copied into it), so the memory a
sample needs beyond the table it returns does not grow with the number of rows.  The
rows depend on the seed alone, not on the chunk size: chunk k draws from its own
generator, spawned from the seed.

Codes come from the model's latent density (:mod:`fastvae.tabular.latent`) when it has
one, else from N(0, I); conditions not given are drawn from their training joint given the
ones given (:mod:`fastvae.tabular.condjoint`; a lone condition from its frequencies or
quantiles), under the rare-value rule.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..core.validate import nonneg_int, user_stacklevel
from . import gaps, margins, orders, rules
from .column import TableError, pandas_module
from .condjoint import marginal_codes
from .free import FreeDraws

#: rows per chunk: the model's work for a sample is this many rows at a time
CHUNK = 8192


def generators(seed):
    """(the run's generator, chunk k -> its generator) for ``seed`` (None, an int or a
    NumPy Generator)."""
    if isinstance(seed, np.random.Generator):
        root = np.random.SeedSequence(seed.integers(0, 2**63))
    else:
        try:
            root = np.random.SeedSequence(None if seed is None else nonneg_int(seed, "seed"))
        except ValueError:
            raise ValueError(f"seed must be None, an integer >= 0 or a numpy Generator, "
                             f"got {seed!r}") from None
    run = np.random.default_rng(root.spawn(1)[0])
    return run, lambda k: np.random.default_rng(
        np.random.SeedSequence(root.entropy, spawn_key=(1, k)))


def draw_conditions(schema, n, rng, skip=(), given=None):
    """A DataFrame (n rows) of condition values drawn from the training distribution: the
    conditions' joint (:mod:`fastvae.tabular.condjoint`) given ``given`` (a DataFrame of
    the given columns, 1 or n rows) when the model has two conditions or more; else a
    categorical condition's frequencies (string values seen in fewer than RARE_MIN rows
    left out, unless that leaves none), a numeric one's quantiles (its protected range).
    The columns named in ``skip`` (given by the caller) are not returned."""
    if schema.joint is not None:
        frame = schema.joint.draw(schema.conditions, n, rng, given)
        return frame.drop(columns=[k for k in skip if k in frame.columns])
    pd = pandas_module()
    cols = {}
    for c in schema.conditions:
        if c.name in skip:
            continue
        if c.kind == "categorical":
            cols[c.name] = c.series(marginal_codes(c, n, rng))
        else:
            q = np.asarray(c.freq["quantiles"], dtype=np.float64)
            u = np.interp(rng.random(n), np.linspace(0.0, 1.0, q.size), q)
            cols[c.name] = c.series(c.finish(u))
    return pd.DataFrame(cols)


class Given:
    """Conditions a caller gives for n rows, checked once (unseen, missing, infinite values
    and unknown names are errors naming them) and handed out a chunk at a time: one value
    per column (a model with one condition may take it bare) is kept as one row, so that
    memory does not grow with n; a column of n values (a dict's lists, a DataFrame) as
    given.  Conditions not given are drawn from their training joint given these
    (:func:`draw_conditions`), chunk by chunk.

    names: the given columns; frame: their values (1 or n rows), in the training dtypes."""

    def __init__(self, schema, n, conditions):
        pd = pandas_module()
        names = [c.name for c in schema.conditions]
        if not names:
            raise TableError("this model has no conditions; conditions= must be None")
        if isinstance(conditions, pd.DataFrame):
            frame = conditions.reset_index(drop=True)
        elif isinstance(conditions, dict):
            for k, v in conditions.items():
                if np.ndim(v) and len(v) != n:
                    raise TableError(f"conditions[{k!r}] has {len(v)} values, and {n} rows "
                                     f"are asked for: give one value or {n}")
            rows = n if any(np.ndim(v) for v in conditions.values()) else 1
            # (a Series counts by position: pandas would align two Series' indexes)
            frame = pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series)
                                      else v if np.ndim(v) else [v] * rows)
                                  for k, v in conditions.items()}, index=range(rows))
        elif len(names) == 1:
            one = np.ndim(conditions) and not isinstance(conditions, str)
            frame = pd.DataFrame({names[0]: conditions if one else [conditions]})
        else:
            raise TableError(f"this model has conditions {names}: pass a dict or a DataFrame "
                             f"with those columns")
        if len(frame) not in (1, n) or isinstance(conditions, pd.DataFrame) and \
                len(frame) != n:
            raise TableError(f"conditions have {len(frame)} rows; {n} are asked for")
        unknown = [k for k in frame.columns if k not in names]
        if unknown:
            raise TableError(f"conditions name {unknown[0]!r}, which is not a condition of "
                             f"this model; its conditions are {names}")
        self.names = [k for k in names if k in frame.columns]
        # (checked as a whole frame: the columns not given stand in with drawn values)
        check = draw_conditions(schema, len(frame), np.random.default_rng(0),
                                skip=self.names)
        for k in self.names:
            check[k] = frame[k].to_numpy()
        schema.encode_conditions(check, where=lambda i: "the given value" if len(frame) == 1
                                 else f"given value {i}")
        self.frame = pd.DataFrame({c.name: _given(c, frame[c.name]) for c in
                                   schema.conditions if c.name in self.names})

    def rows(self, start, m):
        """The given columns of rows start..start+m, a DataFrame of m rows."""
        if len(self.frame) == 1:
            return self.frame.iloc[np.zeros(m, dtype=np.intp)].reset_index(drop=True)
        return self.frame.iloc[start:start + m].reset_index(drop=True)

    def chunk(self, schema, start, m, rng):
        """Every condition column of rows start..start+m: the given ones, and the others
        drawn with ``rng`` (none drawn when every one is given)."""
        pd = pandas_module()
        if not self.names:  # (an empty dict or frame: every condition drawn)
            return draw_conditions(schema, m, rng)
        given = self.rows(start, m)
        if len(self.names) == len(schema.conditions):
            return given
        # (one row of given values stands for every row: the joint reads it once)
        drawn = draw_conditions(schema, m, rng, skip=self.names,
                                given=self.frame if len(self.frame) == 1 else given)
        return pd.DataFrame({c.name: (given[c.name] if c.name in self.names else
                                      drawn[c.name]) for c in schema.conditions})


def given_conditions(schema, n, conditions):
    """``conditions`` as a DataFrame of n rows with every condition column, in its training
    dtype (see :class:`Given`; the ones not given are drawn with a generator of seed 0)."""
    return Given(schema, n, conditions).chunk(schema, 0, n, np.random.default_rng(0))


def _given(c, s):
    """Condition column c's given values (a Series, checked) in the training column's
    dtype: a category stays a category, a time keeps its unit and zone (a time given
    without a zone is in the column's), an integer column's
    values are its integers (a fraction is an error naming it); a numeric condition is not
    clipped to the training range (a value outside it is warned of)."""
    if c.kind == "categorical":
        return c.series(c.codes(s).astype(np.int32))
    keep = np.zeros(len(s), dtype=bool)
    where = lambda i: f"given value {i}"  # noqa: E731
    if c.is_time:
        ns = c.nanoseconds(s, keep, where)
        out = c.series(ns)
        _outside(c, ns)
        return out
    elif c.source == "int":
        out = c.series(c.integers(s, keep, where))
    else:
        out = c.series(pandas_module().to_numeric(s).to_numpy(dtype=np.float64))
    _outside(c, out)
    return out


def _outside(c, given):
    """Warn (once per call) when a numeric condition's given values leave its training
    range: the decoder extrapolates there, and far out its rows all come out alike
    (Salaries' yrs.since.phd, trained on 1 to 56: at 500, 200 samples were one row)."""
    if c.kind != "numeric" or c.lo is None or c.hi is None:
        return
    if c.is_time:  # (nanoseconds: compared exactly, shown as the column's values)
        v = np.asarray(given, dtype=np.int64)
        out = (v < int(c.lo)) | (v > int(c.hi))
        show = lambda x: str(c.series(np.array([x], dtype=np.int64)).iloc[0])  # noqa: E731
    else:
        v = pandas_module().to_numeric(given, errors="coerce").to_numpy(dtype=np.float64)
        out = (v < float(c.lo)) | (v > float(c.hi))
        show = lambda x: f"{x:g}"  # noqa: E731
    if out.any():
        i = int(np.flatnonzero(out)[0])
        warnings.warn(f"condition {c.name!r}: given value {show(v[i])} is outside its "
                      f"training range [{show(c.lo)}, {show(c.hi)}]; the model extrapolates "
                      f"there, and the "
                      f"samples may be poor (far out, alike)", UserWarning,
                      stacklevel=user_stacklevel())


def sample_chunks(tv, n, conditions=None, seed=None, mean=False, chunk=CHUNK):
    """DataFrames of at most ``chunk`` rows, n rows in all, from TabularVAE ``tv`` (see
    :meth:`TabularVAE.sample <fastvae.tabular.TabularVAE.sample>`)."""
    schema, model = tv.schema_, tv.model_
    run, gen = generators(seed)
    given = None if conditions is None else Given(schema, n, conditions)
    free = FreeDraws(schema, run, salt=schema.salt)
    by_name = {c.name: c for c in schema.columns}
    for k, start in enumerate(range(0, n, CHUNK)):
        rng = gen(k)
        m = min(CHUNK, n - start)
        frame = None
        if schema.conditions:
            frame = (draw_conditions(schema, m, rng) if given is None else
                     given.chunk(schema, start, m, rng))
        C = None if frame is None else schema.encode_conditions(frame).astype(model.dtype)
        z = tv.draw_codes(m, rng).astype(model.dtype)
        v = np.asarray(model.kernels.to_numpy(model.decode_values(
            z, mean=mean, seed=rng, conditions=C, shift=tv.calibration_)), dtype=np.float64)
        if tv.margins_:
            margins.apply(v, tv.margins_)
        cells = schema.cells(v, rng, "mean" if mean else "sample", free)
        if tv.gaps_:  # (gaps passed on, before the orders and the rules read them)
            gaps.apply(cells, tv.gaps_)
        if tv.orders_:  # (before the rules, which read the swapped cells)
            orders.apply(cells, tv.orders_, schema)
        out = schema.frame(cells, frame)
        if tv.rules_:  # relations that hold on every training row, kept exactly
            rules.apply(out, tv.rules_, lambda name: by_name[name].series(cells[name][0]))
        if chunk >= CHUNK:
            yield out
        else:  # (smaller pieces for a caller that asked: the rows are the same)
            for s in range(0, m, chunk):
                yield out.iloc[s:s + chunk].reset_index(drop=True)


def assemble(chunks, n):
    """One DataFrame of n rows from DataFrames ``chunks`` (same columns and dtypes): a
    column held in a NumPy array is allocated once and filled chunk by chunk; other
    columns (categories, strings held by pyarrow, nullable integers) are joined at the
    end, one column at a time."""
    pd = pandas_module()
    filled, parts, order, at = {}, {}, None, 0
    for df in chunks:
        if order is None:
            order = list(df.columns)
            for pos, name in enumerate(order):
                s = df.iloc[:, pos]
                if isinstance(s.dtype, np.dtype):
                    filled[pos] = np.empty(n, dtype=s.dtype)
                else:
                    parts[pos] = []
        m = len(df)
        for pos in range(len(order)):
            s = df.iloc[:, pos]
            if pos in filled:
                filled[pos][at:at + m] = s.to_numpy()
            else:
                parts[pos].append(s)
        at += m
    if order is None:
        return pd.DataFrame()
    cols = {}
    for pos, name in enumerate(order):
        if pos in filled:
            a = filled.pop(pos)
            cols[pos] = pd.Series(a, dtype=a.dtype, copy=False)  # (object stays object)
        else:
            cols[pos] = pd.concat(parts.pop(pos), ignore_index=True)
    out = pd.DataFrame(cols, copy=False)
    out.columns = pd.Index(order)
    return out


def check_rows(tv, n, seed, salt, **held):
    """n rows sampled as ``sample`` makes them (a DataFrame), for the checks after
    training: TabularVAE ``tv``'s attributes named in ``held`` take the values given for
    the draw and are put back after it; the draw's seed is ``seed`` (an int) with ``salt``
    (each check its own)."""
    old = {k: getattr(tv, k) for k in held}
    for k, v in held.items():
        setattr(tv, k, v)
    try:
        rows = np.random.SeedSequence((int(seed), salt)).generate_state(1)[0]
        return assemble(sample_chunks(tv, n, seed=int(rows)), n)
    finally:
        for k, v in old.items():
            setattr(tv, k, v)


__all__ = ["CHUNK", "Given", "sample_chunks", "assemble", "check_rows", "draw_conditions",
           "given_conditions", "generators"]
