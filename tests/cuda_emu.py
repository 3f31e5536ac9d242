"""An emulated GPU for the cuda backend: the real ``kernels/*.cu`` compiled for the CPU.

``EmulatedDevice`` has the methods of ``fastvae.backends.cuda.CupyDevice`` (``xp``,
``sm_count``, ``launch``, ``gemm``, ``to_numpy``), with NumPy arrays standing in for device
arrays.  Kernels run through ``cuda_emu.h`` (one fiber per CUDA thread, real barriers and
warp shuffles), cuBLAS is replaced by a column-major GEMM written against raw leading
dimensions, and every launch is checked against the kernel's C signature: a scalar of the
wrong width or an array of the wrong dtype is an error here, where CuPy would silently pass
the wrong bits.
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
             "unsigned char": np.uint8, "long long": np.int64}


def _param_kind(ctype):
    if ctype.endswith("*"):
        base = ctype[:-1].replace("const ", "").strip()
        return ("array", np.dtype(_POINTEES[base]))
    return _CTYPES[ctype]


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
    digest = hashlib.sha1((src + (HERE / "cuda_emu.h").read_text()
                           + "".join(f.read_text() for f in sorted(kernel_dir.glob("*.cu*"))))
                          .encode()).hexdigest()[:16]
    out_dir = Path(out_dir or tempfile.gettempdir())
    lib = out_dir / f"fastvae_cuda_emu_{digest}.so"
    if not lib.exists():
        cpp = out_dir / f"fastvae_cuda_emu_{digest}.cpp"
        cpp.write_text(src)
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["g++", "-std=c++17", "-O1", "-fPIC", "-shared", "-w",
                        "-I", str(HERE), "-I", str(kernel_dir), "-o", str(tmp), str(cpp)],
                       check=True, capture_output=True, text=True)
        os.replace(tmp, lib)
    return lib, sigs


class EmulatedDevice:
    """A CPU stand-in for ``CupyDevice`` (see the module docstring)."""

    xp = np

    def __init__(self, lib_path, sigs, sm_count=2):
        self._lib = ctypes.CDLL(str(lib_path))
        self._lib.emu_launch.restype = ctypes.c_int
        self._sigs = sigs
        self.sm_count = sm_count
        self.launches = []   # kernel names, in launch order
        self.gemms = 0

    def launch(self, name, grid, block, args):
        if name not in self._sigs:
            raise KeyError(f"no CUDA kernel named {name!r}")
        types = self._sigs[name][1]
        if len(args) != len(types):
            raise TypeError(f"{name}: {len(args)} arguments for {len(types)} parameters")
        keep, ptrs = [], []
        for i, (a, ctype) in enumerate(zip(args, types)):
            kind = _param_kind(ctype)
            if kind[0] == "array":
                if not isinstance(a, np.ndarray) or a.dtype != kind[1]:
                    raise TypeError(f"{name} argument {i} ({ctype}): expected a {kind[1]} array, "
                                    f"got {type(a).__name__} {getattr(a, 'dtype', '')}")
                if a.size and not a.flags.c_contiguous:
                    raise ValueError(f"{name} argument {i}: array is not C-contiguous")
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

    def gemm(self, dtype, transa, transb, m, n, k, A, lda, B, ldb, C, ldc, tf32):
        """C (m, n) = op(A) @ op(B), all column-major with leading dimensions, as cuBLAS."""
        self.gemms += 1

        def colmajor(arr, rows, cols, ld):
            flat = arr.reshape(-1)
            if ld < rows or flat.size < ld * (cols - 1) + rows:
                raise ValueError(f"gemm: leading dimension {ld} does not fit a {rows}x{cols} "
                                 f"operand in {flat.size} elements")
            return np.lib.stride_tricks.as_strided(
                flat, shape=(rows, cols), strides=(flat.itemsize, ld * flat.itemsize))

        opA = colmajor(A, k, m, lda).T if transa else colmajor(A, m, k, lda)
        opB = colmajor(B, n, k, ldb).T if transb else colmajor(B, k, n, ldb)
        res = opA.astype(np.float64) @ opB.astype(np.float64)
        colmajor(C, m, n, ldc)[...] = res.astype(dtype)

    @staticmethod
    def to_numpy(a):
        return np.array(a)
