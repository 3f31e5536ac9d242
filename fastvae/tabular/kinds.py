"""Reading a table's columns: what each one holds, and the :class:`~fastvae.tabular.column.Column`
that models it.

Inference, each step overridable with ``types={column: TYPE}`` (:data:`TYPES`):

- bool, ``boolean``, category and string columns -> ``categorical``.  A string column
  models its values seen in at least :data:`~fastvae.tabular.column.RARE_MIN` rows (at most
  :data:`MAX_CATEGORIES`, the most frequent); the rest share one rare bucket, written back
  as :data:`~fastvae.tabular.column.RARE`.  Booleans and a Categorical's declared
  categories are a fixed vocabulary, not personal values: each is a category of its own;
- a string column whose values are all different (at least :data:`MIN_ID_ROWS` of them),
  or all rare with at least :data:`ID_LIKE_SHARE` of them distinct -> ``id``: written back
  as new identifiers of the values' shapes, never a training value; but free text (half
  its values of :data:`TEXT_WORDS` words or more, whose shapes are no identifier's) is a
  categorical column like any other: its rare values come back as the rare bucket;
- a string column whose values all parse as dates or date-times in one layout (plain
  numbers and years do not) -> a datetime, written back as text in that layout;
- integer, float, datetime (with or without a time zone), timedelta and date columns ->
  ``numeric`` (times in nanoseconds, sampled at the coarsest unit their values use); a
  column of numbers with at most :data:`DISCRETE_CATEGORIES` values, each seen in
  :data:`DISCRETE_ROWS` rows on average, is ``categorical`` over its numbers (written back
  as numbers of its dtype), and one of at most :data:`DISCRETE_MAX` such values samples
  only those values;
- a column with one value (or none: every cell missing) -> constant, written back as it is,
  under the rare-value rule: a value in fewer than RARE_MIN rows is written ``RARE`` (text)
  or as missing cells (numbers, times), and so is a column of numbers or times with fewer
  than 2 * RARE_MIN values (its protected range would be one or two people's values);
- ``count`` (negative binomial) and ``poisson``: integer counts, only when asked;
- ``ignore``: left out of the model and drawn on its own from its training values.

A column label must be a string or an integer (it comes back as it went in); a column that
cannot be read (lists, complex numbers, strings beside numbers) is an error naming it and
the fix, unless it is ignored.
"""
from __future__ import annotations

import datetime as _dt
import numbers

import numpy as np

from .blocktypes import COUNT_KINDS
from .column import (Column, RARE, RARE_MIN, TableError, pandas_module, plain)
from .transforms import MAPS, calendar_unit, decimals, time_unit
from .values import date_format, date_layout, id_hashes, id_pattern, wall_times

#: the column types a user can ask for, and what each is called inside
TYPES = {"numeric": "numeric", "categorical": "categorical", "category": "categorical",
         "count": "negbin", "negbin": "negbin", "nb": "negbin", "poisson": "poisson",
         "zinb": "zinb",
         "datetime": "datetime", "id": "id", "ignore": "ignore"}
