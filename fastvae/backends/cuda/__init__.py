"""CUDA kernels through CuPy: the same names, argument order and contracts as ``reference.py``.

- The fused kernels are CUDA C in ``kernels/*.cu`` (shipped in the wheel as
  ``fastvae/kernels``).  Each file is compiled once per process with ``cupy.RawModule``
  the first time one of its kernels runs (CuPy also caches the binary on disk), and every
  kernel exists as ``<name>_f32`` and ``<name>_f64``.
- Matrix products go to cuBLAS through our own handle, with transpose flags and no copies
  (:func:`gemm_args`).  TF32 tensor cores are used only after ``fastvae.backends.set_tf32(True)``
  or with ``FASTVAE_TF32=1``: off by default, so float32 results match the CPU backends.
- Kernels that reduce over rows split the rows into chunks so that the GPU is full at any
  batch size, write one partial row per chunk, and ``sum_partials`` adds the partials in a
  fixed order: results are deterministic, so training resumes to the bit on the GPU too.
- Nothing here waits for the GPU except the functions that return a Python number
  (``check_data``, ``sq_norm``): a training step queues its kernels and returns.

The device itself (CuPy, the compiled modules, the cuBLAS handle) sits behind a small
object, :class:`CupyDevice`; tests install an emulated device with the same methods, which
runs the same ``.cu`` files on the CPU, so the launch logic here is exercised without a GPU.

One launcher module per ``.cu`` file, as ``cpu/`` has one kernel module per file:
``dense`` (and the cuBLAS products), ``reparam``, ``likelihood``, ``optim``, ``data``,
``blocks`` and ``bf16``; ``launch`` holds the device and the helpers they share.  This
package is the backend's one namespace: every launcher, and the device layer's names.
"""
from __future__ import annotations

# (the device layer's public names are the backend's too: cuda.tile_plan, cuda.CupyDevice, ...)
from ..cuda_device import (BLOCK_1D, DTYPE_SUFFIX, MIN_CHUNK_ROWS, WAVES_1D,  # noqa: F401
                           WAVES_TILE, CupyDevice, compile_options, gemm_args, grid_1d,
                           kernel_dir, kernel_name, kernel_signatures, tile_plan)
from ..codes import TILE_H, TILE_W  # noqa: F401  (the tile: cuda.TILE_W)
from . import launch
from .launch import device, forget_devices  # noqa: F401
# the launchers, one module per kernels/*.cu file
from .dense import matmul, bias_act_fwd, act_bias_bwd  # noqa: F401
from .bf16 import to_bf16, matmul_bf16, matmul_f32_beside_bf16, bf16_support  # noqa: F401
from .reparam import (reparam_kl_fwd, reparam_kl_bwd, iwae_fwd, reparam_iw_bwd,  # noqa: F401
                      normal_eps)
from .likelihood import (likelihood_fwd_bwd, likelihood_fwd, likelihood_bwd,  # noqa: F401
                         logscale_fwd, logscale_bwd, loss_stats)
from .optim import sq_norm, clip_scale, adam_step, sgd_step, average_step  # noqa: F401
from .data import check_data, check_data_into, gather_rows  # noqa: F401
from .blocks import (blocks_fwd_bwd, blocks_fwd, blocks_bwd, encoder_input,  # noqa: F401
                     embed_fwd, embed_bwd, decoder_input)

NAME = "cuda"
DEVICE = True


def use_device(dev):
    """Install ``dev`` (a CupyDevice over an emulated CuPy, in the tests) as its GPU's
    device; other GPU ids get devices made from the same modules.  None resets to CuPy."""
    launch.install(dev)
    if dev is not None:
        globals()["xp"] = dev.xp
    else:
        globals().pop("xp", None)  # the next access creates the real device again
    return dev


def __getattr__(name):  # ``xp`` resolves to CuPy on first access (PEP 562)
    if name == "xp":
        value = globals()["xp"] = device().xp
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def asarray(a, dtype=None):
    """Bring ``a`` to the device (one copy for host arrays; none for device arrays)."""
    return device().xp.asarray(a, dtype=dtype)


def to_numpy(a):
    """A host (NumPy) copy of a device array; host arrays pass through."""
    return device().to_numpy(a)


def copy_from_host(dst, src):
    """dst (a device array) <- src (a NumPy array of the same shape and dtype), into dst's
    memory: no device allocation (a batch staged for the GPU)."""
    dst.set(src)
