"""The one place that says how closely numbers computed in two different ways must agree.

Exact equality (``assert_array_equal``, ``==``, bytes, hashes) is used in tests only where
the code guarantees it: the same backend on the same machine, making the same BLAS calls
(same shapes, same thread count) on the same inputs -- a resumed run against a straight one,
a pickled copy against its original, a row's noise however the batch is split (counter-based,
no arithmetic that depends on the split), copies of data.

Everywhere else -- numpy against cpu against cuda, one thread count against another, one
batch split against another (a BLAS call of another shape) -- results may differ by a few
ulp, and differently on each CPU: OpenBLAS picks its GEMM kernel per CPU type
(Haswell, SkylakeX, Zen, ...: ``OPENBLAS_CORETYPE`` forces one), NumPy's and Numba's
vectorised exp/log and the LLVM code Numba generates depend on the vector width of the CPU
(``NUMBA_CPU_NAME``), and cuBLAS sums in yet another order.  (CI went red on a Xeon with AMX
when a cpu-backend encode was compared with a numpy-backend encode bit for bit: 8 of 120
float32 entries one ulp apart.)  Such comparisons use :func:`assert_close` with the
tolerance below for their dtype:

- float64: rtol 1e-12.  A few ulp (2.2e-16 each) of the inputs, grown by the condition of a
  short dot product or a layer or two of a small network: orders of magnitude below 1e-12,
  while any real mistake in a formula shows at the size of the value itself.
- float32: rtol 1e-5.  float32's ulp is 1.2e-7; sums of a few hundred products in another
  order and Numba's polynomial exp/expm1/log1p (within 4 ulp, tests/test_kernels.py) stay
  within about 1e-6 relative through a small network; 1e-5 leaves a factor of ten.

The absolute floor is the same fraction of the largest magnitude in the expected array
(``atol = rtol * max|want|``): an entry near zero is the cancellation of terms summed in a
different order, so only its error relative to the array's scale means anything.
"""
from __future__ import annotations

import numpy as np

#: relative tolerance across backends, thread counts and batch splits, per dtype
RTOL = {"float64": 1e-12, "float32": 1e-5}


def rtol(dtype):
    return RTOL[np.dtype(dtype).name]


def assert_close(got, want, dtype=None, err_msg=""):
    """got == want to the cross-backend tolerance of ``dtype`` (default: want's dtype):
    |got - want| <= rtol * (|want| + max |want|)."""
    got = np.asarray(got.get() if hasattr(got, "get") else got)
    want = np.asarray(want.get() if hasattr(want, "get") else want)
    r = rtol(dtype or want.dtype)
    scale = float(np.abs(want).max()) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=r, atol=r * scale, err_msg=err_msg)
