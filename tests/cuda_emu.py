"""An emulated GPU for the cuda backend: the real ``kernels/*.cu`` compiled for the CPU,
behind a CuPy-shaped surface, so that the backend's own :class:`CupyDevice` runs on it.

:func:`emulated_device` builds ``CupyDevice(cupy=FakeCupy, cublas=FakeCublas)``: every
``RawModule``, ``get_function``, launch, cuBLAS call (handle, stream, math mode, scalar and
device pointers), allocation and host copy of the backend goes through the code a GPU would
run, and only these two objects stand in for CuPy:

- :class:`FakeCupy`: ``RawModule(code=..., options=...)`` (the options must be the backend's
  :func:`compile_options`, the code one of its kernel files) whose ``get_function(name)``
  launches the kernel through ``cuda_emu.h`` (one fiber per CUDA thread, real barriers and
  warp shuffles), each launch checked against the kernel's C signature (a scalar of the
  wrong width or an array of the wrong dtype is an error here, where CuPy would silently
  pass the wrong bits); arrays are :class:`EmuArray` (NumPy arrays with ``.data.ptr``,
  ``.get()`` and ``.set()``); ``cuda.Device``, ``cuda.get_current_stream``, ``asnumpy``;
  every other attribute is NumPy's.  It counts launches and host reads (``asnumpy``,
  ``get``).
- :class:`FakeCublas`: ``create``, ``setPointerMode``, ``setStream``, ``setMathMode``,
  ``sgemm``/``dgemm`` on raw device pointers (checked to lie inside an array this device
  allocated) and host scalar pointers, column-major with leading dimensions, as cuBLAS.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from fastvae.backends import cuda as cuda_backend

HERE = Path(__file__).resolve().parent

#: C parameter type -> ('array', numpy dtype) or ('scalar', numpy scalar type, ctypes type)
_CTYPES = {
    "int": ("scalar", np.int32, ctypes.c_int32),
    "long long": ("scalar", np.int64, ctypes.c_int64),
    "unsigned int": ("scalar", np.uint32, ctypes.c_uint32),
    "unsigned long long": ("scalar", np.uint64, ctypes.c_uint64),
    "float": ("scalar", np.float32, ctypes.c_float),
    "double": ("scalar", np.float64, ctypes.c_double),
}
_POINTEES = {"float": np.float32, "double": np.float64, "unsigned long long": np.uint64,
             "unsigned char": np.uint8, "unsigned short": np.uint16, "long long": np.int64,
             "int": np.int32}


def _param_kind(ctype):
    if ctype.endswith("*"):
        base = ctype[:-1].replace("const ", "").strip()
        return ("array", np.dtype(_POINTEES[base]))
    return _CTYPES[ctype]


def gxx_command(kernel_dir=None, defines=None):
    """The g++ command (without source and output) that compiles kernel files for the
    emulator: the kernels' include path and the -D options of :func:`compile_options`
    (``defines`` replaces those, for tests that leave one out)."""
    kernel_dir = Path(kernel_dir or cuda_backend.kernel_dir())
    if defines is None:
        defines = [o for o in cuda_backend.compile_options(kernel_dir) if o.startswith("-D")]
    # (-ffp-contract=off: no multiply and add fused, as the float32 noise's rounded
    # intrinsics require, on any host that has FMA instructions)
    return ["g++", "-std=c++17", "-O1", "-ffp-contract=off", "-fPIC", "-w", "-I", str(HERE),
            "-I", str(kernel_dir),
            *defines]


def build_source(src, name, kernel_dir=None, out_dir=None):
    """Compile the C++ source ``src`` (which includes cuda_emu.h and kernel files) into a
    shared library named after ``name`` and a digest of everything it is built from; returns
    its path (reused when it exists)."""
    kernel_dir = Path(kernel_dir or cuda_backend.kernel_dir())
    cmd = gxx_command(kernel_dir)
    digest = hashlib.sha1((src + (HERE / "cuda_emu.h").read_text() + " ".join(cmd)
                           + "".join(f.read_text() for f in sorted(kernel_dir.glob("*.cu*"))))
                          .encode()).hexdigest()[:16]
    out_dir = Path(out_dir or tempfile.gettempdir())
    lib = out_dir / f"{name}_{digest}.so"
    if not lib.exists():
        cpp = out_dir / f"{name}_{digest}.cpp"
        cpp.write_text(src)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([*cmd, "-shared", "-o", str(tmp), str(cpp)],
                       check=True, capture_output=True, text=True)
        os.replace(tmp, lib)
    return lib


def build_library(kernel_dir=None, out_dir=None):
    """Compile every kernel with the emulator into a shared library; returns (path, sigs)."""
    kernel_dir = Path(kernel_dir or cuda_backend.kernel_dir())
    sigs = cuda_backend.kernel_signatures(kernel_dir)
    lines = ['#include "cuda_emu.h"']
    lines += [f'#include "{f.name}"' for f in sorted(kernel_dir.glob("*.cu"))]
    for name, (_, types) in sigs.items():
        casts = ", ".join(f"*({t}*)a[{i}]" for i, t in enumerate(types))
        lines.append(f'extern "C" void emu_{name}(void** a) {{ {name}({casts}); }}')
    src = "\n".join(lines) + "\n"
    return build_source(src, "fastvae_cuda_emu", kernel_dir, out_dir), sigs


class _Launcher:
    """Runs the compiled kernels: the emulator library and the kernels' C signatures."""

    def __init__(self, lib_path, sigs):
        self._lib = ctypes.CDLL(str(lib_path))
        self._lib.emu_launch.restype = ctypes.c_int
        self.sigs = sigs
        self.launches = []   # kernel names, in launch order
        self.cuda = None     # the fake cupy.cuda: launches go to its current device

    def launch(self, name, grid, block, args):
        if name not in self.sigs:
            raise KeyError(f"no CUDA kernel named {name!r}")
        types = self.sigs[name][1]
        if len(args) != len(types):
            raise TypeError(f"{name}: {len(args)} arguments for {len(types)} parameters")
        keep, ptrs = [], []
        for i, (a, ctype) in enumerate(zip(args, types)):
            kind = _param_kind(ctype)
            if kind[0] == "array":
                if not isinstance(a, EmuArray) or a.dtype != kind[1]:
                    raise TypeError(f"{name} argument {i} ({ctype}): expected a {kind[1]} "
                                    f"device array, got {type(a).__name__} "
                                    f"{getattr(a, 'dtype', '')}")
                if a.size and not a.flags.c_contiguous:
                    raise ValueError(f"{name} argument {i}: array is not C-contiguous")
                if self.cuda is not None and a._device != self.cuda.current:
                    raise ValueError(f"{name} argument {i}: an array of GPU {a._device} in a "
                                     f"launch on GPU {self.cuda.current}")
                v = ctypes.c_void_p(a.ctypes.data)
            else:
                if type(a) is not kind[1]:
                    raise TypeError(f"{name} argument {i} ({ctype}): expected {kind[1].__name__}, "
                                    f"got {type(a).__name__}")
                v = kind[2](a.item())
            keep.append(v)
            ptrs.append(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p))
        argv = (ctypes.c_void_p * len(ptrs))(*ptrs)
        grid = tuple(grid) + (1,) * (3 - len(grid))
        block = tuple(block) + (1,) * (3 - len(block))
        if min(grid) < 1:
            raise ValueError(f"{name}: empty grid {grid}")
        fn = getattr(self._lib, f"emu_{name}")
        rc = self._lib.emu_launch(ctypes.cast(fn, ctypes.c_void_p), *map(ctypes.c_uint, grid),
                                  *map(ctypes.c_uint, block), argv)
        if rc:
            raise ValueError(f"{name}: block {block} is not a whole number of warps (<= 1024)")
        self.launches.append(name)


