"""Numba kernels: the same names, argument order and contracts as ``reference.py``.

Design choices, each measured on the 2-core development machine:

- Matrix products go to NumPy's BLAS (transposes are views passed as flags).
- Each kernel is written serial; ``split.py`` runs the big ones on row (or parameter)
  ranges over a fixed pool of threads that sleep between jobs (``pool.py``: why not Numba's
  ``parallel=True``, and why the bits never depend on the thread count).  A Numba parallel
  region between two GEMMs fought OpenBLAS's spinning threads (a 0.36 ms GEMM + bias step
  became 7.8 ms); kernels too small to pay for a hand-off stay on the calling thread.
- Each kernel is one pass over memory; inner loops run over contiguous columns so LLVM
  vectorises them (AVX-512 here), helped by the fast-math flags in ``nbmath.FASTMATH``.
- Scalars are cast to the array dtype first so float32 kernels stay in float32.
- Kernels never allocate: every output is passed in (split.py's partial sums aside).
"""
from __future__ import annotations

import numpy as np

from .. import reference as _ref
# the serial kernels; the ones with enough work to share out come from split.py below
from .reparam import (reparam_kl_fwd, reparam_kl_bwd, iwae_fwd, reparam_iw_bwd,  # noqa: F401
                      philox4x32_10)
from .likelihood import likelihood_bwd, logscale_fwd, logscale_bwd, loss_stats  # noqa: F401
from .optim import sq_norm, clip_scale  # noqa: F401
from .blocks import blocks_bwd, embed_fwd, embed_bwd, decoder_input  # noqa: F401
from .bf16 import matmul_bf16, matmul_f32_beside_bf16, bf16_support  # noqa: F401
from .data import scatter_rows, binarize_rows, gather_rows  # noqa: F401
# run on every core (split.py; the same contracts)
from .split import (bias_act_fwd, act_bias_bwd, likelihood_fwd, likelihood_fwd_bwd,  # noqa: F401
                    blocks_fwd, blocks_fwd_bwd, encoder_input, normal_eps, adam_step,
                    sgd_step, average_step, check_data, to_bf16)
from .pool import get_num_threads, set_num_threads  # noqa: F401
# the thread pool and thread limits a sharded step (fastvae.training.shards) runs under
from . import blas_threads, onednn, pool  # noqa: F401,E402

get_num_threads()  # a bad FASTVAE_NUM_THREADS fails here, when a model is built, not mid-step

NAME = "cpu"
xp = np
DEVICE = False

asarray = _ref.asarray
to_numpy = _ref.to_numpy
matmul = _ref.matmul  # BLAS through NumPy: the same call is already the fast path
