"""The :class:`Dataset`: N rows of D values in their stored dtype (uint8 images stay uint8, a
``.npy`` file stays memory-mapped), converted one batch at a time, and scanned for NaN/inf
and range before training; :class:`DataError` names the data and the problem."""
from __future__ import annotations

import numpy as np

from ..core.validate import DataError  # noqa: F401  (raised here, named here too)

_CHUNK_ROWS = 8192  # rows per pass when scanning a (possibly memory-mapped) array


class Dataset:
    """N datapoints of D values each, with optional labels and ground-truth factors.

    x : (N, D) array, float (used as is) or uint8 (scaled by 1/255 when a batch is read);
        may be a ``np.memmap``.  image_shape : (H, W) when the rows are images, else None.
    labels : (N,) int array or None; label_names : names by label value, or None.
    factors : dict name -> (N,) array of generating factors (the built-in shapes), or None.
    name : a short name for messages and file names.

    ``ds.batch(idx)`` returns rows ``idx`` as float32 in [0, 1] (see :meth:`batch`).
    """

    def __init__(self, x, image_shape=None, labels=None, label_names=None, factors=None,
                 name="data", scale=None):
        x = as_2d(x, name)
        self.x = x
        self.name = name
        if image_shape is not None and int(np.prod(image_shape)) != x.shape[1]:
            raise DataError(f"{name}: image shape {tuple(image_shape)} does not match "
                            f"{x.shape[1]} values per row")
        self.image_shape = None if image_shape is None else tuple(int(s) for s in image_shape)
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (x.shape[0],):
                raise DataError(f"{name}: {labels.shape[0] if labels.ndim else 0} labels for "
                                f"{x.shape[0]} rows (labels shape {labels.shape})")
        self.labels = labels
        self.label_names = label_names
        self.factors = factors
        self.scale = default_scale(x, name) if scale is None else float(scale)

    def __len__(self):
        return self.x.shape[0]

    @property
    def dim(self):
        """D, the number of values per datapoint."""
        return self.x.shape[1]

    def __repr__(self):
        shape = "x".join(map(str, self.image_shape)) if self.image_shape else str(self.dim)
        extra = ", labelled" if self.labels is not None else ""
        extra += f", factors {list(self.factors)}" if self.factors else ""
        return f"Dataset({self.name!r}, {len(self)} x {shape}, {self.x.dtype}{extra})"

    def batch(self, idx, out=None, dtype=np.float32):
        """Rows ``idx`` (an int array) as floats, (len(idx), D); written into ``out`` when
        given (no allocation for float data of the same dtype)."""
        idx = np.asarray(idx)
        if out is None:
            out = np.empty((idx.shape[0], self.dim), dtype=dtype)
        if self.x.dtype == out.dtype and self.scale == 1.0:
            np.take(self.x, idx, axis=0, out=out)
        else:
            if isinstance(self.x, np.memmap):  # read the file in order, then put rows back
                order = np.argsort(idx)
                rows = np.empty((idx.size, self.dim), dtype=self.x.dtype)
                rows[order] = self.x[idx[order]]
            else:
                rows = self.x[idx]
            np.multiply(rows, out.dtype.type(self.scale), out=out, casting="unsafe")
        return out

    def to_array(self, dtype=np.float32):
        """The whole dataset as one (N, D) float array in memory."""
        return self.batch(np.arange(len(self)), dtype=dtype)

    def subset(self, idx, name=None):
        """A new Dataset holding rows ``idx`` (copied into memory)."""
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else np.asarray(a)[idx]  # noqa: E731
        factors = None if self.factors is None else {k: pick(v) for k, v in self.factors.items()}
        return Dataset(np.asarray(self.x[idx]), self.image_shape, pick(self.labels),
                       self.label_names, factors, name or self.name, self.scale)

    def check(self, likelihood="bernoulli", rows=None, digest=None):
        """Scan every value (in chunks, so memory-mapped data stays on disk) and raise
        :class:`DataError` on NaN/inf, or on values outside [0, 1] for the Bernoulli
        likelihood.  ``rows``: (start, stop) scans only those rows (data-parallel ranks
        share the scan of memory-mapped data).  ``digest``: a hashlib object updated with
        the bytes of the scanned rows in the same pass (data-parallel ranks compare their
        copies by it).  ``likelihood``: a likelihood name, or an object whose
        ``check(rows, row0=, name=)`` raises for bad rows (a block model's
        :class:`~fastvae.core.columns.Columns`, which checks each cell by its column and
        allows NaN where cells may be missing).  Returns self."""
        start, stop = (0, len(self)) if rows is None else rows
        if not isinstance(likelihood, str):  # a block model's columns check each cell
            for s in range(start, stop, _CHUNK_ROWS):
                c = np.asarray(self.x[s:min(stop, s + _CHUNK_ROWS)])
                if digest is not None:
                    digest.update(np.ascontiguousarray(c).data)
                likelihood.check(c * self.scale if self.scale != 1 else c, row0=s,
                                 name=self.name)
            return self
        if (digest is None and self.x.dtype.kind == "u"
                and self.scale * np.iinfo(self.x.dtype).max <= 1.0 + 1e-6):
            return self  # unsigned ints scaled into [0, 1]: nothing can be wrong
        lo, hi, bad = _scan(self.x, start, stop, digest)
        where = "" if rows is None else f" in rows {start}..{stop - 1}"
        if bad:
            raise DataError(f"{self.name}: {bad} NaN or infinite value(s){where}")
        lo, hi = lo * self.scale, hi * self.scale
        if likelihood == "bernoulli" and (lo < 0 or hi > 1):
            show = lambda v: np.format_float_positional(v, trim="-")  # noqa: E731  (shortest exact)
            err = DataError(f"{self.name}: values{where} lie in [{show(lo)}, {show(hi)}], "
                            "but the Bernoulli likelihood needs [0, 1]; rescale the data or "
                            "use likelihood='gaussian'")
            err.out_of_range = True  # (the CLI names its own option for the remedy)
            raise err
        return self