class _MemoryPointer:
    """CuPy's ``ndarray.data``: here only its address, ``ptr``."""

    def __init__(self, ptr):
        self.ptr = ptr


class EmuArray(np.ndarray):
    """A device array of the emulated GPU: a NumPy array in host memory with CuPy's
    ``data.ptr`` (its address), ``get()`` (a host copy, counted as a read) and ``set()``."""

    _reads = None  # the owning FakeCupy's read counter (a one-element list)
    _device = 0    # the GPU it lives on
    _owner = None  # the FakeCupy that made it

    def __array_finalize__(self, obj):
        self._reads = getattr(obj, "_reads", None)
        self._device = getattr(obj, "_device", 0)
        self._owner = getattr(obj, "_owner", None)
        if self._owner is not None and self.base is None:
            # new memory made from a device array (copy(), arithmetic): on a GPU that is a
            # device allocation too, which kernels and GEMMs may be given
            self._owner.allocations[self.ctypes.data] = self.nbytes

    @property
    def data(self):
        return _MemoryPointer(self.ctypes.data)

    def get(self, out=None):
        if self._reads is not None:
            self._reads[0] += 1
        if out is not None:
            out[...] = self.view(np.ndarray)
            return out
        return np.array(self, copy=True).view(np.ndarray)

    def set(self, host):
        host = np.asarray(host)
        if host.shape != self.shape:
            raise ValueError(f"set: shape {host.shape} into an array of shape {self.shape}")
        np.ndarray.__setitem__(self, Ellipsis, host)


class _Stream:
    def __init__(self, ptr):
        self.ptr = ptr

    def synchronize(self):
        """The emulator runs every launch to completion: nothing is ever pending."""


