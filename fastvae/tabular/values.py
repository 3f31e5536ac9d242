"""Exact conversions between a table's cells and the model's float64 values, in NumPy.

- **Integers of any size.**  An integer column is modelled as its offset from the training
  minimum, ``x - lo``, computed exactly in unsigned 64-bit arithmetic: float64 holds every
  offset below 2**53 exactly, so a column of values near 2**62 keeps its spread (float64 of
  the values themselves would round them all to one), and the way back clips and rounds in
  integer space, so a sample is always an integer of the column's range and dtype: no
  float64 overflow, no wrap-around (:func:`int_offsets`, :func:`ints_from_offsets`).
- **Dates written as text.**  :data:`DATE_FORMATS` are the layouts a text column may use to
  be read as dates or date-times; :func:`date_format` finds the one every value of a column
  follows (plain numbers and years are never dates), so samples are written back in it.
- **Identifiers.**  :func:`id_pattern` reads the shape of a column of unique strings (a
  letter, a digit or a fixed character per position, or a UUID) and :class:`IdDrawer`
  draws new values of that shape that no training row has, none twice.

Shapes: every function takes and returns 1-D arrays (N,).
"""
from __future__ import annotations

import re
import uuid

import numpy as np

_SIGN = np.uint64(1 << 63)


# ------------------------------------------------------------------ integers
def _keys(a):
    """Order-keeping uint64 keys of an int64 or uint64 array (int64: the sign bit flipped)."""
    a = np.asarray(a)
    if a.dtype == np.uint64:
        return a
    return a.astype(np.int64).view(np.uint64) ^ _SIGN


def _key_of(v, signed):
    v = int(v)
    return np.uint64((v + (1 << 63)) if signed else v)


def int_offsets(values, lo, signed=True):
    """values - lo as float64 (N,), exact while the difference is below 2**53 in size.

    values : (N,) int64 (``signed``) or uint64 integers; lo : a Python int.  A value below
    lo gives a negative offset (scoring a table with values outside the training range)."""
    k = _keys(values)
    base = _key_of(lo, signed)
    up = k >= base
    out = np.empty(k.shape, dtype=np.float64)
    out[up] = (k[up] - base).astype(np.float64)
    out[~up] = -(base - k[~up]).astype(np.float64)
    return out


def ints_from_offsets(v, lo, hi, signed=True):
    """The integers lo + round(v) clipped to [lo, hi], as int64 (``signed``) or uint64
    (N,); v (N,) float64 offsets, lo <= hi Python ints.  NaN gives lo (the caller masks
    missing cells)."""
    span = hi - lo
    top = float(span)
    if top >= 2.0 ** 64:  # float(2**64 - 1) rounds up to 2**64, past uint64
        top = np.nextafter(2.0 ** 64, 0.0)
    v = np.where(np.isnan(v), 0.0, v)
    off = np.clip(np.rint(v), 0.0, top).astype(np.uint64)
    off = np.minimum(off, np.uint64(span))  # (exact, in integer space)
    k = off + _key_of(lo, signed)  # wraps mod 2**64 only where the key space does
    if not signed:
        return k
    return (k ^ _SIGN).view(np.int64)


