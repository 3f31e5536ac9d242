"""The BLAS library's own thread count, set for a while: a data-parallel step (fit's
``shards``) runs one product per core from several threads, where a BLAS that also spreads
each product over every core would fight itself.

NumPy's BLAS is found among the libraries loaded into the process (``/proc/self/maps``:
Linux) by the thread-count functions it exports: OpenBLAS under its plain, 64-bit-integer
and scipy-openblas names, MKL and BLIS (in a file whose name has "blas", "mkl" or "blis":
Debian's OpenBLAS is libblas.so.3).  Where none is found (another OS, another BLAS) the
count is left alone: shards still run, with every product on the library's threads, which
is slower (and their bits are those of that library's own thread count, as without shards).

Measured on a 2-core EPYC (the scVI model at batch 128: 2 shards of 64 rows, one per core):
a step's forward and backward took 3.5-3.9 ms with OpenBLAS on one thread per shard, 6.1 ms
with OpenBLAS's own 2 threads per product, and 4.4-5.8 ms unsharded (OpenBLAS on 2 threads).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading

#: (getter, setter) symbol names of the thread count, by library
_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
    ("bli_thread_get_num_threads", "bli_thread_set_num_threads"),
)
#: parts of a library file name worth a look (Debian names OpenBLAS libblas.so.3)
_NAMES = ("blas", "mkl", "blis")

_found = None
_lock = threading.Lock()


def _loaded_libraries():
    """Paths of the loaded shared libraries that look like a BLAS (Linux; [] elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f
                     if line.count(" ") >= 5 and "/" in line}
    except OSError:
        return []
    return sorted(p for p in paths if any(n in os.path.basename(p).lower() for n in _NAMES))


def controls():
    """[(get, set)] ctypes functions of every BLAS found (looked up once: NumPy's BLAS is
    loaded with NumPy, before any fit)."""
    global _found
    with _lock:
        if _found is None:
            found = []
            for path in _loaded_libraries():
                try:
                    lib = ctypes.CDLL(path)
                except OSError:
                    continue
                for get, set_ in _SYMBOLS:
                    if hasattr(lib, get) and hasattr(lib, set_):
                        g, s = getattr(lib, get), getattr(lib, set_)
                        g.restype, g.argtypes = ctypes.c_int, []
                        s.restype, s.argtypes = None, [ctypes.c_int]
                        found.append((g, s))
                        break
            _found = found
        return _found


#: the users inside limited_to_one now, and the counts to give back when the last leaves
_held = {"depth": 0, "saved": [], "lock": threading.Lock()}


@contextlib.contextmanager
def limited_to_one():
    """Within: every BLAS found runs each product on one thread; the counts it had are
    restored when the last of the (possibly concurrent: fits on several threads) users
    leaves, also on an error."""
    with _held["lock"]:
        if _held["depth"] == 0:
            saved = []
            for get, set_ in controls():
                k = get()
                if k > 1:
                    set_(1)
                    saved.append((set_, k))
            _held["saved"] = saved
        _held["depth"] += 1
    try:
        yield
    finally:
        with _held["lock"]:
            # (max: a forked child starts again from 0, see _after_fork)
            _held["depth"] = max(0, _held["depth"] - 1)
            if _held["depth"] == 0:
                for set_, k in reversed(_held["saved"]):
                    set_(k)
                _held["saved"] = []


def _after_fork():
    """A child forked during a sharded step has none of the threads that held the limit:
    it gives the counts back and starts with a fresh lock."""
    for set_, k in reversed(_held["saved"]):
        set_(k)
    _held.update(depth=0, saved=[], lock=threading.Lock())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
