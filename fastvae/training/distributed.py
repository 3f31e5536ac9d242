"""Data-parallel training over MPI (``pip install 'fastvae[mpi]'``; mpi4py imported only here).

Every rank runs the same script on the same data.  Each step's global batch (``batch_size``
rows) is split into one contiguous shard per rank (:func:`shard`); a rank reads and
computes only its shard, with its gradients scaled by the *global* batch size, so that one
``Allreduce`` (a sum) of the flat gradient buffer gives every rank the gradient of the
whole batch, and every rank takes the same optimizer step.  The noise of a row depends on
(seed, step, its place in the global batch) only (:mod:`fastvae.core.noise`),
dynamic binarization draws the whole global batch's uniforms on every rank, and with free
bits the per-dimension KL is reduced before the gate: N ranks give what one process gives
with the same global batch, to the rounding of the sums.

Before the first step one allgather compares what must be equal (:meth:`check_same_start`):
the data, the model, its parameters, noise counter and position, and the settings; it also
carries any rank's refusal of its arguments or data.  Data in memory is compared whole: each
rank scans its whole copy once, for NaN/inf and range and for a checksum of its bytes
(:meth:`check_data`), so a copy that differs anywhere, or holds a NaN anywhere, stops every
rank.  Memory-mapped data is not read whole by every rank (that is what memory-mapping it
avoids): each rank scans its share of the rows, and the copies are compared by their
lengths, widths and 64 rows sampled across them.  Copies are compared as stored: ranks that
hold the same values in different dtypes, or one memory-mapped and one in memory, are
refused with a message naming how each holds its data.

Besides the gradient, each step reduces one small vector: the step's loss sums and two
flags.  A rank whose step raised (or whose loss is not finite; on a GPU the step's work is
waited for first, so a kernel's fault surfaces there) still takes part with its failure
flag set, so no rank is left waiting; then every rank learns who failed and why (one
allgather, on that path only) and raises :class:`DistributedError` naming the rank and the
cause, before any optimizer step: the parameters are the same on every rank.  A Ctrl-C
seen by any rank sets the other flag: every rank stops after the same step, and rank 0
writes the checkpoint.  Rank 0's own output (progress, callbacks, the checkpoint) fails
into the next agreement the same way.

On the cuda backend the gradient buffer is a CuPy array: it goes to MPI as it is when the
MPI library is CUDA-aware (``MPI.Query_cuda_support()``, or ``FASTVAE_MPI_CUDA_AWARE=1``),
else it is staged through one pinned host buffer (a device-host copy each way per step).
Neither path has run on a GPU here.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time

import numpy as np

from ..io.dataset import DataError

# (seconds an aborting rank waits for its last words to be relayed, see Distributed.abort)
ABORT_GRACE_S = 1.0

#: the flags of a step, summed over ranks
_FAIL, _STOP = 0, 1


def _digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _storage(ds):
    """How a Dataset holds its rows, in words: dtype, memory-mapped or not, scale."""
    where = "memory-mapped" if isinstance(ds.x, np.memmap) else "in memory"
    scale = "" if ds.scale == 1.0 else f" scaled by {ds.scale:g}"
    return f"{ds.x.dtype} {where}{scale}"


def _rows_digest(ds):
    """(rows, width, storage, digest of 64 rows spread over the data) of a Dataset."""
    idx = np.unique(np.linspace(0, len(ds) - 1, 64).astype(np.int64))
    return (len(ds), ds.dim, _storage(ds), _digest(ds.batch(idx, dtype=np.float64)))


def estimate_fingerprint(model, data, args):
    """What must be the same on every rank for an estimate over shared rows (the ELBO, the
    log-likelihood): the data (its :meth:`Distributed.check_data` fingerprint), the model,
    its parameters and backend, the arguments that change the result."""
    return {"the data": data, "the model": repr(sorted(model.config().items())),
            "the parameters": _digest(model.kernels.to_numpy(model.flat_params)),
            "the backend": model.kernels.NAME, "the arguments": repr(args)}


def local_rank(comm):
    """This rank's index among the ranks of ``comm`` on its machine (a collective: every
    rank calls it)."""
    MPI = _mpi()
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


def rank_backend(backend, local):
    """The backend for the rank with machine-local index ``local``: "cuda" (or "auto" where
    CuPy sees a GPU) becomes "cuda:<local mod the machine's GPU count>", so the ranks of a
    machine take its GPUs in turn; anything else (cpu, numpy, an explicit "cuda:N") is
    returned as it is resolved."""
    from .. import backends as _backend
    name = _backend.resolve(backend)
    if name != "cuda":
        return name
    return f"cuda:{local % _backend.gpu_count()}"


def shard(start, stop, rank, size):
    """Rank ``rank``'s rows [lo, hi) of rows [start, stop) shared by ``size`` ranks:
    contiguous, sizes differing by at most one, earlier ranks taking the extra rows."""
    base, extra = divmod(stop - start, size)
    lo = start + rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class DistributedError(RuntimeError):
    """A rank failed; raised on every rank, with the failing rank and its error."""


def detected_size():
    """The number of processes an MPI launcher started this one among (1 when none):
    read from the launchers' environment (MPICH and Intel MPI: PMI_SIZE; Open MPI:
    OMPI_COMM_WORLD_SIZE; MVAPICH: MV2_COMM_WORLD_SIZE; PMIx: PMIX_SIZE), without importing
    MPI."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE"):
        v = os.environ.get(var, "")
        if v.isdigit():
            return int(v)
    return 1