# ------------------------------------------------------------------ dates as text
#: text layouts read as dates (strftime codes), most specific first.  A column is a date
#: column when every value parses with one of them; day-first and month-first layouts are
#: told apart by the values (a column that parses both ways is read month-first, as pandas
#: does).  Layouts without a separator (20240305) are never tried: they are numbers.
DATE_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%MZ",
    "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%m-%d-%Y", "%d-%m-%Y", "%d %b %Y", "%b %d %Y", "%d %B %Y", "%B %d %Y",
    "%b %d, %Y", "%B %d, %Y", "%d-%b-%Y", "%d-%b-%y",
    # two-digit years (%y never reads four digits, nor %Y two: the order does not matter)
    "%m/%d/%y %H:%M:%S", "%m/%d/%y %H:%M", "%m/%d/%y", "%d/%m/%y %H:%M", "%d/%m/%y",
    "%d.%m.%y",
    # a time of day alone (a pizza order's "11:38:36"; race times "1:05:09"): a time on
    # 1900-01-01, written back as the time alone.  Only with two-digit minutes and seconds
    # (_CLOCK): "%H:%M" would read a score 3:2, and loose fields a mix ratio 1:2:4
    "%H:%M:%S", "%H:%M:%S.%f",
)
_CLOCK = re.compile(r"^\d{1,2}:\d\d:\d\d(\.\d+)?$")
_DATEISH = re.compile(r"^\s*\d{1,4}[-/.T :]|^\s*\d{1,2} [A-Za-z]|^\s*[A-Za-z]{3,9} \d")


def date_format(strings, pd):
    """The first of :data:`DATE_FORMATS` that parses every string of ``strings`` (a
    non-empty object array of str) exactly, or None.  ``pd``: the pandas module."""
    if not all(_DATEISH.match(s) for s in strings[:50]):
        return None
    sample = pd.Series(strings[:200])
    clock = all(_CLOCK.match(s) for s in strings)
    for fmt in DATE_FORMATS:
        if fmt.startswith("%H") and not clock:
            continue
        if _parses(sample, fmt, pd) and _parses(pd.Series(strings), fmt, pd):
            return fmt
    return None


def _parses(s, fmt, pd):
    try:
        # (utc: offsets that change within a column, daylight saving's, parse only so)
        t = pd.to_datetime(s, format=fmt, errors="raise", utc="%z" in fmt)
    except (ValueError, TypeError, OverflowError):
        return False
    return not t.isna().any()


def parse_dates(s, fmt, pd):
    """A text Series in layout ``fmt`` as datetime64 (naive, UTC where the layout has an
    offset), NaT where missing; raises ValueError naming the first value that does not
    parse."""
    t = pd.to_datetime(s, format=fmt, errors="coerce", utc="%z" in fmt)
    bad = t.isna() & s.notna()
    if bad.any():
        raise ValueError(repr(s[bad].iloc[0]))
    if "%z" in fmt:
        t = t.dt.tz_localize(None)
    return t


#: the strftime fields a layout may write without a leading zero (8/6/2021 18:57), and
#: the datetime attribute each writes
_UNPADDED = (("%m", "month"), ("%d", "day"), ("%H", "hour"))


def _strftime(t, fmt, pad=True):
    """Series of datetimes ``t`` as text in ``fmt``; with ``pad`` False, month, day and
    hour without their leading zeros (strftime's %-m is not portable)."""
    if pad or not any(code in fmt for code, _ in _UNPADDED):
        return t.dt.strftime(fmt)
    marks = []
    for i, (code, attr) in enumerate(_UNPADDED):
        if code in fmt:
            fmt = fmt.replace(code, f"\x02{i}\x03")
            marks.append((f"\x02{i}\x03", getattr(t.dt, attr).astype(str).to_numpy()))
    out = t.dt.strftime(fmt).to_numpy(dtype=object)
    for mark, vals in marks:
        out = [a.replace(mark, b) for a, b in zip(out, vals)]
    return type(t)(out, index=t.index, dtype=object)


