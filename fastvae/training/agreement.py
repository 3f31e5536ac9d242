"""Who takes part in a step, and how they agree: one process (:class:`Solo`) or the ranks
of an MPI communicator (:class:`~fastvae.training.distributed.Distributed`).

``fit`` and the estimates are written once, over this interface; the two kinds differ only
inside it:

- ``shard(start, stop)``: this process's rows of the global rows [start, stop);
- ``check_data(ds, likelihood, scan=True)``: scan a dataset for NaN/inf and range (one
  process: all of it; ranks: each its whole in-memory copy, with a checksum of its bytes)
  and return what the ranks compare (None for one process); scan=False (data the caller
  vouches for) only fingerprints it, from 64 sampled rows;
- ``fail(exc)``: an error here.  One process raises it at once; a rank keeps it, to be told
  to every rank at the next agreement, so that no rank is left waiting in a collective;
- ``check_same_start``, ``gather``, ``gather_same``: before anything changes, every
  process's refusal (and, with ranks, any difference in data, model or settings) raises on
  every process;
- ``agree(failure, stop, sums)``: the closing reduction of a step or an epoch (failures,
  the stop flag, the loss sums); ``stopping(guard)``: whether to stop now;
- ``begin_step``, ``ready``, ``allreduce_``, ``kl_dim_reducer``: the data-parallel step;
- ``side(fn, *args)``: the lead's own output, whose failure must not take it out of the
  next collective; ``abort(code, why)``: end every process at once.

Two properties say how a step is run: ``holds_whole_step`` (one process holds a second
Ctrl-C for the whole step; a rank waiting in a collective must stay abortable) and
``reads_loss_every_step`` (ranks wait for the Allreduce each step anyway, so they read and
check the loss each step; one process on a GPU keeps the sums on the device).
"""
from __future__ import annotations


class Solo:
    """One process: every agreement is with itself.  Errors raise where they happen."""

    rank, size, lead = 0, 1, True
    holds_whole_step = True
    reads_loss_every_step = False
    kl_dim_reducer = None  # free bits gate on this process's batch as it is

    def shard(self, start, stop):
        return start, stop

    def check_data(self, ds, likelihood, scan=True):
        if scan:
            ds.check(likelihood)
        return None

    def fail(self, exc):
        raise exc

    def check_same_start(self, failure, inputs):
        if failure is not None:
            raise failure

    def gather(self, failure, compute, what):
        self.check_same_start(failure, None)
        return [compute()]

    def gather_same(self, failure, fingerprint, compute, what):
        return self.gather(failure, compute, what)

    def agree(self, failure, stop, sums=(0.0, 0.0, 0.0, 0)):
        if failure is not None:
            raise failure if isinstance(failure, BaseException) else RuntimeError(failure)
        return bool(stop), sums

    def stopping(self, guard):
        return guard.hit

    def begin_step(self, free_bits):
        pass

    def ready(self):
        pass

    def allreduce_(self, buf):
        return buf

    def side(self, fn, *args):
        return fn(*args)

    def abort(self, code, why):
        pass  # one process: the exception in flight ends it


def agreement(comm, model):
    """:class:`Solo` for ``comm`` None, else the ranks of ``comm`` (an mpi4py communicator)
    training or evaluating ``model`` together."""
    if comm is None:
        return Solo()
    from .distributed import Distributed
    return Distributed(comm, model)
