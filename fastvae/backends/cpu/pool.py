"""The cpu backend's threads: a fixed pool that runs a kernel's chunks on every core.

Why a pool of Python threads and not Numba's ``parallel=True`` (measured on a 2-core EPYC):
- a ``prange`` over chunks compiled to code 4-10x *slower* than the serial kernel (the
  inner loops stopped vectorising), with the omp, tbb and workqueue layers alike;
- the serial ``nogil`` kernels, run on row ranges by two threads, ran 1.75x faster (the
  likelihood at 2048 x 784: 1.06 -> 0.55 ms);
- the pool's threads sleep on a lock between jobs, so they never spin against BLAS's or
  OpenMP's threads (oneDNN's); a hand-off costs about 10-20 us, so only kernels with
  enough work are split (:func:`n_chunks`).

Results never depend on the thread count: how a kernel is cut into chunks depends on its
shape alone, a chunk's work is the same whichever thread runs it, and partial results
(column sums, counts) are added in chunk order by the caller.  One thread runs the same
chunks one after another.

The thread count: :func:`set_num_threads`, else the environment variable
``FASTVAE_NUM_THREADS``, else **1**, or every core this process may use once oneDNN is
loaded with its OpenMP threads asleep between products (:func:`default_to_cores`).  One,
because that measured best inside a float32 training step on the 2-core machines we have:
with 2 threads the step took 1.00-1.07x as long as with 1 (batch 512 and 2048), though a
split kernel alone ran 1.9x faster.  Right after each matrix product OpenBLAS's threads keep
spinning on the other core for a while (``OPENBLAS_THREAD_TIMEOUT``, read when NumPy loads
it), and the pool's worker gets it late.  oneDNN's OpenMP threads are told not to spin
(:mod:`fastvae.backends.cpu.onednn`), and then 2 threads made the bf16 step at batch 2048
1.3x faster.  Where the kernels' cores are not the BLAS threads' (more cores than BLAS
uses, or BLAS limited to fewer threads), set more.
"""
from __future__ import annotations

import functools
import os
import signal
import threading

ENV_VAR = "FASTVAE_NUM_THREADS"
#: a kernel is cut into chunks of at least this many elements (about 50 us of work for the
#: likelihood: a hand-off costs 10-20 us) ...
MIN_CHUNK = 1 << 16
#: ... and into at most this many chunks (so at most this many threads share one kernel)
MAX_CHUNKS = 8


