"""The cuda backend's device layer: where the CUDA C sources are and how they are compiled,
the launch shapes, and :class:`CupyDevice` (one GPU: CuPy, the compiled modules, cuBLAS).

Nothing here launches a kernel: the launchers are in :mod:`fastvae.backends.cuda`.  Tests
build a CupyDevice over an emulated CuPy, so all of this runs without a GPU.
"""
from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

import numpy as np

from .codes import TILE_H, TILE_W, cuda_defines


BLOCK_1D = 256


#: blocks per streaming multiprocessor that grid-stride and tiled kernels aim for
WAVES_1D, WAVES_TILE = 8, 4


#: a row chunk of a tiled kernel is at least this many rows (4 per warp)
MIN_CHUNK_ROWS = 4 * TILE_H


DTYPE_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def kernel_dir():
    """The directory holding the ``.cu`` files: ``fastvae/kernels`` in an installed wheel,
    else ``kernels/`` at the top of a source checkout."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "kernels", here.parent / "kernels"):
        if (cand / "common.cuh").is_file():
            return cand
    raise FileNotFoundError(
        f"the CUDA kernel sources were not found (looked in {here / 'kernels'} and "
        f"{here.parent / 'kernels'}); reinstall fastvae")


def compile_options(directory=None):
    """The compiler options of every kernel file: what :class:`CupyDevice` hands to
    ``cupy.RawModule`` (which compiles with NVRTC and adds the GPU's architecture), and what
    the tests compile with, through NVRTC, without a GPU.

    The third option defines a digest of the shared header: CuPy's on-disk kernel cache is
    keyed by the source, the options and the compiler, not by included files, so without it
    a changed ``common.cuh`` (a new fastvae) would keep running kernels built from the old.
    The rest are the constants of :mod:`fastvae.backends.codes` (activation and likelihood codes,
    Philox constants, tile shape: :func:`~fastvae.backends.codes.cuda_defines`), which the
    kernel files do not define themselves."""
    directory = Path(directory if directory is not None else kernel_dir())
    digest = hashlib.sha256((directory / "common.cuh").read_bytes()).hexdigest()[:16]
    return ("-I" + str(directory), "--std=c++14", f"-DFASTVAE_COMMON_CUH={digest}",
            *cuda_defines())


# cudaDataType and cublasComputeType_t values (library_types.h, cublas_api.h)
CUDA_R_32F, CUDA_R_16BF = 0, 14
CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT = 68, -1

_SIG = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')


def kernel_signatures(directory=None):
    """{kernel name: (file name, [C parameter types])} for every exported kernel."""
    directory = Path(directory) if directory is not None else kernel_dir()
    out = {}
    for path in sorted(directory.glob("*.cu")):
        for name, params in _SIG.findall(path.read_text()):
            types = [" ".join(p.split()[:-1]).replace(" *", "*") for p in params.split(",")]
            out[name] = (path.name, types)
    return out


def kernel_name(base, dtype):
    """The exported name of kernel ``base`` for arrays of ``dtype`` (float32 or float64)."""
    try:
        return f"{base}_{DTYPE_SUFFIX[np.dtype(dtype)]}"
    except KeyError:
        raise TypeError(f"the cuda kernels take float32 or float64 arrays, got {np.dtype(dtype)}") from None


def grid_1d(n, sm_count):
    """Blocks for a grid-stride kernel over n elements: enough to fill the GPU, never more
    than there is work for."""
    return max(1, min(-(-int(n) // BLOCK_1D), WAVES_1D * sm_count))


def tile_plan(rows, cols, sm_count):
    """Launch shape of a tiled kernel over a (rows, cols) matrix.

    Returns (grid, block, rows_per_chunk, n_chunks): one block per (32-column tile, row
    chunk); there are enough chunks to give every SM a few blocks, each at least
    MIN_CHUNK_ROWS rows, and n_chunks == 1 whenever the rows fit one chunk (then the kernel
    writes its column sums straight to the output).
    """
    rows, cols = int(rows), int(cols)
    if rows < 1 or cols < 1:
        raise ValueError(f"tile_plan needs a non-empty matrix, got ({rows}, {cols})")
    n_tiles = -(-cols // TILE_W)
    want = max(1, -(-WAVES_TILE * sm_count // n_tiles))
    n_chunks = max(1, min(want, rows // MIN_CHUNK_ROWS))
    per = -(-rows // n_chunks)
    per = -(-per // TILE_H) * TILE_H
    n_chunks = -(-rows // per)
    return (n_tiles, n_chunks), (TILE_W, TILE_H), per, n_chunks


def gemm_args(out_shape, a_shape, b_shape, trans_a, trans_b):
    """cuBLAS arguments for the row-major product out (M, N) = op(a) @ op(b).

    cuBLAS is column-major, and a row-major matrix read column-major is its transpose, so
    out^T = op(b)^T @ op(a)^T is computed instead: b goes first, a second, and each
    operand's leading dimension is its row length.  Returns
    (transa, transb, m, n, k, lda, ldb, ldc) for gemm(handle, transa, transb, m, n, k,
    alpha, b, lda, a, ldb, beta, out, ldc); 0 means no transpose, 1 transpose.
    """
    if len(a_shape) != 2 or len(b_shape) != 2 or len(out_shape) != 2:
        raise ValueError(f"matmul needs 2-D arrays, got {a_shape}, {b_shape} -> {out_shape}")
    M, K = (a_shape[1], a_shape[0]) if trans_a else a_shape
    K2, N = (b_shape[1], b_shape[0]) if trans_b else b_shape
    if K != K2 or tuple(out_shape) != (M, N):
        raise ValueError(f"matmul shapes do not agree: op(a) {(M, K)} @ op(b) {(K2, N)} -> "
                         f"out {tuple(out_shape)}")
    return (int(bool(trans_b)), int(bool(trans_a)), N, M, K,
            max(1, b_shape[1]), max(1, a_shape[1]), max(1, N))


class CupyDevice:
    """One GPU: CuPy, the compiled kernel modules, the partial-sum scratch and cuBLAS
    handles (one per thread: a handle carries a stream and a math mode).  One instance per
    GPU (:func:`device` returns the current GPU's); it is made while its GPU is current.

    ``cupy`` and ``cublas`` default to CuPy and its cuBLAS binding; the tests pass a
    CuPy-shaped emulator instead, so that this class runs unchanged without a GPU.
    """

    def __init__(self, cupy=None, cublas=None):
        if cupy is None:
            import cupy
        if cublas is None:
            from cupy_backends.cuda.libs import cublas

        self.xp = cupy
        self.cublas = cublas  # the cuBLAS binding (CuPy's, or the tests' emulator)
        self._dir = kernel_dir()
        self._sigs = kernel_signatures(self._dir)
        self._modules = {}
        self._kernels = {}
        dev = cupy.cuda.Device()
        self.id = int(dev.id)
        self.sm_count = int(dev.attributes["MultiProcessorCount"])
        #: "80" for sm_80 (bf16 products need 80 or more)
        self.compute_capability = str(dev.compute_capability)
        self._local = threading.local()  # this thread's cuBLAS handle, stream, math mode
        self.scratch = {}  # dtype -> the partial-sum buffer of this GPU (see _partials)
        self._unit = None  # see unit()
        self._one = {np.dtype(t): np.ones(1, t) for t in (np.float32, np.float64)}
        self._zero = {np.dtype(t): np.zeros(1, t) for t in (np.float32, np.float64)}
        self._gemm = {np.dtype(np.float32): cublas.sgemm, np.dtype(np.float64): cublas.dgemm}

    def kernel(self, name):
        k = self._kernels.get(name)
        if k is None:
            try:
                fname = self._sigs[name][0]
            except KeyError:
                raise KeyError(f"no CUDA kernel named {name!r} in {self._dir}") from None
            mod = self._modules.get(fname)
            if mod is None:
                src = (self._dir / fname).read_text()
                mod = self.xp.RawModule(code=src, options=compile_options(self._dir))
                self._modules[fname] = mod
            k = self._kernels[name] = mod.get_function(name)
        return k

    def launch(self, name, grid, block, args):
        self.kernel(name)(grid, block, args)

    @staticmethod
    def ptr(a):
        return a.data.ptr

    def _blas(self):
        """This thread's cuBLAS state on this GPU, the handle made on first use."""
        st = self._local
        if getattr(st, "handle", None) is None:
            with self.xp.cuda.Device(self.id):  # a handle belongs to the GPU it is made on
                st.handle = self.cublas.create()
                self.cublas.setPointerMode(st.handle, 0)  # CUBLAS_POINTER_MODE_HOST
            st.stream, st.math_mode = None, None
        return st

    def gemm(self, dtype, transa, transb, m, n, k, A, lda, B, ldb, C, ldc, tf32):
        cb, st = self.cublas, self._blas()
        stream = self.xp.cuda.get_current_stream().ptr
        if stream != st.stream:
            cb.setStream(st.handle, stream)
            st.stream = stream
        mode = 3 if tf32 else 0  # CUBLAS_TF32_TENSOR_OP_MATH / CUBLAS_DEFAULT_MATH
        if mode != st.math_mode:
            cb.setMathMode(st.handle, mode)
            st.math_mode = mode
        self._gemm[dtype](st.handle, transa, transb, m, n, k, self._one[dtype].ctypes.data,
                          A.data.ptr, lda, B.data.ptr, ldb, self._zero[dtype].ctypes.data,
                          C.data.ptr, ldc)

    def gemm_bf16(self, transa, transb, m, n, k, A, lda, B, ldb, C, ldc):
        """C (float32) = op(A) op(B) for bf16 A, B (column-major, as :meth:`gemm`): cuBLAS's
        GemmEx with float32 compute, tensor cores where the GPU has them."""
        cb, st = self.cublas, self._blas()
        stream = self.xp.cuda.get_current_stream().ptr
        if stream != st.stream:
            cb.setStream(st.handle, stream)
            st.stream = stream
        f32 = np.dtype(np.float32)
        cb.gemmEx(st.handle, transa, transb, m, n, k, self._one[f32].ctypes.data, A.data.ptr,
                  CUDA_R_16BF, lda, B.data.ptr, CUDA_R_16BF, ldb, self._zero[f32].ctypes.data,
                  C.data.ptr, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)

    def to_numpy(self, a):
        return self.xp.asnumpy(a) if isinstance(a, self.xp.ndarray) else np.asarray(a)

    def unit(self):
        """A device array holding 1.0 (float64) on this GPU, made once: the scale that an
        update multiplies by when it was given a plain number (see _scale_args)."""
        if self._unit is None:
            self._unit = self.xp.ones(1, dtype=np.float64)
        return self._unit
