"""One training step cut into data-parallel shards on the cpu backend's threads (fit's
``shards``).

Why: at a small batch a step is a chain of short kernels, and most of them (the likelihood,
the encoder's input transform, the activations) run on one core while the BLAS library's
threads wait for the next product.  Cutting the batch into shards, each a whole forward
and backward on its own thread and core (:meth:`fastvae.VAE.replica`: the same
parameters, its own buffers), keeps every core busy from the first product to the last;
the products run on one BLAS thread each (:mod:`fastvae.backends.cpu.blas_threads`), and
bf16 products on one OpenMP thread each (oneDNN's, set per calling thread).  It is MPI's
data parallelism (:mod:`fastvae.training.distributed`) inside one process, with the
gradients added in memory.

The bits depend on the shard count, never on the thread count: a batch of m rows is cut
into min(shards, m) shards whose sizes differ by at most one, a shard's noise is keyed by
its rows' places in the batch (:mod:`fastvae.core.noise`), each shard's products run on
one BLAS (or OpenMP) thread whichever thread runs it, and the shards' gradients are added
in shard order.  One thread runs the shards one after another, to the same bits.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..core.step import StepContext
from ..core.validate import user_stacklevel


class ShardThreadsWarning(UserWarning):
    """fit's ``shards`` asked for more shards than the cpu backend has threads."""


class Shards:
    """The models of a sharded step: the trained model (shard 0) and ``n - 1`` replicas."""

    def __init__(self, model, n):
        self.model = model
        self.parts = [model] + [model.replica() for _ in range(n - 1)]
        # the cpu backend's thread pool and thread limits (shards run on no other backend)
        bk = model.kernels
        self.pool, self.blas_threads, self.onednn = bk.pool, bk.blas_threads, bk.onednn
        threads = self.pool.get_num_threads()
        if threads < n:
            # (the bits are the same, but the step is slower than one pass: the scVI-sized
            # ZINB step at batch 128 took 1.55 s an epoch with 2 shards on 1 thread, 1.11 with
            # no shards, 0.92 with 2 shards on 2 threads)
            warnings.warn(f"shards={n} on {threads} thread{'s' * (threads != 1)} of the cpu "
                          f"backend: the shards run one after another, slower than one "
                          f"pass over the batch; give the backend a thread per shard "
                          f"(fastvae.backends.cpu.set_num_threads({n}) or "
                          f"FASTVAE_NUM_THREADS={n}), or leave shards at 1",
                          ShardThreadsWarning, stacklevel=user_stacklevel())

    def step(self, xb, row0, batch):
        """Forward and backward of the rows ``xb`` (m, width): rows ``row0 .. row0 + m`` of
        a global batch of ``batch`` rows, cut into shards.  Leaves the gradient of the
        global batch's mean loss in ``model.flat_grads`` and moves the model's training
        noise on by one draw, as one pass over xb would.  Returns the rows' (loss, recon,
        kl) sums, in nats."""
        model, m = self.model, xb.shape[0]
        if model.free_bits > 0:  # (fit refuses it; a callback may have set it since)
            raise ValueError(f"free_bits={model.free_bits!r} was set during a run with "
                             f"shards={len(self.parts)}: free bits gate the KL on the whole "
                             "batch's per-dimension mean, which shards do not share")
        pool, onednn = self.pool, self.onednn
        cuts = pool.bounds(m, min(len(self.parts), m))
        for part in self.parts[1:len(cuts)]:  # (before shard 0 moves the model's noise on)
            model.update_replica(part)
        if model.precision == "bf16":
            onednn.library()  # (loaded before the shards start: see one_thread_here)
        sums = [None] * len(cuts)

        def shard(k, lo, hi):
            part = self.parts[k]
            with onednn.one_thread_here():
                cache = part.forward(xb[lo:hi], validate=False,
                                     step=StepContext(row0=row0 + lo, batch=batch))
                loss, recon, kl = cache.values()
                n = hi - lo
                sums[k] = (n * loss, n * recon, n * kl)
                part.backward(cache)

        with self.blas_threads.limited_to_one():
            pool.run(shard, [(k, lo, hi) for k, (lo, hi) in enumerate(cuts)])
        self.add_gradients(len(cuts))
        return tuple(float(sum(s[i] for s in sums)) for i in range(3))

    def add_gradients(self, used):
        """model.flat_grads += each used replica's, in shard order (cut into parameter
        ranges over the threads: each entry's sum is the same whatever the cut)."""
        if used < 2:
            return
        g, pool = self.model.flat_grads, self.pool
        others = [p.flat_grads for p in self.parts[1:used]]

        def add(lo, hi):
            for o in others:
                np.add(g[lo:hi], o[lo:hi], out=g[lo:hi])

        pool.run(add, pool.bounds(g.shape[0], min(pool.get_num_threads(),
                                                   pool.n_chunks(g.shape[0]))))