def as_2d(x, name):
    if not hasattr(x, "ndim"):
        x = np.asarray(x)
    if x.ndim == 3:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2:
        raise DataError(f"{name}: expected an (N, D) or (N, H, W) array, got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name}: empty dataset (shape {x.shape})")
    if x.dtype.kind not in "fui":
        raise DataError(f"{name}: unsupported dtype {x.dtype} (need floats or integers)")
    return x


def default_scale(x, name):
    """1.0 for floats, 1/255 for 8-bit (and for other integers holding 0..255)."""
    if x.dtype.kind == "f":
        return 1.0
    if x.dtype == np.uint8:
        return 1.0 / 255.0
    lo, hi, _ = _scan(x)
    if lo < 0 or hi > 255:
        raise DataError(f"{name}: integer values in [{lo:g}, {hi:g}]; only 0..255 images are "
                        "scaled automatically (convert to float in [0, 1] first)")
    return 1.0 / 255.0


def _scan(x, start=0, stop=None, digest=None):
    """(min, max, number of non-finite values) of rows [start, stop) of x, chunk by chunk;
    ``digest`` (a hashlib object) is updated with each chunk's bytes on the way."""
    lo, hi, bad = np.inf, -np.inf, 0
    stop = x.shape[0] if stop is None else stop
    for s in range(start, stop, _CHUNK_ROWS):
        c = np.asarray(x[s:min(stop, s + _CHUNK_ROWS)])
        if digest is not None:  # (hashing needs the bytes in order: a copy only if not)
            digest.update(np.ascontiguousarray(c).data)
        if c.dtype.kind == "f":
            fin = np.isfinite(c)
            nb = c.size - int(np.count_nonzero(fin))
            if nb:
                bad += nb
                c = c[fin]
                if c.size == 0:
                    continue
        if c.size:
            lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
    return lo, hi, bad


def binarize(x, rng=None, out=None):
    """Bernoulli draws with probabilities x (dynamic binarization), or x > 0.5 when ``rng``
    is None (deterministic).  x (N, D) in [0, 1] -> (N, D) of 0/1 in x's dtype."""
    if out is None:
        out = np.empty_like(x)
    if rng is None:
        np.greater(x, 0.5, out=out, casting="unsafe")
    else:
        u = rng.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        np.less(u, x, out=out, casting="unsafe")
    return out