def date_layout(strings, fmt, pd=None):
    """How a date column of layout ``fmt`` writes what strftime cannot say alone: the
    digits of its fractional seconds (%f parses 1 to 6), whether its offsets have a colon
    (+00:00), and whether its month, day and hour have leading zeros (``pad``: 08/06/2021,
    or 8/6/2021, read from the values when ``pd``, the pandas module, is given).  A
    JSON-able dict for :func:`format_dates`."""
    out = {"format": fmt, "fraction": None, "colon": False, "pad": True}
    first = strings[0]
    if pd is not None and "%f" not in fmt and "%z" not in fmt and \
            any(c in fmt for c, _ in _UNPADDED):
        some = pd.Series(np.asarray(strings[:200], dtype=object))
        t = pd.to_datetime(some, format=fmt)
        out["pad"] = bool((_strftime(t, fmt) == some).mean() >=
                          (_strftime(t, fmt, False) == some).mean())
    if "%f" in fmt:
        m = re.search(r"\d[.,](\d{1,9})", first)
        out["fraction"] = len(m.group(1)) if m else 6
    if "%z" in fmt:
        out["colon"] = bool(re.search(r"[+-]\d\d:?\d\d$", first) and
                            re.search(r"[+-]\d\d:\d\d$", first))
        offsets = [m.group(0) for m in (re.search(r"([+-]\d\d):?(\d\d)$", s)
                                        for s in strings[:10000]) if m]
        if offsets:  # the most common one, as minutes east of UTC
            o = max(set(offsets), key=offsets.count).replace(":", "")
            out["offset"] = (1 if o[0] == "+" else -1) * (int(o[1:3]) * 60 + int(o[3:5]))
    return out


def wall_times(ns, tz, pd):
    """int64 nanoseconds (n,): the wall-clock times in zone ``tz`` of the UTC times ``ns``
    (a zoned column's dates are local midnights, not UTC ones)."""
    t = pd.DatetimeIndex(np.asarray(ns, dtype=np.int64).astype("datetime64[ns]"))
    return t.tz_localize("UTC").tz_convert(tz).tz_localize(None).asi8.copy()


def zoned_times(wall, tz, pd, near=None):
    """int64 nanoseconds (n,): the UTC times of the wall-clock times ``wall`` in zone
    ``tz``.  A wall time a clock change repeats is the one of its two instants nearer
    ``near`` (n,) (UTC nanoseconds: the time before rounding; standard time without it),
    and one the change skips is moved forward to the change's end."""
    t = pd.DatetimeIndex(np.asarray(wall, dtype=np.int64).astype("datetime64[ns]"))
    out = []
    for dst in (False, True):
        z = t.tz_localize(tz, ambiguous=np.full(len(t), dst), nonexistent="shift_forward")
        out.append(z.tz_convert("UTC").tz_localize(None).asi8.copy())
    if near is None:
        return out[0]
    near = np.asarray(near, dtype=np.int64)
    return np.where(np.abs(out[1] - near) < np.abs(out[0] - near), out[1], out[0])


def format_dates(ns, layout, pd):
    """int64 nanoseconds (N,) since the epoch as text in ``layout`` (:func:`date_layout`),
    an object array; a layout with an offset writes the column's most common offset
    (+0100, or +01:00), or UTC."""
    fmt, frac = layout["format"], layout["fraction"]
    t = pd.Series(pd.to_datetime(ns, unit="ns"))
    if "%z" in fmt:
        import datetime as dt
        off = layout.get("offset") or 0
        t = t.dt.tz_localize("UTC").dt.tz_convert(dt.timezone(dt.timedelta(minutes=off)))
    if frac is None:
        out = _strftime(t, fmt, layout.get("pad", True))
    else:  # %f writes 6 digits: write the column's own number of them
        out = t.dt.strftime(fmt.replace("%f", "\x01"))
        digits = (np.asarray(ns, dtype=np.int64) % 10**9) // 10 ** (9 - min(frac, 9))
        text = pd.Series(digits).astype(str).str.zfill(frac)
        out = pd.Series([a.replace("\x01", b) for a, b in zip(out, text)], dtype=object)
    if layout["colon"]:
        out = out.str.replace(r"([+-]\d\d)(\d\d)$", r"\1:\2", regex=True)
    return out.to_numpy(dtype=object)


# ------------------------------------------------------------------ identifiers
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_CLASSES = {"9": "0123456789", "A": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            "a": "abcdefghijklmnopqrstuvwxyz"}


