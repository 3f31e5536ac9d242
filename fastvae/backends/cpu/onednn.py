"""bfloat16 matrix products on the CPU through oneDNN's matmul primitive (ctypes; the
library comes from ``pip install 'fastvae[bf16]'``, which installs ``onednn-cpu-gomp``).

Why oneDNN, measured on a 2-core AMD EPYC (Zen 4, AVX512_BF16) at 2048x784x400:
- oneDNN (onednn-cpu-gomp 2023.2, a 55 MB library with no dependency but libgomp): bf16
  operands 446 GFLOP/s, 2.1x NumPy's float32 sgemm (210 GFLOP/s); its f32 "fpmath bf16"
  mode is ignored on this ISA (still 227 GFLOP/s, float32 results), so the operands are
  converted first (:func:`fastvae.backends.cpu.bf16.to_bf16`).
- MKL's ``cblas_gemm_bf16bf16f32`` (pip ``mkl``, 717 MB with its dependencies): 174-185
  GFLOP/s whatever ``MKL_ENABLE_INSTRUCTIONS`` says: it does not use the bf16 units of a
  non-Intel CPU, so it is slower than float32 there.
- The SYCL build on PyPI (``onednn``) needs the DPC++ runtime (several hundred MB more).

A primitive is built once per (shape, strides) and cached; a call sets the three data
pointers and executes it.  Thread count: OpenMP's (``OMP_NUM_THREADS``, else every core).

**OpenMP's threads sleep between products.**  GNU OpenMP's threads busy-wait after each
parallel region (``GOMP_SPINCOUNT``, 300,000 turns by default), so after every product
oneDNN's second thread kept the other core busy while the step's elementwise kernels ran
(a 2,048-row likelihood took 2.3-2.5 ms inside the step against 1.1-1.3 ms alone).  So
fastvae loads oneDNN with ``GOMP_SPINCOUNT=0`` (:func:`_quiet_openmp`, and puts the
environment back after) and then lets its own kernels use every core
(:func:`fastvae.backends.cpu.pool.default_to_cores`).  Measured on a 2-core Xeon with AMX,
alternating turns, the canonical bf16 step at batch 2048 took 13.4-13.5 ms against 17.6 ms
(PyTorch's autocast 17.7), the deep model's at 512 14.3 against 19.3; at batch 32 1.10
against 1.18.  Where the user set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``, or GNU OpenMP
was already loaded (PyTorch brings its own libgomp.so.1, which oneDNN then shares), the
setting is left as it is and the kernels keep the default thread count:
:func:`openmp_waits` says which.  A library loaded later that needs libgomp.so.1 shares
this one, asleep too: PyTorch imported after a bf16 model was built ran its own steps
1.04-1.17x as long (canonical model, batch 128 and 2048); import it first, or set
``GOMP_SPINCOUNT=300000`` (libgomp's default) to keep the spin.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path

ENV_LIB = "FASTVAE_DNNL_LIB"  # a path to libdnnl.so, when it is not where pip puts it
INSTALL = "pip install 'fastvae[bf16]'"

# the C API's values, public for code that builds its own primitives on this library (the
# benchmarks' blocked-layout product)
F32, BF16 = 3, 2                        # dnnl_data_type_t
ARG_SRC, ARG_WEIGHTS, ARG_DST = 1, 33, 17
_CPU_ENGINE, _IN_ORDER = 1, 1
Dims = ctypes.c_int64 * 12              # dnnl_dims_t
_vp = ctypes.c_void_p


class Arg(ctypes.Structure):            # dnnl_exec_arg_t
    _fields_ = [("arg", ctypes.c_int), ("memory", _vp)]


def _candidates():
    env = os.environ.get(ENV_LIB)
    if env:
        return [env]
    out = [str(Path(p) / "lib" / "libdnnl.so.3") for p in dict.fromkeys(
        (sys.prefix, sys.base_prefix))]
    found = ctypes.util.find_library("dnnl")
    return out + ([found] if found else [])


class OneDNN:
    """The loaded library, its CPU engine and stream, and the cached primitives."""

    def __init__(self, path):
        lib = self.lib = ctypes.CDLL(path)
        for name in ("dnnl_engine_create", "dnnl_stream_create",
                     "dnnl_memory_desc_create_with_strides", "dnnl_primitive_attr_create",
                     "dnnl_matmul_primitive_desc_create", "dnnl_primitive_create",
                     "dnnl_memory_create", "dnnl_memory_set_data_handle",
                     "dnnl_primitive_execute", "dnnl_stream_wait"):
            getattr(lib, name).restype = ctypes.c_int
        self.path = path
        self.engine = _vp()
        self.check(lib.dnnl_engine_create(ctypes.byref(self.engine), _CPU_ENGINE, 0),
                   "dnnl_engine_create")
        # A primitive's memory handles are set per call, and a stream runs one call at a
        # time: each thread has its own stream and primitives (fit's shards call from
        # several threads at once), so no call waits for another's.
        self._local = threading.local()
        # OpenMP's thread count (libgomp, which oneDNN loads): per calling thread
        self._omp_get = getattr(lib, "omp_get_max_threads", None)
        self._omp_set = getattr(lib, "omp_set_num_threads", None)

    def version(self):
        """(major, minor, patch) of the loaded library."""
        class V(ctypes.Structure):  # dnnl_version_t
            _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int),
                        ("patch", ctypes.c_int), ("hash", ctypes.c_char_p),
                        ("cpu_runtime", ctypes.c_uint), ("gpu_runtime", ctypes.c_uint)]
        self.lib.dnnl_version.restype = ctypes.POINTER(V)
        v = self.lib.dnnl_version().contents
        return v.major, v.minor, v.patch

    def after_fork(self):
        """In a forked child: nothing of the parent's threads' streams is kept."""
        self._local = threading.local()

    def thread_state(self):
        """(stream, primitive cache) of the calling thread."""
        mine = getattr(self._local, "state", None)
        if mine is None:
            stream = _vp()
            self.check(self.lib.dnnl_stream_create(ctypes.byref(stream), self.engine,
                                                   _IN_ORDER), "dnnl_stream_create")
            mine = self._local.state = _ThreadState(self.lib, stream)
        return mine.stream, mine.cache

    @contextlib.contextmanager
    def one_thread_here(self):
        """Within: this thread's products run on one OpenMP thread (its own setting:
        OpenMP keeps one per calling thread); the count it had is restored after."""
        if self._omp_get is None or self._omp_set is None:
            yield
            return
        before = self._omp_get()
        self._omp_set(1)
        try:
            yield
        finally:
            self._omp_set(before)

    @staticmethod
    def check(status, what):
        if status != 0:
            raise RuntimeError(f"oneDNN: {what} failed (dnnl_status_t {status})")

    def desc(self, shape, strides, dtype):
        md = _vp()
        self.check(self.lib.dnnl_memory_desc_create_with_strides(
            ctypes.byref(md), 2, Dims(*shape), dtype, Dims(*strides)),
            "dnnl_memory_desc_create_with_strides")
        return md

    def _primitive(self, key):
        (M, K, N), sa, sb, so, dt = key
        lib = self.lib
        descs = (self.desc((M, K), sa, dt), self.desc((K, N), sb, dt),
                 self.desc((M, N), so, F32))
        attr, pd, prim = _vp(), _vp(), _vp()
        self.check(lib.dnnl_primitive_attr_create(ctypes.byref(attr)),
                   "dnnl_primitive_attr_create")
        self.check(lib.dnnl_matmul_primitive_desc_create(
            ctypes.byref(pd), self.engine, descs[0], descs[1], None, descs[2], attr),
            f"the matmul primitive for ({M}, {K}) @ ({K}, {N})")
        self.check(lib.dnnl_primitive_create(ctypes.byref(prim), pd), "dnnl_primitive_create")
        mems = []
        for d in descs:
            m = _vp()
            self.check(lib.dnnl_memory_create(ctypes.byref(m), d, self.engine, None),
                       "dnnl_memory_create")
            mems.append(m)
        args = (Arg * 3)(Arg(ARG_SRC, mems[0]), Arg(ARG_WEIGHTS, mems[1]),
                         Arg(ARG_DST, mems[2]))
        return prim, mems, args

    def matmul(self, out, a, b):
        """out (M, N) float32 = a (M, K) @ b (K, N), a and b bf16 bits (uint16) or both
        float32, in any strided layout (a transpose is a view)."""
        size = a.itemsize
        key = ((a.shape[0], a.shape[1], b.shape[1]),
               tuple(s // size for s in a.strides), tuple(s // size for s in b.strides),
               tuple(s // 4 for s in out.strides), BF16 if size == 2 else F32)
        stream, cache = self.thread_state()
        # (a primitive's threads are fixed when it is made, and may decide how it sums:
        # one made inside a shard, on one OpenMP thread, is not reused outside, nor the
        # other way round)
        threads = None if self._omp_get is None else self._omp_get()
        entry = cache.get((key, threads))
        if entry is None:
            entry = cache[key, threads] = self._primitive(key)
        prim, mems, args = entry
        lib = self.lib
        lib.dnnl_memory_set_data_handle(mems[0], _vp(a.ctypes.data))
        lib.dnnl_memory_set_data_handle(mems[1], _vp(b.ctypes.data))
        lib.dnnl_memory_set_data_handle(mems[2], _vp(out.ctypes.data))
        self.check(lib.dnnl_primitive_execute(prim, stream, 3, args),
                   "dnnl_primitive_execute")
        self.check(lib.dnnl_stream_wait(stream), "dnnl_stream_wait")


class _ThreadState:
    """One thread's stream and primitives, destroyed when the thread ends (its
    threading.local entry goes, and this with it)."""

    def __init__(self, lib, stream):
        self.lib, self.stream, self.cache, self.pid = lib, stream, {}, os.getpid()

    def __del__(self):
        if self.pid != os.getpid():  # (a forked child's copy: the parent's to free)
            return
        try:
            for prim, mems, _ in self.cache.values():
                self.lib.dnnl_primitive_destroy(prim)
                for m in mems:
                    self.lib.dnnl_memory_destroy(m)
            self.lib.dnnl_stream_destroy(self.stream)
        except Exception:  # noqa: BLE001  (at interpreter exit the library may be gone)
            pass


_state = {}
_load_lock = threading.Lock()

#: what GNU OpenMP reads when it loads, set (unless the user set either) while oneDNN loads
_OMP_VARS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
QUIET_SPINCOUNT = "0"


def _gomp_loaded():
    """Whether a GNU OpenMP library (libgomp*) is mapped into this process already (None
    where /proc/self/maps cannot be read: not Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return any(os.path.basename(line.rsplit(None, 1)[-1]).startswith("libgomp")
               for line in maps.splitlines() if "/" in line)


def _user_spins(env):
    """Whether GNU OpenMP spins between parallel regions under the user's settings ``env``
    (GOMP_SPINCOUNT wins over OMP_WAIT_POLICY, as in libgomp; a count with libgomp's k, M,
    G or T suffix is zero when its number is)."""
    count = env.get("GOMP_SPINCOUNT")
    if count is not None:
        text = count.strip().lower().rstrip("kmgt")
        try:
            return float(text) != 0
        except ValueError:  # ("infinite", or what libgomp would not read either)
            return True
    return env.get("OMP_WAIT_POLICY", "").strip().lower() != "passive"


@contextlib.contextmanager
def _quiet_openmp():
    """Within: ``GOMP_SPINCOUNT=0`` in the environment, when this load of oneDNN will be
    what loads GNU OpenMP (which reads it once, then) and the user set neither variable;
    the environment is as before after.  Yields a list that holds, after the block, the
    wait state for :func:`openmp_waits`: (state, why)."""
    user = {v: os.environ[v] for v in _OMP_VARS if v in os.environ}
    out = []
    if user:
        out.append(("spins" if _user_spins(user) else "sleeps",
                    "as " + ", ".join(f"{k}={v}" for k, v in user.items()) + " say"))
        yield out
        return
    if _gomp_loaded() is not False:
        out.append(("spins", "GNU OpenMP was loaded before oneDNN (PyTorch brings one), "
                    "with its default spin"))
        yield out
        return
    os.environ["GOMP_SPINCOUNT"] = QUIET_SPINCOUNT
    try:
        yield out
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
    # (a oneDNN built on another threading runtime loads no libgomp: nothing read the 0)
    out.append(("sleeps", f"fastvae loaded oneDNN with GOMP_SPINCOUNT={QUIET_SPINCOUNT}")
               if _gomp_loaded() else
               ("spins", "this oneDNN does not run on GNU OpenMP; its threads were left "
                "as its runtime keeps them"))


def openmp_waits():
    """(state, why) of oneDNN's OpenMP threads between products once loaded: state
    'sleeps' or 'spins'; None before oneDNN is loaded."""
    return _state.get("waits")


def cpu_bf16_flags():
    """The bf16 features this CPU reports (a subset of {'avx512_bf16', 'amx_bf16'}), read
    from /proc/cpuinfo; None where that cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return {f for f in line.split(":", 1)[1].split() if f in ("avx512_bf16", "amx_bf16")}
    return None


def library():
    """The loaded :class:`OneDNN`, or raise RuntimeError saying what is missing."""
    if "lib" in _state:
        return _state["lib"]
    errors = []
    with _load_lock:  # (two threads building the first bf16 models: one load)
        if "lib" in _state:
            return _state["lib"]
        for path in _candidates():
            try:
                with _quiet_openmp() as waits:
                    lib = OneDNN(path)
            except OSError as e:
                errors.append(f"{path}: {e}")
                continue
            _state["lib"], _state["waits"] = lib, waits[0]
            if waits[0][0] == "sleeps":  # (its threads leave the cores to the kernels')
                from . import pool
                pool.default_to_cores()
            return lib
    raise RuntimeError("precision='bf16' on the cpu backend needs oneDNN, which was not "
                       f"found ({'; '.join(errors) or 'no candidate path'}); install it with "
                       f"{INSTALL}, or point {ENV_LIB} at libdnnl.so")


def support():
    """None when bf16 products can run here, else a sentence saying what is missing."""
    flags = cpu_bf16_flags()
    if not flags:
        what = ("its flags could not be read" if flags is None else
                "it has neither AVX512_BF16 nor AMX")
        return (f"precision='bf16' on the cpu backend needs a CPU with bfloat16 units, and "
                f"{what}: bf16 products would be emulated, slower than float32; use "
                "precision='full' (or backend='numpy' to study bf16 numerics)")
    try:
        library()
    except RuntimeError as e:
        return str(e)
    return None


def one_thread_here():
    """A context in which this thread's bf16 products run on one OpenMP thread (nothing
    when oneDNN is not loaded: then no bf16 product has run, or can)."""
    lib = _state.get("lib")
    return contextlib.nullcontext() if lib is None else lib.one_thread_here()


def _after_fork():
    """A forked child keeps none of its parent's threads' streams.
    (GNU OpenMP, under oneDNN, may still hang in a child forked after the parent ran a
    parallel region; start processes with the "spawn" method for bf16 work.)"""
    lib = _state.get("lib")
    if lib is not None:
        lib.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