class _DeviceObj:
    """``cupy.cuda.Device(i)``: its attributes, and a context that makes it current."""

    def __init__(self, cuda, i):
        self._cuda, self.id = cuda, cuda.current if i is None else int(i)
        self.attributes = {"MultiProcessorCount": cuda.sm_count}
        self.compute_capability = cuda.compute_capability

    def use(self):
        self._cuda.current = self.id

    def synchronize(self):
        """The emulator runs every launch to completion: nothing is ever pending."""

    def __enter__(self):
        self._prev = self._cuda.current
        self.use()
        return self

    def __exit__(self, *exc):
        self._cuda.current = self._prev
        return False


class _CudaNamespace:
    """``cupy.cuda``: devices, the current stream, the runtime's device count."""

    def __init__(self, sm_count, n_devices=2):
        self.sm_count, self.current, self.n_devices = sm_count, 0, n_devices
        self.compute_capability = "90"  # an sm_90 GPU (tests set "75" to see bf16 refused)
        props = {"name": b"emulated GPU (tests/cuda_emu.h)", "major": 0, "minor": 0}
        self.runtime = type("runtime", (), {
            "getDeviceCount": staticmethod(lambda: n_devices),
            "getDeviceProperties": staticmethod(lambda i: dict(props)),
            "driverGetVersion": staticmethod(lambda: 0),
            "runtimeGetVersion": staticmethod(lambda: 0)})

    def Device(self, i=None):  # noqa: N802  (CuPy's name)
        return _DeviceObj(self, i)

    def get_current_stream(self):
        return _Stream(1000 + self.current)  # one (default) stream per device

    def alloc_pinned_memory(self, nbytes):
        """Page-locked host memory: here plain host memory."""
        return bytearray(nbytes)


class FakeCupy:
    """The parts of ``cupy`` the backend uses, on the emulated GPU (see the module docstring)."""

    ndarray = EmuArray
    __version__ = "emulated"
    _CREATE = ("empty", "zeros", "ones", "full", "empty_like", "zeros_like", "asarray",
               "ascontiguousarray", "array", "arange")

    def __init__(self, launcher, sm_count=2):
        self._launcher = launcher
        self.cuda = _CudaNamespace(sm_count)
        launcher.cuda = self.cuda
        self.reads = [0]
        self.allocations = {}  # address -> nbytes of every array this device made
        self.modules = []      # (file name, options) of every RawModule compiled

    @property
    def launches(self):
        return self._launcher.launches

    def _device_array(self, a):
        a = np.ascontiguousarray(a) if not a.flags.c_contiguous else a
        out = a.view(EmuArray)
        out._reads = self.reads
        out._device = self.cuda.current
        out._owner = self
        base = out
        while isinstance(base.base, np.ndarray):
            base = base.base
        self.allocations[base.ctypes.data] = base.nbytes
        return out

    def __getattr__(self, name):
        fn = getattr(np, name)
        if name not in self._CREATE:
            return fn

        def create(*args, **kw):
            if name in ("asarray", "ascontiguousarray", "array") and args:
                src = args[0]
                want = kw.get("dtype")
                # (not `in (None, src.dtype)`: NumPy's dtype('float64') == None is True)
                if isinstance(src, EmuArray) and (want is None or np.dtype(want) == src.dtype):
                    return src if name != "array" else self._device_array(np.array(src))
                args = (np.array(src, copy=True) if not isinstance(src, np.ndarray)
                        else np.array(src),) + args[1:]
            return self._device_array(fn(*args, **kw))
        return create

    def asnumpy(self, a):
        self.reads[0] += 1
        return np.array(a, copy=True).view(np.ndarray)

    def RawModule(self, code, options):  # noqa: N802  (CuPy's name)
        src_dir = cuda_backend.kernel_dir()
        if tuple(options) != tuple(cuda_backend.compile_options(src_dir)):
            raise ValueError(f"RawModule options {options} are not the backend's "
                             f"{cuda_backend.compile_options(src_dir)}")
        fname = next((f.name for f in src_dir.glob("*.cu") if f.read_text() == code), None)
        if fname is None:
            raise ValueError("RawModule: the code is none of the kernel files")
        self.modules.append((fname, tuple(options)))
        launcher, sigs = self._launcher, self._launcher.sigs

        class _Module:
            def get_function(self, name):
                if sigs.get(name, (None,))[0] != fname:
                    raise KeyError(f"{name} is not a kernel of {fname}")
                return lambda grid, block, args: launcher.launch(name, grid, block, args)
        return _Module()