def _mpi():
    """mpi4py's MPI module, or an ImportError saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(f"data-parallel training needs mpi4py ({e}): pip install "
                          "'fastvae[mpi]'") from None
    return MPI


def world():
    """mpi4py's COMM_WORLD (ImportError saying how to install mpi4py without it)."""
    return _mpi().COMM_WORLD


class Distributed:
    """The ranks of ``comm`` (an mpi4py communicator) training one model together."""

    holds_whole_step = False      # a rank in a collective must stay abortable
    reads_loss_every_step = True  # the step waits for the Allreduce anyway

    def __init__(self, comm, model):
        if not all(callable(getattr(comm, m, None)) for m in ("Get_rank", "Get_size",
                                                              "Allreduce", "allgather")):
            raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), got "
                            f"{comm!r}")
        MPI = _mpi()
        self.MPI, self.comm = MPI, comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.bk = model.kernels
        # every collective of a step is one Allreduce of this vector, so that a rank that
        # failed can always take part in whatever the others are in: [fail, stop, loss sum,
        # recon sum, kl sum, rows, the rows' per-dimension KL sums (free bits)]
        self._small = np.zeros(6 + model.latent_dim)
        self.kl_pending = False  # this step's KL exchange (free bits) is still to come
        self.agreed = False      # the stop every rank agreed on, at the latest agreement
        self.deferred = None     # rank 0's error in its own output, told at the next agreement
        self._host = None          # the pinned staging buffer (cuda, not CUDA-aware MPI)
        env = os.environ.get("FASTVAE_MPI_CUDA_AWARE")
        if env is not None:
            self.cuda_aware = env not in ("", "0")
        else:
            query = getattr(MPI, "Query_cuda_support", None)
            self.cuda_aware = bool(query()) if query is not None else False

    @property
    def lead(self):
        """Whether this rank speaks and writes (rank 0)."""
        return self.rank == 0

    # ---------------------------------------------------------------- sharding
    def shard(self, start, stop):
        """This rank's rows [lo, hi) of the global batch [start, stop) (see :func:`shard`)."""
        return shard(start, stop, self.rank, self.size)

    def check_data(self, ds, likelihood, scan=True):
        """Scan ``ds`` and return what the ranks compare of it (see the module docstring):
        in memory, the whole copy, once, with a checksum of its bytes; memory-mapped, this
        rank's share of the rows, and 64 rows sampled across the copy.  scan=False (data
        the caller vouches for): only the 64 sampled rows."""
        if not scan or isinstance(ds.x, np.memmap):
            if scan:
                ds.check(likelihood, self.shard(0, len(ds)))
            return _rows_digest(ds)
        h = hashlib.sha256()
        ds.check(likelihood, digest=h)
        # (the bytes as stored: ranks holding the same values in other dtypes are told
        # apart by the storage, and named so)
        return (len(ds), ds.dim, _storage(ds), h.hexdigest())

    def fail(self, exc):
        """Keep this rank's error for the next agreement (where every rank learns of it)."""
        return exc

    def stopping(self, guard):
        """Stop only on what every rank agreed (a rank's own Ctrl-C is told at the next
        agreement)."""
        return self.agreed

    def side(self, fn, *args):
        """Rank 0's output (progress): an error in it must not take rank 0 out of the next
        collective; it is told to every rank at the next agreement."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            self.deferred = self.deferred or f"{type(e).__name__}: {e}"

    def abort(self, code, why):
        """End every rank now (when the others cannot be told: they would wait for this one
        in their next collective for ever)."""
        if self.size > 1:
            print(f"fastvae: {why}: aborting every rank",
                  file=sys.stderr, flush=True)
            # The launcher relays a rank's stderr and its abort request on separate
            # channels; when the abort wins, mpiexec kills the job before the message
            # (the only word of why) reaches the user.  A pause lets it through first: this
            # job is ending anyway.  (A Ctrl-C during the pause must not skip the Abort: the
            # other ranks would wait in their next collective for ever.)
            try:
                time.sleep(ABORT_GRACE_S)
            except KeyboardInterrupt:
                pass
            self.comm.Abort(code)

    def check_same_start(self, failure, inputs):
        """Before a fit changes anything: raise on every rank when a rank's arguments or
        data were refused (``failure``: that exception, raised again on its rank;
        DistributedError naming it on the others), or, naming what differs, unless every
        rank starts with the same model (configuration, parameters, position in training),
        the same settings and the same data (lengths, widths, and 64 sampled rows of each):
        ranks that differ would silently train different things.  ``inputs()`` gives
        (model, resolved settings, the settings given, epochs, and the training and
        validation data's :meth:`check_data` fingerprints).  One allgather."""
        self._refuse_differences(self.gather(failure, lambda: self._fingerprint(*inputs()),
                                             "fit refused"))

    def gather_same(self, failure, fingerprint, compute, what):
        """:meth:`gather` of ``compute()``, each rank's value sent with its
        ``fingerprint()`` (a dict of what must be equal on every rank, see
        :func:`estimate_fingerprint`): where they differ every rank raises, naming what
        differs.  Still one allgather."""
        every = self.gather(failure, lambda: (fingerprint(), compute()), what)
        self._refuse_differences([e[0] for e in every])
        return [e[1] for e in every]

    def _refuse_differences(self, every):
        """Raise on every rank (each has the same list) unless the fingerprints agree."""
        differ = [k for k in every[0] if any(e[k] != every[0][k] for e in every)]
        if not differ:
            return
        lines = []
        for k in differ:
            if k.endswith("data"):  # say how: the shape, the storage, or the values
                shapes = [e[k] and e[k][:2] for e in every]
                storage = [e[k] and e[k][2] for e in every]
                if len(set(shapes)) > 1:
                    k += " (" + ", ".join(f"rank {r}: " + ("none" if s is None else
                                                           f"{s[0]} rows of {s[1]}")
                                          for r, s in enumerate(shapes)) + ")"
                elif len(set(storage)) > 1:
                    k += " (" + ", ".join(f"rank {r}: {s}" for r, s in enumerate(storage))
                    k += ": give every rank the same kind of array)"
                else:
                    k += " (same shape, different values)"
            lines.append(k)
        err = DataError if all(k.split(" (")[0].endswith("data") for k in lines) else ValueError
        raise err(f"the MPI ranks differ in {', '.join(lines)}; every rank must run the same "
                  "script on the same data, with the same model and settings")

    def gather(self, failure, compute, what):
        """Every rank's ``compute()`` (a list, by rank), unless a rank failed: ``failure``
        is this rank's exception so far (or None; compute is then called, and an exception
        it raises counts too).  When any rank failed, that rank raises its own exception
        again and the others a DistributedError "<what> on rank r: <cause>", so no rank is
        left waiting.  One allgather."""
        value = None
        if failure is None:
            try:
                value = compute()
            except Exception as e:  # noqa: BLE001  (told to every rank below)
                failure = e
        msg = None if failure is None else f"{type(failure).__name__}: {failure}"
        every = self.comm.allgather((msg, value))
        failed = [(r, m) for r, (m, _) in enumerate(every) if m is not None]
        if failed:
            if failure is not None:
                raise failure
            raise DistributedError(f"{what} on " + "; ".join(f"rank {r}: {m}" for r, m in failed))
        return [v for _, v in every]

    def _fingerprint(self, model, settings, given, epochs, train, valset):
        """What must be the same on every rank, each part small (digests of arrays)."""
        def plain(v):  # an Optimizer instance by its class and configuration
            return repr(v) if not hasattr(v, "config") else (type(v).__name__, v.config())
        st = model.train_state
        opt = None if st is None or st.optimizer is None else st.optimizer.config()
        return {"the training data": train, "the validation data": valset,
                "the model": repr(sorted(model.config().items())),
                "the backend": model.kernels.NAME,
                "the parameters": _digest(self.bk.to_numpy(model.flat_params)),
                # (with a weight average the raw weights, which the steps go on from)
                "the weight average": None if st is None or st.average is None else (
                    st.average.holds, _digest(self.bk.to_numpy(st.average.other))),
                "the training state": (model.noise.counter, None if st is None else
                                       (st.step, st.epoch, st.row)),
                "the settings": repr((sorted(settings.items()), epochs, opt,
                                      sorted((k, plain(v)) for k, v in given.items())))}

    # ------------------------------------------------------------------ a step
    def begin_step(self, free_bits):
        """A step starts: with free bits it holds a KL exchange before the final one."""
        self.kl_pending = free_bits > 0

    def _exchange(self, failure, stop, sums, kl=None):
        s = self._small
        s[_FAIL], s[_STOP] = float(failure is not None), float(bool(stop))
        s[2:6] = sums
        s[6:] = 0.0 if kl is None else kl
        self.comm.Allreduce(self.MPI.IN_PLACE, s, op=self.MPI.SUM)
        if s[_FAIL] > 0:
            reports = self.comm.allgather(failure)
            msg = "; ".join(f"rank {r}: {m}" for r, m in enumerate(reports) if m is not None)
            raise DistributedError(f"training stopped on every rank: {msg}")
        return s.copy()

    def agree(self, failure, stop, sums=(0.0, 0.0, 0.0, 0)):
        """The step's closing reduction: flags and loss sums (the rows' [loss, recon, kl]
        sums and their count).  Raises DistributedError on every rank when any rank's step
        failed (``failure``: its error, else None; rank 0's deferred output error counts
        too).  Returns (stop requested by any rank, the global sums); the stop is kept for
        :meth:`stopping`."""
        if failure is None and self.deferred is not None:
            failure = self.deferred
        if isinstance(failure, BaseException):
            failure = f"{type(failure).__name__}: {failure}"
        if self.kl_pending:  # this rank failed before the KL exchange: join it, failing
            self.kl_pending = False
            self._exchange(failure, stop, sums)
        s = self._exchange(failure, stop, sums)
        self.agreed = s[_STOP] > 0
        return self.agreed, s[2:6].copy()

    def ready(self):
        """Wait for this rank's GPU work of the step (nothing on the host backends): its
        errors then surface before the step's agreement, where every rank learns of them,
        and never inside the gradient's Allreduce."""
        if self.bk.DEVICE:
            self.bk.xp.cuda.get_current_stream().synchronize()

    def allreduce_(self, buf):
        """buf <- the sum of every rank's buf, in place (a NumPy array, or a CuPy array:
        passed to a CUDA-aware MPI as it is, else staged through pinned host memory)."""
        MPI = self.MPI
        if not self.bk.DEVICE:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        xp = self.bk.xp
        xp.cuda.get_current_stream().synchronize()  # MPI reads memory, not the stream
        if self.cuda_aware:
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        host = self._staging(buf)
        buf.get(out=host)
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        buf.set(host)
        return buf

    def _staging(self, buf):
        """One page-locked host buffer of buf's shape and dtype, made on first use."""
        if self._host is None or self._host.shape != buf.shape or self._host.dtype != buf.dtype:
            mem = self.bk.xp.cuda.alloc_pinned_memory(buf.nbytes)
            self._host = np.frombuffer(mem, buf.dtype, buf.size).reshape(buf.shape)
        return self._host

    def kl_dim_reducer(self, batch):
        """For free bits: the gate compares the batch mean of each dimension's KL, so the
        ranks' shard means are reduced to the global batch's before it is used (the step's
        KL exchange)."""
        def reduce(kl_dim, rows):
            self.kl_pending = False
            host = self.bk.to_numpy(kl_dim).astype(np.float64) * rows
            s = self._exchange(None, False, (0.0, 0.0, 0.0, 0), kl=host)
            kl_dim[...] = self.bk.asarray((s[6:] / batch).astype(kl_dim.dtype))
        return reduce
