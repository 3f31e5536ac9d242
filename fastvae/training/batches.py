"""The rows of each training step, gathered where the model computes, allocating nothing
per step (see :class:`Batches`)."""
from __future__ import annotations

import numpy as np

from .. import backends
from ..backends.aligned import aligned_empty


class Batches:
    """The rows of each training step, gathered where the model computes, allocating
    nothing per step.

    On a GPU an in-memory training set is copied to the device once (uint8 images stay
    uint8, a quarter of the float32 size) and each batch is gathered and scaled there by
    one kernel, so a step needs no host-to-device copy.  Memory-mapped data, dynamic
    binarization (whose draws come from a host generator, for exact resume) and data too
    large for the GPU use host batches, gathered into one buffer (and, on a GPU, copied
    into one device buffer).  A memory-mapped file is read in file order within each batch
    (the order is worked out once per epoch), so a file larger than memory streams.

    Data-parallel: each rank gathers its shard [lo, hi) of the global batch [start, stop)
    only; dynamic binarization draws the whole global batch's uniforms on every rank (the
    generator stays in step whatever the split) and each rank uses its rows of them.
    """

    def __init__(self, model, ds, B, binarize, bin_rng, shard=None):
        self.ds, self.binarize, self.bin_rng, self.bk = ds, binarize, bin_rng, model.kernels
        self.B, self.on_device = B, False
        self.shard = shard or (lambda start, stop: (start, stop))
        self.mapped = isinstance(ds.x, np.memmap)
        usable = (self.bk.DEVICE and binarize == "none" and not self.mapped
                  and ds.x.dtype in (np.uint8, np.float32, np.float64))
        if usable:
            try:
                X = ds.x if ds.x.dtype == np.uint8 else np.asarray(ds.x, dtype=model.dtype)
                self.X = self.bk.asarray(np.ascontiguousarray(X))
                self.out = aligned_empty(self.bk.xp, (B, ds.dim), model.dtype)
                self.on_device = True
            except MemoryError:
                self.X = None  # does not fit next to the model: host batches instead
        if self.on_device:
            return
        self.host = backends.host(self.bk)  # host batches: the switch's gather kernels
        self.X = np.asarray(ds.x)  # drops the memmap subclass only: a file stays a file
        # the kernels read native integers and float32/64; other data (big-endian IDX
        # floats, float16) goes through Dataset.batch, which converts with a temporary
        self.kernel_ok = (self.X.dtype.isnative and self.X.dtype.kind in "uif"
                          and self.X.dtype != np.float16)
        self.buf = aligned_empty(np, (B, ds.dim), model.dtype)
        self.u = np.empty((B, ds.dim), dtype=model.dtype) if binarize == "dynamic" else None
        if self.mapped:  # per batch: rows in file order, and where each goes in the batch
            self.src, self.dest = np.empty(len(ds), np.int64), np.empty(len(ds), np.int64)
        if self.bk.DEVICE:
            self.staged = aligned_empty(self.bk.xp, (B, ds.dim), model.dtype)

    def start_epoch(self, order, first_row):
        """The epoch's row order (N,); batches start at first_row, first_row + B, ..."""
        self.order = order
        if self.on_device:
            self.order_dev = self.bk.asarray(order.astype(np.int64))
        elif self.mapped and self.kernel_ok:
            for s in range(first_row, order.size, self.B):
                lo, hi = self.shard(s, min(order.size, s + self.B))
                seg = order[lo:hi]
                where = np.argsort(seg, kind="stable")
                self.src[lo:hi] = seg[where]
                self.dest[lo:hi] = where

    def get(self, lo, hi, start=None, stop=None):
        """Rows order[lo:hi] (this rank's shard of the global batch [start, stop), by
        default the whole of it) as a (hi - lo, D) batch of the model's dtype."""
        start, stop = (lo, hi) if start is None else (start, stop)
        n = hi - lo
        if self.on_device:
            xb = self.out[:n]
            self.bk.gather_rows(xb, self.X, self.order_dev[lo:hi], self.ds.scale)
            return xb
        xb = self.buf[:n]
        if not self.kernel_ok:
            self.ds.batch(self.order[lo:hi], out=xb)
        elif self.mapped:
            self.host.scatter_rows(xb, self.dest[lo:hi], self.X, self.src[lo:hi],
                                   self.ds.scale)
        else:
            self.host.gather_rows(xb, self.X, self.order[lo:hi], self.ds.scale)
        if self.binarize == "dynamic":
            u = self._uniforms(start, stop)
            self.host.binarize_rows(xb, u[lo - start:hi - start])
        if self.bk.DEVICE:
            staged = self.staged[:n]
            self.bk.copy_from_host(staged, xb)
            return staged
        return xb

    def skip(self, start, stop):
        """A step whose shard here is empty: the binarization draws still advance."""
        if self.binarize == "dynamic":
            self._uniforms(start, stop)

    def _uniforms(self, start, stop):
        """The global batch's uniform draws (one per pixel of its stop - start rows)."""
        u = self.u[:stop - start]
        self.bin_rng.random(out=u, dtype=u.dtype)
        return u