#: the most categories a categorical column models (its most frequent values); the rest
#: share the rare bucket
MAX_CATEGORIES = 1000
#: a string column of all-different values is an identifier from this many rows on
MIN_ID_ROWS = 20
#: ... and so is one whose every value is rare (in fewer than RARE_MIN rows: none may be
#: written back) with at least this share of distinct values: tail numbers or names with
#: a few repeats come back as new values of their shapes, not as one "_RARE_" (a string
#: column of few values, each rare, still does)
ID_LIKE_SHARE = 0.5
#: an integer column of all-different values numbers the rows (an identifier) when they
#: are 0..n-1 or 1..n, or from this many rows on when they fill at least ID_DENSE of the
#: span between their smallest and largest (see kinds._enumeration)
ID_DENSE_ROWS, ID_DENSE = 1000, 0.5
#: ... and no other numeric column's ranks correlate with its ranks by this much or more
#: (a rank 1..n beside its score, -0.985, is a number; a row index of shuffled rows is not)
ENUM_RELATED = 0.3
#: a string column whose values are mostly of this many words or more is free text, not an
#: identifier (drawn from its characters' classes, "Custom version, not available on
#: Amazon.com" came back as "LnrOoxdjvghtwAaaAAaaaaaAAaaaa...")
TEXT_WORDS = 4
#: quantiles kept of an ignored numeric column (it is drawn by interpolating them)
FREE_QUANTILES = 1001
#: a text column of numbers whose other values are at most this share of its cells is a
#: column of numbers with typos (an error naming the first), not a column of labels
STRAY_SHARE = 0.1
#: a numeric column is discrete (its samples take its own values) when it has at most
#: DISCRETE_MAX distinct values and DISCRETE_ROWS rows per value on average: a minute of
#: the hour, a year, a count of children, a distance between two airports ...
DISCRETE_MAX, DISCRETE_ROWS = 1000, 10
#: ... and when its values seen in RARE_MIN rows or more hold at least this share of its
#: rows: samples take only those values, and a long tail of rare values (a dollar amount,
#: 86% zeros and 896 values, most in a row or two) would come back as the largest of the
#: few frequent ones (openintro loans_full_schema: 250 where the data reach 199,308)
DISCRETE_COVER = 0.95
#: ... and with at most DISCRETE_CATEGORIES values it is modelled as categories of numbers:
#: a Gaussian on the quantile map spills the mass of a small value into a large neighbour
#: (a year, a count of children: 0 took 40% of the samples where the data has 27%)
DISCRETE_CATEGORIES = 100


def check_label(label):
    """A column label as fastvae keeps it: a str or an int (NumPy ints become ints);
    anything else is a TableError."""
    if isinstance(label, str):
        return label
    if isinstance(label, (numbers.Integral, np.integer)) and not isinstance(
            label, (bool, np.bool_)):
        return int(label)
    raise TableError(f"column label {label!r} ({type(label).__name__}): fastvae takes "
                     f"tables whose column labels are strings or integers; rename the "
                     f"column (df.columns = [str(c) for c in df.columns])")


def check_labels(columns):
    """The labels of a DataFrame's columns, checked: strings or integers, and no two that
    a file would write alike (1 and '1', or a name given twice)."""
    labels = [check_label(c) for c in columns]
    seen = {}
    for c in labels:
        seen.setdefault(str(c), []).append(c)
    dup = [v for v in seen.values() if len(v) > 1]
    if dup:
        shown = ", ".join(" and ".join(repr(x) for x in v) for v in dup)
        raise TableError(f"the table has duplicate column names ({shown}); every column "
                         f"needs a name of its own")
    return labels


# ------------------------------------------------------------------ sources
def _strings_or_mixed(name, vals):
    """source of an object column's present values ``vals`` (object array)."""
    kinds = {type(v) for v in vals}
    if not kinds:
        return "object"
    if kinds <= {str, np.str_}:
        return "object"
    if kinds <= {bool, np.bool_}:
        return "bool"
    if all(issubclass(k, (_dt.datetime, np.datetime64)) for k in kinds):
        zones = sorted({"no time zone" if getattr(v, "tzinfo", None) is None else
                        str(v.tzinfo) for v in vals})
        if len(zones) > 1:
            return ("unreadable", f"column {name!r} holds date-times in more than one time "
                    f"zone ({', '.join(zones[:4])}); make them one: "
                    f"df[{name!r}] = pd.to_datetime(df[{name!r}], utc=True)")
        return "datetime"
    if all(issubclass(k, _dt.date) and not issubclass(k, _dt.datetime) for k in kinds):
        return "date"
    # (before the numbers: NumPy's timedelta64 is a subclass of its integers)
    if all(issubclass(k, (_dt.timedelta, np.timedelta64)) for k in kinds):
        return "timedelta"
    if all(issubclass(k, (numbers.Integral, np.integer)) and not issubclass(k, (bool, np.bool_))
           for k in kinds):
        return "int"
    if all(issubclass(k, (numbers.Real, np.floating, np.integer)) and
           not issubclass(k, (bool, np.bool_)) for k in kinds):
        return "float"
    hashable = all(k.__hash__ is not None for k in kinds)
    simple = all(issubclass(k, (str, np.str_, numbers.Real, np.generic)) for k in kinds)
    if hashable and simple and len(kinds) > 1:
        return "mixed"
    shown = ", ".join(sorted(k.__name__ for k in kinds))
    # (Decimal is a Number but not Complex: it converts to float; complex does not)
    how = (f" (df[{name!r}].astype(float))" if all(
        issubclass(k, numbers.Number) and not issubclass(k, numbers.Complex)
        for k in kinds) else "")
    return ("unreadable", f"column {name!r} holds values of type {shown}, which fastvae "
            f"cannot model; convert them{how}, or pass types={{{name!r}: 'ignore'}}")


