"""The cuda backend's device and what every launcher module shares: the current GPU's
:class:`~fastvae.backends.cuda_device.CupyDevice` (made on first use; tests install an
emulated one), the reusable scratch for partial sums, the scalar arguments of a launch's
precision, and the fixed-order sum of partial rows (``sum_partials``, dense.cu)."""
from __future__ import annotations

import threading
import weakref

import numpy as np

from ..cuda_device import BLOCK_1D, CupyDevice, grid_1d, kernel_name
from ..reference_bf16 import check_half

_devices = {}        # GPU id -> its CupyDevice
_modules = None      # (cupy, cublas) the devices are made with: CuPy's, or the tests'
_lock = threading.Lock()


def device():
    """The :class:`CupyDevice` of CuPy's current GPU (made on first use).  Every launcher
    works on the current GPU: a model on ``backend="cuda:1"`` makes GPU 1 current around
    its passes (:meth:`fastvae.VAE.on_device`)."""
    global _modules
    if _modules is None:
        import cupy
        from cupy_backends.cuda.libs import cublas
        _modules = (cupy, cublas)
    cp, blas = _modules
    i = int(cp.cuda.Device().id)
    dev = _devices.get(i)
    if dev is None:
        with _lock:
            dev = _devices.get(i) or _devices.setdefault(i, CupyDevice(cp, blas))
    return dev


def install(dev):
    """Install ``dev`` (a CupyDevice over an emulated CuPy, in the tests) as its GPU's
    device; other GPU ids get devices made from the same modules.  None resets to CuPy."""
    global _modules
    _devices.clear()
    if dev is not None:
        _modules = (dev.xp, dev.cublas)
        _devices[dev.id] = dev
    else:
        _modules = None


def forget_devices():
    """Drop the devices made so far (the next launch makes its GPU's again, from the same
    modules), as in a fresh process."""
    _devices.clear()


def partials(dtype, *sizes):
    """Views of the current GPU's reusable buffer for the partial sums of a launch (grown
    when a larger launch needs more; a steady-state step allocates nothing).  The partials
    are written and consumed within one launcher, on one stream, so models on the same GPU
    share the buffer safely."""
    dtype = np.dtype(dtype)
    need = sum(sizes)
    dev = device()
    buf = dev.scratch.get(dtype)
    if buf is None or buf.size < need:
        buf = dev.scratch[dtype] = dev.xp.empty(max(need, 1024), dtype=dtype)
    out, off = [], 0
    for s in sizes:
        out.append(buf[off:off + s])
        off += s
    return out


#: device -> the one-element uint16 array that stands for "no bf16 output" on it
_NO_HALF = weakref.WeakKeyDictionary()


def half_arg(name, half, like):
    """(array, flag) for kernel ``name``'s optional bf16 output, the bits of its output
    ``like``: ``half`` (checked) and 1, or, without one, a one-element uint16 array of the
    device's (made once) that the kernel does not touch, and 0 (a launch passes arrays, not
    null pointers)."""
    if half is not None:
        check_half(name, half, like)
        return half, np.int32(1)
    dev = device()
    none = _NO_HALF.get(dev)
    if none is None:
        none = _NO_HALF[dev] = dev.xp.zeros(1, np.uint16)
    return none, np.int32(0)


def scalar(dtype, v):
    """A scalar kernel argument of the arrays' precision."""
    return np.dtype(dtype).type(v)


def finish(dev, out, part, n_parts, n, scale):
    """out (n,) = scale * sum of the n_parts partial rows of ``part``."""
    name = kernel_name("sum_partials", out.dtype)
    dev.launch(name, (grid_1d(n, dev.sm_count),), (BLOCK_1D,),
               (out, part, np.int32(n_parts), np.int32(n), scalar(out.dtype, scale)))

