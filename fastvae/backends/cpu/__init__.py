"""Numba kernels: the same names, argument order and contracts as ``reference.py``.

Design choices, each measured on the 2-core development machine:

- Matrix products go to NumPy's BLAS (transposes are views passed as flags).
- The kernels here are **serial**.  BLAS already owns both cores; a Numba ``parallel=True``
  region between two GEMMs fought OpenBLAS's spinning threads and turned a 0.36 ms
  GEMM + bias step into 7.8 ms (OpenMP layer), or cost 70-100 us per wake-up with passive
  waiting.  Serial fused loops over cache-resident data cost a few microseconds instead.
- Each kernel is one pass over memory; inner loops run over contiguous columns so LLVM
  vectorises them (AVX-512 here), helped by the fast-math flags in ``nbmath.FASTMATH``.
- Scalars are cast to the array dtype first so float32 kernels stay in float32.
- Kernels never allocate: every output is passed in.
"""
from __future__ import annotations

import numpy as np

from .. import reference as _ref
from .dense import bias_act_fwd, act_bias_bwd  # noqa: F401
from .reparam import (reparam_kl_fwd, reparam_kl_bwd, iwae_fwd, reparam_iw_bwd, philox4x32_10,
                      normal_eps)  # noqa: F401
from .likelihood import (likelihood_fwd, likelihood_fwd_bwd, likelihood_bwd, logscale_fwd,
                         logscale_bwd, loss_stats)  # noqa: F401
from .optim import sq_norm, clip_scale, adam_step, sgd_step  # noqa: F401
from .blocks import (blocks_fwd, blocks_fwd_bwd, blocks_bwd, encoder_input, embed_fwd,
                     embed_bwd, decoder_input)  # noqa: F401
from .bf16 import to_bf16, matmul_bf16, bf16_support  # noqa: F401
from .data import scatter_rows, binarize_rows, gather_rows, check_data  # noqa: F401

NAME = "cpu"
xp = np
DEVICE = False

asarray = _ref.asarray
to_numpy = _ref.to_numpy
matmul = _ref.matmul  # BLAS through NumPy: the same call is already the fast path