#: identifiers: a shape (the class of each character) held by at least this many training
#: values gets its own entry (a rarer one is pooled with the rest of its length), and at
#: most this many shapes are kept
ID_SHAPE_MIN, MAX_ID_SHAPES = 5, 32


def _char_class(ch):
    return "9" if ch.isdigit() else ("A" if ch.isupper() else ("a" if ch.islower() else ch))


def _positions(group):
    """The positions of identifiers ``group`` (strings of one length), as id_pattern says;
    an ASCII letter position of a group of at least ID_SHAPE_MIN distinct values that shows
    fewer than the 26 letters is ["set", its letters] (those in ID_SHAPE_MIN values or more,
    when there are any; each drawn as often as the others)."""
    pos = []
    distinct = len(set(group)) > 1  # (one value many times pins nothing: it is a value)
    for i in range(len(group[0])):
        chars = {g[i] for g in group}
        if len(chars) == 1 and distinct and not next(iter(chars)).isdigit():
            # (a digit that never changes is a counter's leading zero: any digit)
            pos.append(["=", next(iter(chars))])
        elif all(c.isdigit() for c in chars):
            pos.append("9")
        elif all(c in _CLASSES["A"] for c in chars) or all(c in _CLASSES["a"] for c in chars):
            cls = "A" if next(iter(chars)) in _CLASSES["A"] else "a"
            # the letters this position takes (a tail number's airline suffix, a code's
            # prefix), once enough different values show them
            few = len(set(group)) >= ID_SHAPE_MIN and len(chars) < len(_CLASSES[cls])
            if few:  # (a letter in fewer than ID_SHAPE_MIN values is left out: seattlepets'
                # one "C" license among 12,311 "S" ones came back in half the samples)
                seen = {}
                for g in group:
                    seen[g[i]] = seen.get(g[i], 0) + 1
                common = {c for c, k in seen.items() if k >= ID_SHAPE_MIN}
                chars = common or chars
            pos.append(["set", "".join(sorted(chars))] if few else cls)
        elif all(c.isupper() for c in chars):
            pos.append("A")
        elif all(c.islower() for c in chars):
            pos.append("a")
        else:  # letters and digits mixed: letters of the case the column uses most
            up = sum(c.isupper() for c in chars) >= sum(c.islower() for c in chars)
            pos.append("A" if up else "a")
    return pos


def id_pattern(strings):
    """The shape of identifiers ``strings`` (object array of str): {"uuid": True} for
    UUIDs; otherwise a list of shapes with the share of values of each.  A shape is a list
    of positions each "9" (a digit), "A" (an upper case letter), "a" (a lower case letter),
    ["set", letters] (one of the letters that position shows) or ["=", c] (always the
    letter or sign c; a digit position is always "9": u-000123 has room for a million).

    The shapes are the values' own: N102UW, N10575 and N1108A are three (A999AA, A99999,
    A9999A), each kept in its share of the samples (one shape per length made every
    nycflights13 tail number come back as A999AA, and a discriminator told the samples
    from the table at AUC 0.999).  The MAX_ID_SHAPES most common shapes held by at least
    ID_SHAPE_MIN values are kept as they are; the other values are pooled by length."""
    if all(_UUID.match(s) for s in strings[:1000]):
        return {"uuid": True, "upper": bool(any(ch.isupper() for ch in strings[0]))}
    by_shape = {}
    for s in strings:
        by_shape.setdefault("".join(map(_char_class, s)), []).append(s)
    ranked = sorted(by_shape.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    kept = [(k, g) for k, g in ranked[:MAX_ID_SHAPES] if len(g) >= ID_SHAPE_MIN]
    names = {k for k, _ in kept}
    by_len = {}
    for k, g in ranked:
        if k not in names:
            by_len.setdefault(len(k), []).extend(g)
    groups = [g for _, g in kept] + [g for _, g in sorted(by_len.items())]
    shapes = []
    for g in groups:
        pos = _positions(g)
        # kept shapes never share a value (each has its own class at some position); a
        # pool that could draw a kept shape's values joins it: two shapes that overlap
        # would draw some values twice
        same = next((sh for sh in shapes if _overlap(sh["positions"], pos)), None)
        if same is not None:
            same["share"] += len(g) / len(strings)
        else:
            shapes.append({"length": len(g[0]), "share": len(g) / len(strings),
                           "positions": pos})
    return {"uuid": False, "shapes": shapes}


def _chars(p):
    return set(p[1]) if isinstance(p, list) else set(_CLASSES[p])


def _overlap(a, b):
    """Whether two shapes' positions (id_pattern) can spell the same string."""
    return len(a) == len(b) and all(_chars(x) & _chars(y) for x, y in zip(a, b))


def id_hashes(strings, salt):
    """Salted 64-bit hashes (sorted uint64) of the training identifiers: what a model
    keeps to never write one of them again, without keeping the identifiers."""
    import hashlib
    out = np.array([int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"),
                                                   digest_size=8, key=salt).digest(),
                                   "little") for s in strings], dtype=np.uint64)
    return np.unique(out)