def source_of(name, s):
    """What the values of Series ``s`` are: "float", "int", "bool", "category", "object"
    (strings), "mixed" (strings beside numbers), "datetime", "timedelta", "date"; or
    ("unreadable", why)."""
    pd = pandas_module()
    t = pd.api.types
    dt = s.dtype
    if t.is_bool_dtype(dt):
        return "bool"
    if isinstance(dt, pd.CategoricalDtype):
        return "category"
    if t.is_datetime64_any_dtype(dt):
        return "datetime"
    if t.is_timedelta64_dtype(dt):
        return "timedelta"
    if t.is_complex_dtype(dt):
        return ("unreadable", f"column {name!r}: complex numbers are not supported; split "
                "them into real and imaginary columns, or pass types={%r: 'ignore'}" % name)
    if t.is_integer_dtype(dt):
        return "int"
    if t.is_float_dtype(dt):
        return "float"
    if t.is_string_dtype(dt) and dt != object:
        return "object"
    if dt == object:
        return _strings_or_mixed(name, s.dropna().to_numpy(dtype=object))
    return ("unreadable", f"column {name!r}: dtype {dt} is not supported; convert it, or "
            f"pass types={{{name!r}: 'ignore'}}")


# ------------------------------------------------------------------ columns
def _protected(sorted_vals):
    """(slo, shi): the RARE_MIN-th smallest and largest of sorted values (nearer the middle
    when there are fewer than 2 * RARE_MIN of them)."""
    n = len(sorted_vals)
    return (sorted_vals[min(RARE_MIN - 1, (n - 1) // 2)],
            sorted_vals[max(n - RARE_MIN, n // 2)])


def _categories(col, present):
    """The categorical column ``col``'s modelled values (in the dtype's order, or sorted),
    its values too rare to copy, the modelled values' training frequencies, and the
    frequent values beyond the cap with theirs.  Only strings are held to
    :data:`RARE_MIN`; a column models at most :data:`MAX_CATEGORIES` values, its most
    frequent."""
    pd = pandas_module()
    counts = pd.Series(present.to_numpy(dtype=object)).value_counts(sort=False)
    vals = [plain(v) for v in counts.index]
    cnt = counts.to_numpy()
    if col.source == "category":
        order = {v: i for i, v in enumerate(col.declared)}
        rank = np.array([order[v] for v in vals])
    else:
        try:
            rank = np.argsort(np.argsort(np.array(vals, dtype=object), kind="stable"))
        except TypeError:  # values that do not compare (mixed)
            rank = np.argsort(np.argsort(np.array([str(v) for v in vals]), kind="stable"))
    # (strings and numbers are held to the rare-value rule; a bool and a Categorical's
    # declared categories are a fixed vocabulary, not personal values)
    least = RARE_MIN if col.strings or col.source in ("int", "float") else 1
    frequent = [i for i in range(len(vals)) if cnt[i] >= least]
    over = []
    if len(frequent) > MAX_CATEGORIES:
        by_count = sorted(frequent, key=lambda i: (-cnt[i], rank[i]))
        frequent, over = by_count[:MAX_CATEGORIES], sorted(by_count[MAX_CATEGORIES:],
                                                           key=lambda i: rank[i])
    frequent = sorted(frequent, key=lambda i: rank[i])
    keep = set(frequent) | set(over)
    rare = sorted((i for i in range(len(vals)) if i not in keep), key=lambda i: rank[i])
    total = cnt.sum()
    others = {"others": [vals[i] for i in over],
              "others_p": [float(cnt[i] / total) for i in over]} if over else {}
    return ([vals[i] for i in frequent], [vals[i] for i in rare],
            [float(cnt[i] / total) for i in frequent], others)


def _json_ok(v):
    return v is None or isinstance(v, (str, bool, int, float))


def make_column(name, s, asked, role, numeric, salt, where=None):
    """The Column of Series ``s`` named ``name``: ``asked`` a type of :data:`TYPES` (None:
    inferred), ``role`` "data" or "condition", ``numeric`` the numeric map's name,
    ``salt`` the bytes an id column's hashes are keyed with; ``where`` (a position of s ->
    "line 7", "row 'a'") names a row in errors."""
    where = where or (lambda i: f"row {s.index[i]!r}")
    word, asked = asked, (TYPES.get(asked) if asked is not None else None)
    source = source_of(name, s)
    dtype = str(s.dtype)
    if asked == "ignore":
        return _independent(name, s, source, dtype)
    if isinstance(source, tuple):
        raise TableError(source[1])
    miss = s.isna().to_numpy()
    present = s[~miss]
    col = Column(name, None, source, dtype, role)
    if source == "category":
        col.declared = [plain(c) for c in s.cat.categories]
        col.ordered = bool(s.cat.ordered)
        bad = [c for c in col.declared if not _json_ok(c)]
        if bad:
            raise TableError(f"column {name!r}: categories of type {type(bad[0]).__name__} "
                             f"({bad[0]!r}) are not supported; make them strings "
                             f"(s.cat.rename_categories(str)), or pass types={{{name!r}: "
                             f"'ignore'}}")
    if source == "object" and asked is None:
        _numbers_as_text(col, s, miss, where)
    if source == "object" and asked in (None, "datetime", "numeric"):  # (a time is numeric)
        strings = present.astype(object).to_numpy(dtype=object)
        pd = pandas_module()
        # (the distinct values, sorted: hashed first, so that only they are sorted)
        fmt = date_format(np.sort(pd.unique(strings)), pd) if strings.size else None
        if fmt is not None:
            col.source, col.layout = "datetext", date_layout(strings, fmt, pd)
            source = "datetext"
        elif asked == "datetime":
            first = strings[0] if strings.size else None
            raise TableError(f"column {name!r} was asked to be datetime, but {first!r} is "
                             f"not a date in a layout fastvae reads (2024-03-05, "
                             f"2024-03-05 14:30:00, 03/05/2024, ...)")
    if asked == "datetime" and col.source not in ("datetext", "datetime", "date"):
        raise TableError(f"column {name!r} holds {source} values; datetime is for dates "
                         f"and date-times (or text that writes them)")
    if role == "condition":
        return _condition(col, s, present, asked, where)
    col.gaps = bool(miss.any())
    if len(present) == 0:  # every cell missing: written back so
        col.gaps = False
        col = _constant(col, None)
        col.missing_share = 1.0
        return col
    if source == "mixed" and asked not in ("categorical", "id"):
        types_ = {type(v) for v in present}
        shown = ", ".join(sorted(k.__name__ for k in types_))
        # numbers beside strings: often a number column with a few typos or markers
        numeric = any(issubclass(k, (numbers.Real, np.number)) and
                      not issubclass(k, (bool, np.bool_)) for k in types_) and \
            any(issubclass(k, str) for k in types_)
        hint = (f" (pd.to_numeric(df[{name!r}], errors='coerce') reads the strings as "
                f"missing)" if numeric else "")
        raise TableError(f"column {name!r} holds values of types {shown} side by side; "
                         f"make it one type{hint}, or pass types={{{name!r}: "
                         f"'categorical'}}")
    if asked == "id":
        return _identifier(col, present, miss, salt)
    if asked == "categorical" or (asked is None and source in ("bool", "category", "object",
                                                               "mixed")):
        if asked is None and source == "object" and len(present) >= MIN_ID_ROWS and \
                not _free_text(present):
            k = present.nunique()
            if k == len(present):
                return _identifier(col, present, miss, salt)
            if k >= ID_LIKE_SHARE * len(present):
                cats = _categories(col, present)
                if not cats[0]:
                    return _identifier(col, present, miss, salt)
                return _categorical(col, present, cats)
        return _categorical(col, present)
    if source in ("bool", "category", "object", "mixed"):
        raise TableError(f"column {name!r} holds {source if source != 'object' else 'string'} "
                         f"values; it can be 'categorical', 'id' or 'ignore', not "
                         f"{asked!r}")
    if asked is None and source == "int" and role == "data" and _enumeration(present):
        col.enumeration = True  # (an identifier unless it follows another column: infer)
    if asked is None and source in ("int", "float") and _few_values(present):
        return _categorical(col, present)  # a number of a few values: one of them, exactly
    return _numbers(col, s, miss, asked, numeric, where, word)


def _enumeration(present):
    """Whether integers ``present`` (a Series) number the rows: all different, and either
    exactly 0..n-1 or 1..n (a row number, the index a CSV export writes), or from
    ID_DENSE_ROWS rows on, at least ID_DENSE of the integers between their smallest and
    largest (draws of a measurement that many that close together would repeat many times:
    these are enumerated, record ids).  Modelled as a number, such a column came back as
    training ids (ratdat's record_id: 68.7% of the samples).  The schema makes it an
    identifier only when no other number follows it (a rank beside its score, a trend's
    time index stay numbers: :data:`ENUM_RELATED`)."""
    n = len(present)
    if n < MIN_ID_ROWS:
        return False
    v = present.to_numpy()
    if v.dtype == object or v.dtype.kind not in "iu":
        try:
            v = np.array([int(x) for x in v], dtype=object)
        except (TypeError, ValueError):
            return False
    lo, hi = int(v.min()), int(v.max())
    span = hi - lo + 1
    if span < n or (span > n and (n < ID_DENSE_ROWS or n < ID_DENSE * span)):
        return False
    if span == n and lo not in (0, 1) and n < ID_DENSE_ROWS:
        return False  # (a run of years 1950..2020: a number)
    return len(np.unique(v)) == n


def _free_text(present):
    """Whether at least half of a string column's values have TEXT_WORDS words or more.
    (Words are counted once per distinct value, weighted by its rows: a column of 50,000
    rows and a few hundred values is read in milliseconds.)"""
    pd = pandas_module()
    codes, uniq = pd.factorize(present)
    words = pd.Series(uniq, dtype=object).astype(str).str.split().str.len()
    rows = np.bincount(codes, minlength=len(uniq))
    return bool(rows[(words >= TEXT_WORDS).to_numpy()].sum() >= 0.5 * len(codes))


def _few_values(present):
    """Whether a column of numbers takes few enough values, each seen often enough, to be
    modelled as categories of numbers (see DISCRETE_CATEGORIES)."""
    k = present.nunique()
    return 2 <= k <= DISCRETE_CATEGORIES and len(present) >= DISCRETE_ROWS * k and \
        bool(np.isfinite(pd_numeric(present)).all())


def pd_numeric(s):
    return pandas_module().to_numeric(s, errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)


def _numbers_as_text(col, s, miss, where):
    """A column of text whose values are numbers but for a few (at most STRAY_SHARE of
    them: a typo, a marker such as "-" in a CSV file, which makes pandas read the whole
    column as text) is an error naming the first one: modelled as text it would come back
    as categories or identifiers.  More than that is a column of labels (playing cards'
    2..10, J, Q, K, A; course numbers 101A): categorical.  So is a column whose texts are
    words or codes each seen in RARE_MIN rows or more (a school grade 9..12 or "other"; a
    family number or "136A"): a label that recurs is no typo.  A recurring token with no
    letter or digit ("-", "?") still marks a missing number, and the error names the first
    stray that is no such label.  (Texts that only share a shape are no labels: "1,031"
    thousands, "72kg", "66,6" are numbers written otherwise; ZIP+4 codes "98121-1334"
    among five-digit ones are too, for this rule: pass the column as categorical.)"""
    pd = pandas_module()
    # (each distinct value read once: to_numeric reads cell by cell)
    codes, uniq = pd.factorize(s)
    readable = pd.to_numeric(pd.Series(uniq, dtype=object), errors="coerce").notna()
    ok = np.append(readable.to_numpy(dtype=bool), False)[codes] & ~miss
    n = int((~miss).sum())
    bad = ~ok & ~miss
    if not (n and bad.any() and bad.sum() <= STRAY_SHARE * n):
        return
    counts = pd.Series(s[bad].astype(str)).value_counts()
    typos = {t for t, c in counts.items()
             if not (c >= RARE_MIN and any(ch.isalnum() for ch in str(t)))}
    if typos:
        i = next(int(j) for j in np.flatnonzero(bad) if str(s.iloc[j]) in typos)
        raise TableError(f"column {col.name!r}, {where(i)}: {s.iloc[i]!r} is not a number, "
                         f"but {int(ok.sum())} of the column's {n} values are; fix or blank "
                         f"the cell (a blank cell is a missing one), or pass "
                         f"types={{{col.name!r}: 'categorical'}}")


def _constant(col, value):
    col.kind, col.value = "constant", value
    col.missing_share = 0.0
    return col


def _withheld(col):
    """A column none of whose values may be written back: it comes back empty (every cell
    missing).  A column of numbers or times whose present values are fewer than
    2 * RARE_MIN (the protected range, from the RARE_MIN-th smallest to the RARE_MIN-th
    largest, would be one or two people's values), or whose one value is in fewer than
    RARE_MIN rows."""
    col.gaps = False
    col = _constant(col, None)
    col.missing_share = 1.0
    col.withheld = True  # (for the messages only: not saved)
    return col


def _categorical(col, present, cats=None):
    """``col`` as a categorical (or constant) column of ``present``; ``cats``:
    _categories(col, present) when the caller has it already."""
    cats, rare, p, others = cats if cats is not None else _categories(col, present)
    if not cats and not others:  # every value is rare: none may be written back
        return _constant(col, RARE) if col.strings else _withheld(col)
    if len(cats) == 1 and not rare and not others:
        return _constant(col, cats[0])
    col.kind, col.categories, col.rare_values = "categorical", cats, rare
    col.freq = {"p": p, **others}
    return col


def _numbers(col, s, miss, asked, numeric, where, word=None):
    """A numeric or count column (or a constant) of the numbers, times or integers in s;
    miss (N,) its missing cells; ``word`` the type as the user asked for it."""
    kind = asked or "numeric"
    word = word or kind
    name = col.name
    present = s[~miss]
    rows = np.flatnonzero(~miss)  # present cell i is row rows[i] of s
    if col.source in ("datetime", "timedelta", "date", "datetext"):
        if kind not in ("numeric", "datetime"):
            raise TableError(f"column {name!r} holds times; it can be 'numeric' (the "
                             f"default), 'categorical', 'id' or 'ignore', not {asked!r}")
        kind = "numeric"
    if col.source == "int":
        col.signed = _signed(name, s, present)
    col.kind = kind
    if col.is_time:
        col.lo = col.hi = 0
        ns = col.nanoseconds(present, np.zeros(len(present), bool),
                              lambda i: where(rows[i]))
        ns = np.sort(ns)
        col.lo, col.hi = int(ns[0]), int(ns[-1])
        if col.source == "datetime":
            tz = getattr(s.dt, "tz", None) if hasattr(s, "dt") else None
            col.tz = None if tz is None else str(tz)
        # (a zoned column's unit and calendar are its wall clock's: local midnights are
        # dates, though their UTC times are hours apart across a clock change)
        wall = ns if not col.tz else wall_times(ns, col.tz, pandas_module())
        col.wall = True if col.tz else None
        col.unit = time_unit(wall)
        col.slo, col.shi = (int(v) for v in _protected(ns))
        if len(ns) < 2 * RARE_MIN and col.role != "condition":
            return _constant(col, col.lo) if col.lo == col.hi and len(ns) >= RARE_MIN \
                else _withheld(col)
        if col.lo == col.hi:
            return _constant(col, col.lo)
        if col.unit == 86_400 * 10**9 and col.source != "timedelta":
            col.calendar = calendar_unit(wall)
        off = np.sort((ns - ns[0]).astype(np.uint64).astype(np.float64))
        col.map = MAPS[numeric].fit(off)
        col.support = _support(off, float(col.slo - col.lo), float(col.shi - col.lo))
        return col
    if col.source == "int":
        ints = np.sort(col.integers(present, np.zeros(len(present), bool),
                                     lambda i: where(rows[i])))
        lo, hi = int(ints[0]), int(ints[-1])
        if kind in COUNT_KINDS and lo < 0:
            raise TableError(f"column {name!r} was asked to be {word!r} (counts), but holds "
                             f"{lo}: counts are integers >= 0")
        col.lo, col.hi = lo, hi
        col.slo, col.shi = (int(v) for v in _protected(ints))
        if len(ints) < 2 * RARE_MIN and col.role != "condition":
            return _constant(col, lo) if lo == hi and len(ints) >= RARE_MIN else \
                _withheld(col)
        if lo == hi:
            return _constant(col, lo)
        if kind in COUNT_KINDS:
            return col
        off = _offsets(ints, lo, col.signed)
        col.map = MAPS[numeric].fit(off)
        col.support = _support(off, float(col.slo - lo), float(col.shi - lo))
        return col
    v = col.numbers(present, lambda i: where(rows[i]))
    bad = ~np.isfinite(v)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TableError(f"{col.title}, {where(rows[i])}: {float(v[i])!r} is not a finite "
                         f"number; a model reads finite numbers (and missing cells)")
    v = np.sort(v)
    col.lo, col.hi = float(v[0]), float(v[-1])
    col.slo, col.shi = (float(x) for x in _protected(v))
    if kind in COUNT_KINDS:
        if (v < 0).any() or (v != np.round(v)).any():
            bad = v[(v < 0) | (v != np.round(v))]
            raise TableError(f"column {name!r} was asked to be {word!r} (counts), but holds "
                             f"{float(bad[0])!r}: counts are integers >= 0")
        col.signed = True
    if len(v) < 2 * RARE_MIN and col.role != "condition":
        return _constant(col, col.lo) if col.lo == col.hi and len(v) >= RARE_MIN else \
            _withheld(col)
    if col.lo == col.hi:
        return _constant(col, col.lo)
    if kind in COUNT_KINDS:
        return col
    col.decimals = decimals(v)
    col.map = MAPS[numeric].fit(v)
    col.support = _support(v, col.slo, col.shi)
    return col


def _support(v, lo, hi):
    """The values (sorted list) of a discrete numeric column's sorted values v (raw units),
    each seen in at least RARE_MIN rows and within [lo, hi]; None when the column is not
    discrete (see DISCRETE_MAX)."""
    vals, counts = np.unique(v, return_counts=True)
    if vals.size > DISCRETE_MAX or v.size < DISCRETE_ROWS * vals.size or \
            counts[counts >= RARE_MIN].sum() < DISCRETE_COVER * v.size:
        return None
    keep = vals[(counts >= RARE_MIN) & (vals >= lo) & (vals <= hi)]
    return keep.tolist() if keep.size else None


def _signed(name, s, present):
    """Whether an integer column's values are signed (int64) or not (uint64)."""
    if str(s.dtype).lower().startswith("uint"):
        return False
    if s.dtype != object:
        return True
    lo, hi = min(int(v) for v in present), max(int(v) for v in present)
    if lo >= -2**63 and hi < 2**63:
        return True
    if lo >= 0 and hi < 2**64:
        return False
    raise TableError(f"column {name!r} holds integers beyond 64 bits ({lo if lo < -2**63 else hi}); "
                     f"fastvae writes integers back exactly within int64 or uint64: convert "
                     f"them to float, or pass types={{{name!r}: 'ignore'}}")


def _offsets(ints, lo, signed):
    from .values import int_offsets
    return int_offsets(ints, lo, signed)


def _identifier(col, present, miss, salt):
    col.kind = "id"
    col.missing_share = float(miss.mean())
    if col.source == "int":
        col.signed = _signed(col.name, present, present)
        ints = col.integers(present, np.zeros(len(present), bool), None)
        col.lo, col.hi = int(ints.min()), int(ints.max())
        col.pattern = {"int": True}
        return col
    if col.source not in ("object", "mixed"):
        raise TableError(f"column {col.name!r} holds {col.source} values; an id column "
                         f"holds strings or integers")
    strings = present.astype(str).to_numpy(dtype=object)
    col.pattern = id_pattern(strings)
    col.pattern["hashes"] = _b64(id_hashes(strings, salt))
    return col


def _b64(a):
    import base64
    return base64.b64encode(np.ascontiguousarray(a, dtype="<u8").tobytes()).decode("ascii")


def _independent(name, s, source, dtype):
    """An ignored column: its values' frequencies (or quantiles), drawn on their own under
    the rare-value rule; values fastvae cannot read are written back as missing cells."""
    miss = s.isna().to_numpy()
    col = Column(name, "independent", "unreadable" if isinstance(source, tuple) else
                 source, dtype)
    col.missing_share = float(miss.mean()) if len(s) else 0.0
    unreadable = {"values": [], "p": []}
    if isinstance(source, tuple) or source == "datetext" or not (~miss).any():
        col.freq, col.missing_share = unreadable, 1.0
        return col
    if source == "category":
        col.declared = [plain(c) for c in s.cat.categories]
        col.ordered = bool(s.cat.ordered)
    if source in ("float", "int", "datetime", "timedelta", "date"):
        try:
            num = _numbers(Column(name, None, source, dtype), s, miss, None, "quantile",
                           lambda i: f"row {i}")
        except TableError:  # (infinite values, integers beyond 64 bits)
            col.freq, col.missing_share = unreadable, 1.0
            return col
        for k in ("lo", "hi", "slo", "shi", "signed", "decimals", "unit", "tz"):
            setattr(col, k, getattr(num, k))
        if num.kind == "constant":
            col.kind, col.value = "constant", num.value
            col.gaps = False
            return col
        vals = np.sort(num.numbers(s[~miss]))  # (offsets from lo for integers and times)
        off = 0 if source == "float" else num.lo
        q = np.clip(np.quantile(vals, np.linspace(0, 1, FREE_QUANTILES)),
                    float(num.slo - off), float(num.shi - off))
        col.freq = {"quantiles": q.tolist()}
        return col
    present = s[~miss]
    cats, rare, p, others = _categories(col, present)
    cats, p = cats + others.get("others", []), p + others.get("others_p", [])
    if not all(_json_ok(v) for v in cats):
        col.freq, col.missing_share = unreadable, 1.0
        return col
    strings = col.strings and bool(rare)
    if strings:  # the rare values' share is drawn as RARE
        p = p + [float(1.0 - sum(p))]
    col.freq = {"values": cats, "p": [x / sum(p) for x in p], "rare": strings}
    return col


def _condition(col, s, present, asked, where):
    name = col.name
    if asked not in (None, "numeric", "categorical"):
        raise TableError(f"condition column {name!r} can be categorical or numeric, not "
                         f"{asked!r}")
    miss = s.isna().to_numpy()
    if miss.any():
        raise TableError(f"condition column {name!r}, {where(int(np.flatnonzero(miss)[0]))}: "
                         f"a missing value; every row needs its conditions")
    if asked == "categorical" or col.source in ("bool", "category", "object", "mixed"):
        counts = present.astype(object).value_counts()
        vals = [plain(v) for v in counts.index]
        try:
            cats = sorted(vals)
        except TypeError:
            cats = sorted(vals, key=str)
        if col.source == "category":
            order = {v: i for i, v in enumerate(col.declared)}
            cats = sorted(vals, key=lambda v: order[v])
        if not all(_json_ok(v) for v in cats):
            raise TableError(f"condition column {name!r}: values of type "
                             f"{type(cats[0]).__name__} are not supported; make them strings")
        col.kind, col.categories, col.rare_values = "categorical", cats, []
        freq = dict(zip(vals, counts.to_numpy()))
        col.freq = {"p": [float(freq[c] / len(present)) for c in cats],
                    "counts": [int(freq[c]) for c in cats]}
        return col
    col = _numbers(col, s, miss, "numeric", "quantile", where)
    col.map, col.kind, col.value = None, "numeric", None
    v = col.numbers(present)
    scale = float(np.max(np.abs(v))) or 1.0  # (moments of 1e308 would overflow)
    col.mean, col.std = float((v / scale).mean() * scale), float((v / scale).std() * scale)
    off = 0 if col.source == "float" else col.lo
    col.freq = {"quantiles": np.clip(np.quantile(v, np.linspace(0, 1, FREE_QUANTILES)),
                                     float(col.slo - off), float(col.shi - off)).tolist()}
    return col


__all__ = ["TYPES", "MAX_CATEGORIES", "MIN_ID_ROWS", "ENUM_RELATED", "check_label",
           "check_labels", "source_of", "make_column", "TableError"]