class FakeCublas:
    """The cuBLAS calls the backend makes (``cupy_backends.cuda.libs.cublas``), on the
    emulated GPU: GEMM on raw pointers, column-major, as cuBLAS."""

    def __init__(self, cupy):
        self._cupy = cupy
        self.handles = {}  # handle -> {"pointer_mode", "stream", "math_mode"}
        self.gemms = 0

    def create(self):
        h = 1 + len(self.handles)
        self.handles[h] = {"pointer_mode": None, "stream": None, "math_mode": 0,
                           "device": self._cupy.cuda.current}
        return h

    def setPointerMode(self, handle, mode):  # noqa: N802
        self.handles[handle]["pointer_mode"] = mode

    def setStream(self, handle, stream):  # noqa: N802
        self.handles[handle]["stream"] = stream

    def setMathMode(self, handle, mode):  # noqa: N802
        self.handles[handle]["math_mode"] = mode

    def _operand(self, ptr, ctype, rows, cols, ld):
        if ld < max(1, rows):
            raise ValueError(f"gemm: leading dimension {ld} < {rows} rows")
        n = ld * (cols - 1) + rows
        itemsize = ctypes.sizeof(ctype)
        if not any(base <= ptr and ptr + n * itemsize <= base + size
                   for base, size in self._cupy.allocations.items()):
            raise ValueError(f"gemm: a {rows}x{cols} operand (ld {ld}) at {ptr:#x} does not "
                             "lie inside an array of this device")
        flat = np.ctypeslib.as_array((ctype * n).from_address(ptr))
        return np.lib.stride_tricks.as_strided(
            flat, shape=(rows, cols), strides=(itemsize, ld * itemsize))

    def _gemm(self, ctype, handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C,
              ldc):
        st = self.handles[handle]
        if st["pointer_mode"] != 0:
            raise ValueError("gemm: the scalars are host pointers: pointer mode must be HOST (0)")
        if st["device"] != self._cupy.cuda.current:
            raise ValueError(f"gemm: handle {handle} belongs to device {st['device']}, the "
                             f"current device is {self._cupy.cuda.current}")
        self.gemms += 1
        a = ctype.from_address(alpha).value
        b = ctype.from_address(beta).value
        opA = (self._operand(A, ctype, k, m, lda).T if transa
               else self._operand(A, ctype, m, k, lda))
        opB = (self._operand(B, ctype, n, k, ldb).T if transb
               else self._operand(B, ctype, k, n, ldb))
        out = self._operand(C, ctype, m, n, ldc)
        res = a * (opA.astype(np.float64) @ opB.astype(np.float64))
        if b:
            res += b * out
        out[...] = res

    def sgemm(self, *args):
        self._gemm(ctypes.c_float, *args)

    def gemmEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb,  # noqa: N802
               beta, C, Ctype, ldc, compute, algo):
        """cublasGemmEx as the backend calls it: bf16 (CUDA_R_16BF = 14) operands, a float32
        (CUDA_R_32F = 0) output, float32 compute (CUBLAS_COMPUTE_32F = 68).  The operands'
        bits are widened exactly (a bf16 is the top half of a float32) and multiplied in
        float64, so the result is the exact product of the bf16 operands, rounded once."""
        if (Atype, Btype, Ctype, compute) != (14, 14, 0, 68):
            raise ValueError(f"gemmEx: types (A {Atype}, B {Btype}, C {Ctype}, compute "
                             f"{compute}); the emulator runs bf16 x bf16 -> f32 (14, 14, 0, 68)")
        st = self.handles[handle]
        if st["pointer_mode"] != 0:
            raise ValueError("gemm: the scalars are host pointers: pointer mode must be HOST (0)")
        self.gemms += 1
        self.bf16_gemms = getattr(self, "bf16_gemms", 0) + 1
        f32 = ctypes.c_float
        a = f32.from_address(alpha).value
        b = f32.from_address(beta).value

        def widened(ptr, rows, cols, ld):
            bits = self._operand(ptr, ctypes.c_uint16, rows, cols, ld)
            return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)

        opA = widened(A, k, m, lda).T if transa else widened(A, m, k, lda)
        opB = widened(B, n, k, ldb).T if transb else widened(B, k, n, ldb)
        out = self._operand(C, f32, m, n, ldc)
        res = a * (opA @ opB)
        if b:
            res += b * out
        out[...] = res

    def dgemm(self, *args):
        self._gemm(ctypes.c_double, *args)


def emulated_device(lib_path, sigs, sm_count=2):
    """The backend's real ``CupyDevice`` on the emulated GPU; the fakes are its ``xp`` and
    ``fake_cublas`` (for the counters)."""
    launcher = _Launcher(lib_path, sigs)
    fake = FakeCupy(launcher, sm_count)
    blas = FakeCublas(fake)
    dev = cuda_backend.CupyDevice(cupy=fake, cublas=blas)
    dev.fake_cublas = blas
    return dev