class Taken:
    """Membership in the training identifiers, by their salted hashes (:func:`id_hashes`)."""

    def __init__(self, hashes, salt):
        self.hashes, self.salt = hashes, salt

    def __contains__(self, s):
        h = id_hashes([s], self.salt)[0]
        i = np.searchsorted(self.hashes, h)
        return bool(i < self.hashes.size and self.hashes[i] == h)


class IdDrawer:
    """New identifiers of a shape (:func:`id_pattern`), none a training one (``taken``)
    and none twice however many are drawn: each shape's values are visited in a seeded
    affine permutation of all of them (no memory of what was drawn).  A shape whose
    values run out continues with a numbered suffix."""

    def __init__(self, pattern, taken, rng):
        self.pattern, self.taken = pattern, taken
        self.counters = []
        self.perms = []
        if not pattern["uuid"]:
            for shape in pattern["shapes"]:
                radix = [len(p[1]) if isinstance(p, list) else len(_CLASSES[p])
                         for p in shape["positions"]]
                size = 1
                for r in radix:
                    size *= r
                a = int(rng.integers(1, 2**62)) % size or 1
                while np.gcd(a, size) != 1 if size < 2**63 else _gcd(a, size) != 1:
                    a += 1
                self.perms.append((size, a, int(rng.integers(0, 2**62)) % size, radix))
                self.counters.append(0)

    def draw(self, n, rng):
        """n new identifiers, an object array (n,)."""
        out = np.empty(n, dtype=object)
        if self.pattern["uuid"]:
            up = self.pattern.get("upper")
            for k in range(n):
                while True:
                    s = str(uuid.UUID(bytes=rng.bytes(16), version=4))
                    s = s.upper() if up else s
                    if s not in self.taken:
                        break
                out[k] = s
            return out
        shapes = self.pattern["shapes"]
        share = np.array([s["share"] for s in shapes])
        which = rng.choice(len(shapes), size=n, p=share / share.sum())
        for k in range(n):
            j = int(which[k])
            while True:
                s = self._next(j)
                if s not in self.taken:
                    break
            out[k] = s
        return out

    def _next(self, j):
        size, a, b, radix = self.perms[j]
        i = self.counters[j]
        self.counters[j] += 1
        v = (a * (i % size) + b) % size
        chars = []
        for p, r in zip(self.pattern["shapes"][j]["positions"], radix):
            v, d = divmod(v, r)
            chars.append(p[1][d] if isinstance(p, list) else _CLASSES[p][d])
        s = "".join(chars)
        return s if i < size else f"{s}-{i // size}"


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


__all__ = ["int_offsets", "ints_from_offsets", "DATE_FORMATS", "date_format", "parse_dates",
           "date_layout", "format_dates", "id_pattern", "id_hashes", "Taken", "IdDrawer"]