@functools.lru_cache(maxsize=4096)
def n_chunks(rows, cols=1):
    """How many chunks a kernel over (rows, cols) elements is cut into (rows split): a
    function of the shape alone, so that results do not depend on the thread count."""
    return max(1, min(MAX_CHUNKS, rows, (rows * cols) // MIN_CHUNK))


@functools.lru_cache(maxsize=4096)
def bounds(n, k):
    """The k chunks of range(n): ((lo, hi), ...), sizes differing by at most one (kept:
    a step asks for the same few shapes every time)."""
    q, r = divmod(n, k)
    out, lo = [], 0
    for i in range(k):
        hi = lo + q + (i < r)
        out.append((lo, hi))
        lo = hi
    return tuple(out)


def _default_threads():
    env = os.environ.get(ENV_VAR)
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{ENV_VAR} must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"{ENV_VAR} must be a positive integer, got {env!r}")
        return n
    return 1  # (see the module docstring)


class Pool:
    """``n`` threads: the caller and n - 1 workers, each asleep on its own lock."""

    def __init__(self, n):
        self.n = n
        self._job = None
        self._go = [threading.Lock() for _ in range(n - 1)]
        self._done = [threading.Lock() for _ in range(n - 1)]
        self._errors = [None] * (n - 1)
        for lock in self._go + self._done:
            lock.acquire()
        self._threads = [threading.Thread(target=self._work, args=(k,), daemon=True,
                                          name=f"fastvae-cpu-{k + 1}") for k in range(n - 1)]
        for t in self._threads:
            t.start()
        self._lock = threading.Lock()  # one job at a time (models used from several threads)

    def _work(self, k):
        _block_sigint()  # Ctrl-C goes to the caller's thread, never into a chunk
        go, done = self._go[k], self._done[k]
        while True:
            go.acquire()
            fn, chunks = self._job
            try:
                for t in chunks:  # the next chunk nobody took yet
                    fn(*t)
            except BaseException as e:  # noqa: BLE001  (raised again by the caller)
                self._errors[k] = e
            done.release()

    def run(self, fn, tasks):
        """fn(*t) for every t in tasks; returns when all are done, raising the first error.
        Each thread takes the next task nobody has taken (a shared iterator: atomic under
        the GIL), so a worker that wakes late, its core busy with another library's
        spinning threads, costs nothing but its share: the caller takes the rest.

        Whatever happens (an error in a chunk, a Ctrl-C), the caller returns only after
        every worker it woke has finished: a chunk still writing would otherwise race with
        what the caller reads next (the partial sums), and the pool would fall out of step."""
        used = min(self.n, len(tasks)) - 1
        if used <= 0 or not self._lock.acquire(blocking=False):
            for t in tasks:  # one chunk, one thread, or a job already running: in order
                fn(*t)
            return
        try:
            chunks = iter(tasks)
            self._job = (fn, chunks)
            mask = _block_sigint()  # (so that the count of woken workers is exact)
            try:
                for k in range(used):
                    self._go[k].release()
            finally:  # (never leave the caller's thread deaf to Ctrl-C, nor its children)
                _restore(mask)
            error = None
            try:
                for t in chunks:
                    fn(*t)
            except BaseException as e:  # noqa: BLE001
                error = e
                for _ in chunks:  # (the workers stop at the end of the iterator)
                    pass
            k = 0
            while k < used:
                try:
                    self._done[k].acquire()
                except BaseException as e:  # noqa: BLE001  (a Ctrl-C: wait on, then raise it)
                    error = error or e
                    continue
                if self._errors[k] is not None and error is None:
                    error = self._errors[k]
                self._errors[k] = None
                k += 1
            self._job = None
            if error is not None:
                raise error
        finally:
            self._lock.release()


def _block_sigint():
    """Block SIGINT in this thread (POSIX); returns the previous mask (None elsewhere)."""
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])


def _restore(mask):
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


_pool = {"n": None, "pool": None, "chosen": False}


def get_num_threads():
    """The threads the cpu backend's kernels use."""
    if _pool["n"] is None:
        _pool["n"] = _default_threads()
        _pool["chosen"] = bool(os.environ.get(ENV_VAR))  # (empty: unset, as above)
    return _pool["n"]


def set_num_threads(n):
    """Use ``n`` threads (>= 1) in the cpu backend's kernels from now on.  Results are the
    same bits for every n."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the thread count must be a positive integer, got {n!r}")
    _pool["chosen"] = True
    if n != _pool["n"]:
        _pool["n"], _pool["pool"] = n, None


def usable_cores():
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_to_cores():
    """The default thread count becomes every usable core (at most MAX_CHUNKS: no kernel
    is cut finer), unless a count was chosen (:func:`set_num_threads`,
    ``FASTVAE_NUM_THREADS``).  Called when the products' library stops competing for the
    cores between products (see the module docstring)."""
    get_num_threads()
    if not _pool["chosen"]:
        n = max(1, min(MAX_CHUNKS, usable_cores()))
        if n != _pool["n"]:
            _pool["n"], _pool["pool"] = n, None


def pool():
    """The pool of :func:`get_num_threads` threads (made on first use)."""
    p = _pool["pool"]
    if p is None or p.n != get_num_threads():
        p = _pool["pool"] = Pool(get_num_threads())
    return p


def run(fn, tasks):
    """fn(*t) for every t in tasks, on the pool's threads (see :meth:`Pool.run`)."""
    if len(tasks) == 1:
        fn(*tasks[0])
        return
    pool().run(fn, tasks)


def _after_fork():
    """A forked child has none of its parent's threads: it makes a pool of its own."""
    _pool["pool"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
